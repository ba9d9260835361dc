"""Open a dataset from one path, or from a name registered in code (a small detectron2-style catalog).

``open_dataset`` picks the reader from what the path is: a folder holding ``JPEGImages`` → VOC, a ``.json``
file → COCO, a folder of image files → image folder. ``register_dataset(name, factory)`` maps a name to a
function that builds the Dataset when it is opened (so registering costs nothing).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from liid.datasets.base import Dataset
from liid.datasets.coco import CocoDataset
from liid.datasets.folder import ImageFolderDataset, image_files
from liid.datasets.voc import VocDataset
from liid.errors import LiidError

EXPECTED = "expected a VOC root (a folder holding JPEGImages), a COCO instances .json, or a folder of images"

_FACTORIES: dict[str, Callable[[], Dataset]] = {}


def register_dataset(name: str, factory: Callable[[], Dataset]) -> None:
    """Make ``open_dataset(name)`` return ``factory()``; a name can be registered once."""
    if not isinstance(name, str) or not name:
        raise LiidError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise LiidError(f"dataset {name!r}: the factory is not callable")
    if name in _FACTORIES:
        raise LiidError(f"dataset {name!r} is already registered")
    _FACTORIES[name] = factory


def unregister_dataset(name: str) -> None:
    """Forget a registered name (no error when it is not registered)."""
    _FACTORIES.pop(name, None)


def registered_datasets() -> list[str]:
    """The registered names, sorted."""
    return sorted(_FACTORIES)


def _open_registered(name: str, split: str | None, images: str | os.PathLike | None) -> Dataset:
    if split is not None or images is not None:
        raise LiidError(f"dataset {name!r} is registered; it takes no split or images folder")
    ds = _FACTORIES[name]()
    if not isinstance(ds, Dataset):
        raise LiidError(f"dataset {name!r}: the factory returned a {type(ds).__name__}, not a Dataset")
    return ds


def open_dataset(path: str | os.PathLike, split: str | os.PathLike | None = None,
                 images: str | os.PathLike | None = None) -> Dataset:
    """The Dataset at ``path`` (or registered under that name; a registered name wins over a path).

    ``split`` applies to VOC roots only (see ``VocDataset``), ``images`` to COCO JSONs only.
    """
    if isinstance(path, str) and path in _FACTORIES:
        return _open_registered(path, split, images)
    p = Path(path)
    if p.is_dir() and (p / "JPEGImages").is_dir():
        kind = "voc"
    elif p.is_file() and p.suffix.lower() == ".json":
        kind = "coco"
    elif p.is_dir() and image_files(p):
        kind = "images"
    elif not p.exists():
        raise LiidError(f"{p}: not found; {EXPECTED}")
    else:
        raise LiidError(f"{p}: not a dataset; {EXPECTED}")
    if split is not None and kind != "voc":
        raise LiidError(f"{p}: a split applies to VOC roots only")
    if images is not None and kind != "coco":
        raise LiidError(f"{p}: an images folder applies to COCO JSONs only")
    if kind == "voc":
        return VocDataset(p, split)
    if kind == "coco":
        return CocoDataset(p, images)
    return ImageFolderDataset(p)
