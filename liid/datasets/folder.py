"""A plain folder of images: ids and sizes only, no image labels, no ground truth (enough for proposals)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from liid.datasets.base import Dataset, ImageInfo, contained, image_size, listing
from liid.errors import LiidError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (no recursion), sorted by name."""
    with os.scandir(folder) as it:
        names = [e.name for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS]
    return [folder / n for n in sorted(names)]


class ImageFolderDataset(Dataset):
    """Every jpg/jpeg/png/bmp file of one folder, sorted by name; the id is the file stem."""

    kind = "images"
    has_labels = False

    def __init__(self, folder: str | os.PathLike) -> None:
        self.source = Path(folder)
        if not self.source.is_dir():
            raise LiidError(f"{self.source}: image folder not found")
        files = image_files(self.source)
        if not files:
            raise LiidError(f"{self.source}: no image files ({', '.join(IMAGE_EXTS)}) in this folder")
        seen: dict[str, Path] = {}
        for f in files:
            if f.stem in seen:
                raise LiidError(f"{self.source}: two images with id {f.stem!r} ({seen[f.stem].name}, {f.name})")
            seen[f.stem] = f
        lst = listing(self.source)
        for f in files:  # an entry that is a symlink must lead to a file inside the folder
            contained(lst, f.name, f"{self.source}: image {f.stem!r}")
        self.classes = ["background"]
        self.images = [ImageInfo(f.stem, f, *image_size(f), coco_id=i + 1) for i, f in enumerate(files)]

    def labels(self, image_id: str) -> np.ndarray:
        raise LiidError(f"{self.source}: an image folder has no image labels; use a VOC root or a COCO JSON")
