"""The pseudo-labels (and the evaluation ground truth) as detectron2 datasets, for Mask R-CNN training.

``liid export`` / ``liid label`` write a COCO instances JSON with RLE masks, which detectron2's
``register_coco_instances`` loads as is; the configs in ``detection/configs/`` name the datasets registered
here. detectron2 is optional: it is imported inside the functions that need it, and ``coco_json_check`` checks a
JSON the way detectron2's ``load_coco_json`` reads it with pycocotools alone, so a bad file is found before a
GPU job starts.

Standard folder layout of ``register_liid_datasets(ROOT)`` (``liid_dataset_paths`` gives the table)::

    ROOT/voc/                               a VOC root (JPEGImages/ holds every image)
        annotations/instances_val.json      liid_voc_val            (the val ground truth as a COCO JSON)
    ROOT/voc_pseudo/instances.json          liid_voc_pseudo_train   (liid export / liid label --out ROOT/voc_pseudo)
    ROOT/coco/                              images in train2017/ and val2017/
        annotations/instances_val2017.json  liid_coco_val           (images in val2017/)
    ROOT/coco_pseudo/instances.json         liid_coco_pseudo_train  (images in coco/train2017/)
    ROOT/synthetic/                         liid make-synthetic --out ROOT/synthetic (JPEGImages/)
        annotations/instances_val.json      liid_synthetic_val      (written by make-synthetic)
    ROOT/synthetic_pseudo/instances.json    liid_synthetic_pseudo_train

The pseudo-labels lie beside the dataset, not inside it: no command writes inside one of its inputs
(``liid label --dataset ROOT/voc --out ROOT/voc/pseudo`` is refused), so a dataset never changes under its users.

Every name is registered whether or not its files exist (detectron2 reads a dataset only when it is used), so
the names are always known; ``coco_json_check`` tells what is wrong with one that is used.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from liid.errors import LiidError

INSTALL_HINT = ("detectron2 is not installed; see README (Mask R-CNN with detectron2): "
                "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'")

# name -> (COCO JSON, image folder), relative to ROOT
LAYOUT: dict[str, tuple[str, str]] = {
    "liid_voc_pseudo_train": ("voc_pseudo/instances.json", "voc/JPEGImages"),
    "liid_voc_val": ("voc/annotations/instances_val.json", "voc/JPEGImages"),
    "liid_coco_pseudo_train": ("coco_pseudo/instances.json", "coco/train2017"),
    "liid_coco_val": ("coco/annotations/instances_val2017.json", "coco/val2017"),
    "liid_synthetic_pseudo_train": ("synthetic_pseudo/instances.json", "synthetic/JPEGImages"),
    "liid_synthetic_val": ("synthetic/annotations/instances_val.json", "synthetic/JPEGImages"),
}

XYWH_ABS = 1  # detectron2.structures.BoxMode.XYWH_ABS (an IntEnum; equal to 1)


def liid_dataset_paths(root: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """The standard dataset names under ``root``: name → (COCO JSON path, image folder), as strings."""
    root = Path(root)
    return {name: (str(root / js), str(root / images)) for name, (js, images) in LAYOUT.items()}


def _detectron2_data():
    try:
        from detectron2.data import DatasetCatalog
        from detectron2.data.datasets import register_coco_instances
    except ImportError:
        raise LiidError(INSTALL_HINT) from None
    return DatasetCatalog, register_coco_instances


def register_pseudo_labels(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike,
                           metadata: dict | None = None) -> None:
    """Register a ``liid export`` JSON (or any COCO instances JSON) as the detectron2 dataset ``name``.

    A thin wrapper of ``detectron2.data.datasets.register_coco_instances``: lazy (the JSON is read when the
    dataset is first used), ``evaluator_type="coco"``; the category names become ``thing_classes`` when it is
    loaded. A name that is already registered is left as it is (so calling this twice, or once per worker
    process, is harmless).
    """
    catalog, register_coco_instances = _detectron2_data()
    if name in catalog.list():
        return
    register_coco_instances(name, dict(metadata or {}), str(json_file), str(image_root))


def parse_register_spec(spec: str) -> tuple[str, str, str]:
    """``NAME=JSON:IMAGES`` (``tools/train_net.py --register``) → (name, COCO JSON, image folder).

    The split is at the first ``=`` and the last ``:``, so the paths may hold ``=``. LiidError if a part is
    missing, the name is one of the standard names (``LAYOUT``), the JSON is not a file or IMAGES not a folder."""
    name, eq, rest = spec.partition("=")
    js, colon, images = rest.rpartition(":")
    if not (eq and colon and name.strip() and js and images):
        raise LiidError(f"--register {spec!r}: expected NAME=JSON:IMAGES, e.g. "
                        "my_pseudo_train=out/labels/instances.json:data/JPEGImages")
    name = name.strip()
    if name in LAYOUT:
        raise LiidError(f"--register {spec!r}: {name!r} is a standard name (--liid-root registers it); "
                        "choose another")
    if not os.path.isfile(js):
        raise LiidError(f"--register {spec!r}: {js}: not found")
    if not os.path.isdir(images):
        raise LiidError(f"--register {spec!r}: {images}: not a folder")
    return name, js, images


def register_specs(specs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Register every ``--register NAME=JSON:IMAGES``; returns name → (JSON, images) for the checks."""
    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        name, js, images = parse_register_spec(spec)
        if name in out and out[name] != (js, images):
            raise LiidError(f"--register: {name!r} given twice with different files")
        out[name] = (js, images)
    if out:
        _detectron2_data()
    for name, (js, images) in out.items():
        register_pseudo_labels(name, js, images)
    return out


