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
from PIL import Image, ImageFile, ImageOps

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
ORIENTATION = 0x0112  # the EXIF Orientation tag; values 5..8 swap width and height


# ------------------------------------------------------------------------------------- per-item paths


@dataclass(frozen=True)
class Listing:
    """One directory read of a folder: each entry name → whether it is a symlink, and the resolved folder.

    Lets ``contained`` and existence checks cost no system call for plain entries (a COCO split lists
    100k+ images); only symlinks are resolved one by one.
    """

    folder: Path
    root: Path  # folder.resolve(): the folder itself may be a symlink (datasets/coco -> /data/coco)
    links: dict[str, bool]

    def __contains__(self, name: object) -> bool:
        return name in self.links


def listing(folder: Path) -> Listing:
    """The ``Listing`` of ``folder``; no entries when it is not a folder."""
    links: dict[str, bool] = {}
    if folder.is_dir():
        with os.scandir(folder) as it:
            links = {e.name: e.is_symlink() for e in it}
    return Listing(folder, folder.resolve(), links)


def contained(folder: Path | Listing, relative: str | os.PathLike, where: str) -> Path:
    """``folder / relative``, checked to lie strictly inside ``folder`` once resolved; else a LiidError
    ``<where>: <relative> leads outside <folder>``.

    The one rule for every path an annotation file or list names (COCO ``file_name``, VOC ids, image-folder
    entries, per-image PNG folders): an absolute name, a ``..`` or a symlink that leads out would make a
    stage read, and name its outputs after, files that are not the dataset's. The folder itself may be a
    symlink: only the per-item part must stay inside the resolved folder.
    """
    lst = folder if isinstance(folder, Listing) else None
    base = lst.folder if lst is not None else Path(folder)
    rel = os.fspath(relative)
    path = base / rel
    if lst is not None and lst.links.get(rel) is False:
        return path  # a plain entry of the folder (a scandir name, no symlink): inside by construction
    root = lst.root if lst is not None else base.resolve()
    try:
        target = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        target = None
    if target is None or root not in target.parents:
        raise LiidError(f"{where}: {rel!r} leads outside {base}")
    return path


def check_image_files(folder: Path, dataset: Dataset, what: str, suffix: str = ".png") -> None:
    """Every image of ``dataset`` has ``folder/<image id><suffix>`` (prediction PNGs, pseudo-masks, saliency
    maps), inside ``folder`` (see ``contained``); else one LiidError naming the folder, how many are missing
    and the first few image ids."""
    lst = listing(folder)
    missing = [im.id for im in dataset.images if f"{im.id}{suffix}" not in lst]
    if missing:
        shown = ", ".join(repr(i) for i in missing[:LISTED]) + (", ..." if len(missing) > LISTED else "")
        raise LiidError(f"{folder}: no {what} for {len(missing)} of the {len(dataset.images)} dataset images "
                        f"({shown})")
    for im in dataset.images:
        contained(lst, f"{im.id}{suffix}", f"{folder}: the {what} of image {im.id!r}")


# ----------------------------------------------------------------------------------------- image decoding


