"""A COCO instances JSON: categories become classes 1..K (ordered by category id), annotations ground truth.

The JSON is validated and its annotations indexed by image once, at open; masks are decoded per image with
``pycocotools.mask`` (what ``COCO.annToMask`` does, without the ``COCO`` class and its prints).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from liid.atomic import read_json
from liid.datasets.base import IGNORE, Dataset, ImageInfo, Instances, contained, listing
from liid.errors import LiidError


def _list(data: dict, key: str, file: Path) -> list:
    """``data[key]`` as a list, else a LiidError naming file and key."""
    if not isinstance(data.get(key), list):
        raise LiidError(f"{file}: not a COCO instances JSON (no {key!r} list)")
    return data[key]


def _field(obj: object, key: str, kind: type | tuple, file: Path, what: str):
    """``obj[key]`` of the given type, else a LiidError naming file, entry and key."""
    v = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(v, kind) or isinstance(v, bool):
        raise LiidError(f"{file}: {what} has no valid {key!r}")
    return v


def images_dir_candidates(json_path: Path) -> list[Path]:
    """Where the images of a COCO JSON may lie, in order: the split folder named by the JSON
    (``instances_val2017.json`` → ``val2017``) next to the annotations folder or the JSON, then ``JPEGImages``
    of a VOC-layout root (next to the annotations folder or the JSON)."""
    stem = json_path.stem
    split = stem.split("_", 1)[1] if "_" in stem else stem
    parent, grand = json_path.parent, json_path.parent.parent
    return [grand / split, parent / split, grand / "JPEGImages", parent / "JPEGImages"]


def decode_segmentation(seg: object, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as a bool mask [H, W]."""
    if isinstance(seg, list):
        if not seg:
            return np.zeros((height, width), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_util.frPyObjects(seg, height, width)
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), (str, bytes)):
        rle = seg
    else:
        raise ValueError("not polygons or an RLE")
    if list(rle["size"]) != [height, width]:
        raise ValueError(f"RLE size {list(rle['size'])} is not the image size {[height, width]}")
    return mask_util.decode(rle).astype(bool)