def register_liid_datasets(root: str | os.PathLike) -> list[str]:
    """Register the standard names of the layout above (module docstring) under ``root``; returns the names."""
    _detectron2_data()
    paths = liid_dataset_paths(root)
    for name, (json_file, image_root) in paths.items():
        register_pseudo_labels(name, json_file, image_root)
    return list(paths)


# ------------------------------------------------------------------------------------ the check, without d2


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config_datasets(num_classes: int, train: Sequence[str], test: Sequence[str],
                          root: str | os.PathLike, extra: dict[str, tuple[str, str]] | None = None) -> None:
    """Before any training starts: every LIID dataset a config names (``DATASETS.TRAIN``/``TEST``) exists,
    reads as detectron2 reads it (``coco_json_check``), has ``num_classes`` categories
    (``MODEL.ROI_HEADS.NUM_CLASSES``), and a training set has annotations. ``extra``: the ``--register``
    names, checked alike. Other names are the user's own registrations in code and are left to detectron2.
    LiidError naming the file otherwise."""
    paths = {**liid_dataset_paths(root), **(extra or {})}
    for name in [*train, *test]:
        if name not in paths:
            continue
        js, images = paths[name]
        if not os.path.isfile(js):
            raise LiidError(f"{js}: not found (dataset {name!r} under --liid-root {root})")
        records = coco_json_check(js, images)
        cats = read_json_categories(js)
        if len(cats) != num_classes:
            raise LiidError(f"{js}: {len(cats)} categories, but the config's MODEL.ROI_HEADS.NUM_CLASSES is "
                            f"{num_classes} (dataset {name!r})")
        if name in train and not any(r["annotations"] for r in records):
            raise LiidError(f"{js}: no annotations to train on (dataset {name!r})")


def read_json_categories(json_file: str | os.PathLike) -> list[dict]:
    from liid.atomic import read_json

    data = read_json(json_file)
    return data.get("categories", []) if isinstance(data, dict) else []


