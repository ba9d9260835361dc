"""The one dataset interface every stage uses: image ids, image loading, image labels, optional ground truth.

A dataset is opened from one path (``liid.datasets.open_dataset``): a VOC root (the folder holding
``JPEGImages``), a COCO instances JSON, or a plain folder of images (no labels, no ground truth: enough for
proposals). Classes are a list of names with ``"background"`` at index 0; class ``k`` of an image label or a
ground-truth instance is an index into that list (1..K).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from liid.errors import LiidError

IGNORE = 255  # semantic ground truth: pixels that count for no class (VOC boundaries, COCO crowd)


@dataclass(frozen=True)
class ImageInfo:
    """One image of a dataset. ``id`` is file-name safe and unique within the dataset."""

    id: str
    file: Path
    height: int
    width: int
    coco_id: int  # the COCO image id (COCO datasets), else the 1-based position in the dataset


@dataclass
class Instances:
    """Ground-truth instances of one image; row ``n`` of each field is instance ``n``."""

    masks: np.ndarray  # bool [n, H, W]
    classes: np.ndarray  # int64 [n], 1..K
    iscrowd: np.ndarray  # bool [n]; crowd regions are ignored by evaluation, as COCO does

    def __len__(self) -> int:
        return int(self.classes.shape[0])


LISTED = 5  # how many missing items an error message names


def check_image_files(folder: Path, dataset: Dataset, what: str, suffix: str = ".png") -> None:
    """Every image of ``dataset`` has ``folder/<image id><suffix>`` (prediction PNGs, pseudo-masks, saliency
    maps); else one LiidError naming the folder, how many are missing and the first few image ids."""
    names = set(os.listdir(folder))
    missing = [im.id for im in dataset.images if f"{im.id}{suffix}" not in names]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:LISTED]) + (", ..." if len(missing) > LISTED else "")
        raise LiidError(f"{folder}: no {what} for {len(missing)} of the {len(dataset.images)} dataset images "
                        f"({shown})")


def read_rgb(file: Path, height: int | None = None, width: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]; a clear error naming the file when it is missing, unreadable,
    truncated, or not the recorded size. No EXIF rotation (COCO's sizes are those of the stored pixels)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(file) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise LiidError(f"{file}: image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise LiidError(f"{file}: unreadable image ({e})") from None
    if height is not None and width is not None and arr.shape[:2] != (height, width):
        raise LiidError(f"{file}: image is {arr.shape[0]}x{arr.shape[1]}, the dataset says {height}x{width}")
    return arr


class Dataset(ABC):
    """Base of the VOC, COCO and image-folder readers. Subclasses set the attributes in ``__init__``."""

    kind: str  # "voc" | "coco" | "images"
    source: Path  # what the user named: VOC root, COCO JSON, or image folder
    classes: list[str]  # index 0 is "background"
    images: list[ImageInfo]
    has_labels: bool = True
    has_instances: bool = False
    has_semantic: bool = False

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.classes) - 1

    def info(self, image_id: str) -> ImageInfo:
        if not hasattr(self, "_by_id"):
            self._by_id = {im.id: im for im in self.images}
        try:
            return self._by_id[image_id]
        except KeyError:
            raise LiidError(f"{self.source}: no image {image_id!r} in this dataset") from None

    def load_image(self, image_id: str) -> np.ndarray:
        """uint8 RGB [H, W, 3]."""
        im = self.info(image_id)
        return read_rgb(im.file, im.height, im.width)

    @abstractmethod
    def labels(self, image_id: str) -> np.ndarray:
        """Sorted foreground class indices (1..K) present in the image; int64 [m]."""

    def label_vector(self, image_id: str) -> np.ndarray:
        """float32 [K+1]: 1 for the image's classes, background (index 0) always 1."""
        v = np.zeros(len(self.classes), dtype=np.float32)
        v[0] = 1.0
        v[self.labels(image_id)] = 1.0
        return v

    def instances(self, image_id: str) -> Instances | None:
        """Ground-truth instances, or None where the dataset has none for this image."""
        return None

    def semantic(self, image_id: str) -> np.ndarray | None:
        """Ground-truth class per pixel, uint8 [H, W], 255 = ignore; None where there is none."""
        return None

    def describe(self) -> dict:
        """What identifies this dataset in a stage's recorded inputs."""
        return {"kind": self.kind, "source": str(self.source), "images": len(self.images),
                "classes": len(self.classes)}