class CocoDataset(Dataset):
    """A COCO instances JSON; ``images`` is the image folder (found from the JSON's location when None)."""

    kind = "coco"
    has_instances = True
    has_semantic = True

    def __init__(self, json_path: str | os.PathLike, images: str | os.PathLike | None = None) -> None:
        self.source = Path(json_path)
        data = read_json(self.source)
        if not isinstance(data, dict):
            raise LiidError(f"{self.source}: not a COCO instances JSON (top level is a {type(data).__name__})")
        cat_index = self._read_categories(_list(data, "categories", self.source))
        self.images_dir = self._find_images_dir(images)
        self.images = self._read_images(_list(data, "images", self.source))
        self._anns: dict[str, list[dict]] = {im.id: [] for im in self.images}
        self._labels: dict[str, np.ndarray] = {}
        self._index_annotations(_list(data, "annotations", self.source), cat_index)

    def _read_categories(self, cats: list) -> dict[int, int]:
        """Set ``classes`` (background + names by category id); return category id → class index 1..K."""
        pairs = []
        for c in cats:
            pairs.append((_field(c, "id", int, self.source, "a category"),
                          _field(c, "name", str, self.source, "a category")))
        pairs.sort()
        ids, names = [p[0] for p in pairs], [p[1] for p in pairs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise LiidError(f"{self.source}: category id {dup} is listed twice")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise LiidError(f"{self.source}: category name {dup!r} is listed twice")
        self.classes = ["background", *names]
        return {cid: k + 1 for k, cid in enumerate(ids)}

    def _find_images_dir(self, images: str | os.PathLike | None) -> Path:
        if images is not None:
            if not Path(images).is_dir():
                raise LiidError(f"{images}: images folder not found")
            return Path(images)
        tried = images_dir_candidates(self.source)
        for d in tried:
            if d.is_dir():
                return d
        raise LiidError(f"{self.source}: no images folder found (tried {', '.join(map(str, tried))}); "
                        f"pass --images")

    def _read_images(self, entries: list) -> list[ImageInfo]:
        """ImageInfo per JSON image (id = file stem, unique); every image file must exist inside the images
        folder (``contained``: no absolute ``file_name``, no ``..`` or symlink leading out)."""
        names = listing(self.images_dir)
        out, stems, coco_ids = [], {}, set()
        for e in entries:
            cid = _field(e, "id", int, self.source, "an image")
            what = f"image {cid}"
            name = _field(e, "file_name", str, self.source, what)
            h, w = _field(e, "height", int, self.source, what), _field(e, "width", int, self.source, what)
            if cid in coco_ids:
                raise LiidError(f"{self.source}: image id {cid} is listed twice")
            file = contained(names, name, f"{self.source}: image {cid} file_name")
            stem = Path(name).stem
            if stem in stems:
                raise LiidError(f"{self.source}: images {stems[stem]!r} and {name!r} have the same id {stem!r}")
            coco_ids.add(cid)
            stems[stem] = name
            if name not in names and not file.is_file():
                raise LiidError(f"{file}: image file not found ({self.source.name}, image {cid})")
            out.append(ImageInfo(stem, file, h, w, coco_id=cid))
        return out

    def _index_annotations(self, anns: list, cat_index: dict[int, int]) -> None:
        """Group annotations by image (with their class index) and record each image's labels."""
        by_coco = {im.coco_id: im.id for im in self.images}
        for a in anns:
            aid = a.get("id", "?") if isinstance(a, dict) else "?"
            what = f"annotation {aid}"
            img = _field(a, "image_id", int, self.source, what)
            cat = _field(a, "category_id", int, self.source, what)
            if img not in by_coco:
                raise LiidError(f"{self.source}: {what} has image_id {img}, which is not in 'images'")
            if cat not in cat_index:
                raise LiidError(f"{self.source}: {what} has category_id {cat}, which is not in 'categories'")
            if "segmentation" not in a:
                raise LiidError(f"{self.source}: {what} has no 'segmentation'")
            self._anns[by_coco[img]].append({"id": aid, "class": cat_index[cat], "iscrowd": bool(a.get("iscrowd")),
                                             "segmentation": a["segmentation"]})
        for i, lst in self._anns.items():
            self._labels[i] = np.unique(np.asarray([x["class"] for x in lst], dtype=np.int64))

    def labels(self, image_id: str) -> np.ndarray:
        self.info(image_id)
        return self._labels[image_id].copy()

    def instances(self, image_id: str) -> Instances:
        """Every annotation of the image (crowd included, flagged), in JSON order."""
        im = self.info(image_id)
        anns = self._anns[image_id]
        masks = np.zeros((len(anns), im.height, im.width), dtype=bool)
        with warnings.catch_warnings():  # pycocotools' decode under NumPy 2 warns about __array__(copy=)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
            for n, a in enumerate(anns):
                try:
                    masks[n] = decode_segmentation(a["segmentation"], im.height, im.width)
                except Exception as e:  # pycocotools raises bare Exception for some bad input
                    raise LiidError(f"{self.source}: annotation {a['id']} of image {image_id!r} has a bad "
                                    f"segmentation ({e})") from None
        classes = np.asarray([a["class"] for a in anns], dtype=np.int64)
        iscrowd = np.asarray([a["iscrowd"] for a in anns], dtype=bool)
        return Instances(masks, classes, iscrowd)

    def semantic(self, image_id: str) -> np.ndarray:
        """Non-crowd instances painted larger first (smaller on top); crowd pixels left uncovered → 255."""
        if self.num_classes >= IGNORE:
            raise LiidError(f"{self.source}: {self.num_classes} classes do not fit a uint8 semantic map")
        inst = self.instances(image_id)
        sem = np.zeros(inst.masks.shape[1:], dtype=np.uint8)
        crowd = inst.masks[inst.iscrowd].any(axis=0)
        solid = np.flatnonzero(~inst.iscrowd)
        areas = inst.masks[solid].sum(axis=(1, 2))
        for j in solid[np.argsort(-areas, kind="stable")]:
            sem[inst.masks[j]] = inst.classes[j]
        covered = inst.masks[solid].any(axis=0)
        sem[crowd & ~covered] = IGNORE
        return sem