def coco_json_check(json_file: str | os.PathLike, image_root: str | os.PathLike,
                    check_files: bool = True) -> list[dict]:
    """The records detectron2's ``load_coco_json(json_file, image_root, dataset_name)`` returns, made with
    pycocotools alone, after checking what detectron2 would reject or silently get wrong.

    Each record: ``file_name`` (``os.path.join(image_root, file_name)``), ``height``, ``width``, ``image_id``,
    ``annotations``: dicts with ``iscrowd``, ``bbox`` (COCO XYWH), ``category_id`` (mapped to ``0..K-1`` by
    sorted category id), ``segmentation`` (an RLE dict with string ``counts``, or polygons), ``bbox_mode``
    (``1`` = ``BoxMode.XYWH_ABS``). Records are in image-id order, as detectron2 sorts them.

    LiidError (naming the file) for: a file that is not a COCO instances JSON; no categories; repeated image,
    annotation or category ids; an image without integer ``height``/``width`` or whose file is missing under
    ``image_root`` (``check_files``); an annotation whose ``image_id`` is not an image or whose ``category_id``
    is not a category; an ``ignore`` flag; a bbox that is not 4 numbers or has no positive width and height; an
    RLE whose size is not the image's; an annotation without a usable segmentation (Mask R-CNN needs masks).
    """
    from pycocotools.coco import COCO

    from liid.atomic import read_json

    where = str(json_file)
    data = read_json(json_file)
    if not isinstance(data, dict):
        raise LiidError(f"{where}: not a COCO instances JSON (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LiidError(f"{where}: no {key!r} list")
    for key in ("images", "annotations", "categories"):
        for item in data[key]:
            if not isinstance(item, dict) or not _is_int(item.get("id")):
                raise LiidError(f"{where}: an entry of {key!r} has no integer 'id' ({str(item)[:80]})")
        dup = [i for i, n in Counter(item["id"] for item in data[key]).items() if n > 1]
        if dup:
            raise LiidError(f"{where}: {key} id {dup[0]} is used more than once")
    if not data["categories"]:
        raise LiidError(f"{where}: no categories")
    images = {im["id"]: im for im in data["images"]}
    root = str(image_root)
    for im in data["images"]:
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise LiidError(f"{where}: image {im['id']} has no 'file_name'")
        if not (_is_int(im.get("height")) and _is_int(im.get("width")) and im["height"] > 0 and im["width"] > 0):
            raise LiidError(f"{where}: image {im['id']} has no positive integer 'height' and 'width'")
        if check_files and not os.path.isfile(os.path.join(root, im["file_name"])):
            raise LiidError(f"{where}: image {im['id']}: {os.path.join(root, im['file_name'])} not found "
                            f"(image root {root})")
    cat_ids = sorted(c["id"] for c in data["categories"])
    id_map = {v: i for i, v in enumerate(cat_ids)}
    for a in data["annotations"]:
        what = f"annotation {a['id']}"
        if not _is_int(a.get("image_id")) or a["image_id"] not in images:
            raise LiidError(f"{where}: {what} has image_id {a.get('image_id')!r}, which is not in 'images'")
        if not _is_int(a.get("category_id")) or a["category_id"] not in id_map:
            raise LiidError(f"{where}: {what} has category_id {a.get('category_id')!r}, which is not in "
                            f"'categories'")
        if a.get("ignore", 0) != 0:
            raise LiidError(f"{where}: {what} has 'ignore' set, which detectron2 does not support")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise LiidError(f"{where}: {what} has no bbox of 4 numbers [x, y, w, h] ({box!r})")
        if not (box[2] > 0 and box[3] > 0):
            raise LiidError(f"{where}: {what} has a bbox without positive area ({box!r})")
        if a.get("iscrowd", 0) not in (0, 1):
            raise LiidError(f"{where}: {what} has iscrowd {a.get('iscrowd')!r} (0 or 1)")
        im = images[a["image_id"]]
        _check_segmentation(a.get("segmentation"), im["height"], im["width"], f"{where}: {what}")

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    records = []
    for image_id in sorted(coco.imgs):
        im = coco.imgs[image_id]
        objs = []
        for a in coco.imgToAnns[image_id]:
            obj = {key: a[key] for key in ("iscrowd", "bbox", "category_id") if key in a}
            segm = a["segmentation"]
            if isinstance(segm, dict) and isinstance(segm["counts"], list):
                from pycocotools import mask as mask_util  # uncompressed RLE → compressed, as detectron2 does

                segm = mask_util.frPyObjects(segm, *segm["size"])
            elif isinstance(segm, list):
                segm = [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
            obj["segmentation"] = segm
            obj["bbox_mode"] = XYWH_ABS
            obj["category_id"] = id_map[obj["category_id"]]
            objs.append(obj)
        records.append({"file_name": os.path.join(root, im["file_name"]), "height": im["height"],
                        "width": im["width"], "image_id": im["id"], "annotations": objs})
    return records


def _check_segmentation(segm: object, height: int, width: int, what: str) -> None:
    """An RLE of the image's size, or polygons of which at least one has 3 points (detectron2 drops the
    instance otherwise, silently but for a warning count)."""
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and isinstance(counts, (str, list))):
            raise LiidError(f"{what}: segmentation is not an RLE {{'size': [h, w], 'counts': ...}}")
        if [int(v) for v in size] != [height, width]:
            raise LiidError(f"{what}: RLE size {size} is not the image size {[height, width]}")
        return
    if isinstance(segm, list) and segm:
        if any(isinstance(p, list) and len(p) % 2 == 0 and len(p) >= 6 for p in segm):
            return
        raise LiidError(f"{what}: no polygon with at least 3 points (detectron2 would drop the instance)")
    raise LiidError(f"{what}: no segmentation (Mask R-CNN needs a mask per instance)")