def decoded(file: Path, what: str = "image", orient: bool = True) -> Image.Image:
    """The first frame of an image file, pixels loaded and the file closed: the one place files are decoded.

    ``orient``: EXIF orientation applied (``ImageOps.exif_transpose``, as detectron2's ``read_image`` does),
    else an orientation other than 1 is a LiidError (label maps: their indices must not move). Missing,
    unreadable and truncated files are a LiidError naming the file; ``what`` names its role.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(file) as im:
            im.load()
            if orient:
                return ImageOps.exif_transpose(im)  # a new image (a copy when there is nothing to do)
            orientation = im.getexif().get(ORIENTATION, 1)
            if orientation != 1:
                raise LiidError(f"{file}: {what} has EXIF orientation {orientation}; a label map must be stored "
                                f"upright (orientation 1)")
            return im.copy()
    except FileNotFoundError:
        raise LiidError(f"{file}: {what} file not found") from None
    except LiidError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise LiidError(f"{file}: unreadable {what} ({e})") from None


def image_size(file: Path) -> tuple[int, int]:
    """(height, width) of the image as ``read_rgb`` returns it (EXIF orientation applied), from the header
    without decoding pixels; a LiidError naming the file."""
    try:
        with Image.open(file) as im:
            width, height = im.size
            # A PNG's EXIF is known from its header only when the eXIf chunk precedes the pixels; asking for it
            # otherwise decodes the whole image, so such a (rare) PNG counts as upright here.
            exif = im.getexif() if im.format != "PNG" or "exif" in im.info else {}
            if exif.get(ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
    except FileNotFoundError:
        raise LiidError(f"{file}: image file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise LiidError(f"{file}: unreadable image ({e})") from None
    return int(height), int(width)


# Modes PIL's own convert("RGB") maps faithfully: grey replicated ('1' → 0/255), palettes looked up, CMYK by
# (255 - C)(255 - K) / 255, YCbCr by the JPEG matrix; alpha and padding channels dropped.
_VIA_PIL = ("RGB", "RGBX", "RGBA", "L", "LA", "1", "P", "PA", "CMYK", "YCbCr")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(im: Image.Image, file: Path, what: str = "image") -> np.ndarray:
    """A decoded PIL image as uint8 RGB [H, W, 3], never silently changing its data.

    * Alpha (RGBA, LA, PA, palettes with transparency) is dropped, not composited: the stored colours are
      what detectron2's ``read_image`` and torchvision's ``decode_image(mode=RGB)`` hand a model, and
      compositing would invent a background the annotations never saw. A palette with transparency goes
      through RGBA (PIL warns on a direct RGB conversion); its colours are the palette's either way.
    * 16-bit grey (``I;16*``, and ``I`` holding 0..65535, how Pillow hands some 16-bit files) is scaled by
      its range, ``v >> 8`` (0xABCD → 0xAB), which is torchvision's ``to_dtype(uint8, scale=True)``; PIL's
      convert("RGB") would clip it (nearly every pixel 255). Grey replicated to 3 channels.
    * float grey ``F`` in [0, 1] (torchvision's float convention) becomes ``round(v * 255)``.
    * Anything else (an ``I`` or ``F`` image out of those ranges, LAB, HSV, premultiplied alpha) is a
      LiidError naming the file and mode: there is no range to scale it by without guessing.
    """
    mode = im.mode
    if mode in _VIA_PIL:
        if mode == "PA" or (mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
        return np.asarray(im.convert("RGB"))
    arr = np.asarray(im)
    if mode in _SIXTEEN_BIT or (mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 0xFFFF):
        grey = (arr.astype(np.uint32) >> 8).astype(np.uint8)
    elif mode == "F" and arr.size and np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0:
        grey = np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    elif mode in ("I", "F"):
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        kind = "32-bit integer" if mode == "I" else "float"
        raise LiidError(f"{file}: {what} is {kind} grey (mode {mode}) with values {lo:g}..{hi:g}, outside "
                        f"{'0..65535' if mode == 'I' else '0..1'}; convert it to 8-bit RGB first")
    else:
        raise LiidError(f"{file}: {what} has colour mode {mode}, which is not read; convert it to RGB first")
    return np.repeat(grey[:, :, None], 3, axis=2)


def read_rgb(file: Path, height: int | None = None, width: int | None = None, what: str = "image") -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (``to_rgb``), EXIF orientation applied as detectron2 does; a
    clear error naming the file when it is missing, unreadable, truncated, or, once oriented, not the
    recorded size (the dataset's height and width, when given)."""
    im = decoded(file, what)
    arr = to_rgb(im, file, what)
    if height is not None and width is not None and arr.shape[:2] != (height, width):
        raise LiidError(f"{file}: {what} is {arr.shape[0]}x{arr.shape[1]} (HxW, after EXIF orientation), the "
                        f"dataset says {height}x{width}")
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
        """uint8 RGB [H, W, 3] (``read_rgb``: EXIF orientation applied, checked against the recorded size)."""
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
