"""Evaluate pseudo-labels (or a model's predictions) against a dataset's ground truth.

Instances: COCO mask AP from pycocotools' ``COCOeval`` (``segm``; AP at IoU 0.5:0.95, AP50, AP75, AP small /
medium / large, per-class AP50), VOC's mAP^r at IoU 0.25 / 0.5 / 0.7 / 0.75 (``detection.map_r``, what PRM,
IRNet and BESTIE report) and ABO, the average best overlap of PRM/LIID: for every non-crowd ground-truth
instance, the best mask IoU of any prediction of its class in its image (0 when there is none), averaged over
all instances;
``abo_class_agnostic`` takes the best over every prediction of the image, whatever its class.

Semantic: one confusion matrix over all pixels → per-class IoU, mIoU (over the classes present in the ground
truth or the prediction) and pixel accuracy. 255 in the ground truth is ignored; 255 in a prediction means "no
prediction": the pixel counts as a miss for its true class and as a prediction of no class.

Predictions are what ``liid export`` writes (a COCO instances JSON; ``semantic/<image id>.png``) or a COCO
results list (detectron2's ``coco_instances_results.json``). Inputs are validated here, at the boundary: every
mismatch with the dataset is a LiidError naming the file and the item.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from liid.atomic import read_json
from liid.datasets.base import IGNORE, Dataset, ImageInfo, check_image_files
from liid.datasets.voc import read_index_png
from liid.detection.map_r import THRESHOLDS, map_r
from liid.errors import LiidError
from liid.progress import progress as progress_bar
from liid.proposals.store import rle_areas

# ------------------------------------------------------------------------------------------- instances


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _image_keys() -> list[tuple[str, Callable[[dict], object], Callable[[ImageInfo], object]]]:
    """The rules that match a prediction image to a dataset image, in order: (name, pred key, dataset key)."""
    def coco_id(p: dict) -> object:
        i = p["id"]
        return int(i) if isinstance(i, str) and i.isdigit() else i

    return [("file_name", lambda p: Path(str(p.get("file_name", ""))).name or None, lambda im: im.file.name),
            ("id", lambda p: str(p["id"]), lambda im: im.id),
            ("digits", coco_id, lambda im: int(im.id) if im.id.isdigit() else None),
            ("coco_id", coco_id, lambda im: im.coco_id)]


def match_images(pred_images: Sequence[dict], dataset: Dataset, where: str,
                 rules: Sequence[str] = ("file_name", "id", "digits", "coco_id")) -> tuple[list[ImageInfo], str]:
    """The dataset image of each prediction image, and the rule that matched them.

    Rules, the first that matches every image wins: the file name's basename equals the dataset image file's;
    ``str(id)`` equals the dataset image id; ``id`` equals the integer of an all-digit dataset image id (what
    ``liid export`` writes for such ids: ``000123`` → 123); ``id`` equals the dataset image's COCO id. An image
    that no rule matches, or two prediction images on one dataset image, is a LiidError.
    """
    failed: list[tuple[str, list]] = []
    for name, pred_key, ds_key in _image_keys():
        if name not in rules:
            continue
        index = {k: im for im in dataset.images if (k := ds_key(im)) is not None}
        found = [index.get(pred_key(p)) for p in pred_images]
        missing = [p["id"] for p, im in zip(pred_images, found, strict=True) if im is None]
        if not missing:
            seen: dict[str, object] = {}
            for p, im in zip(pred_images, found, strict=True):
                if im.id in seen:
                    raise LiidError(f"{where}: images {seen[im.id]!r} and {p['id']!r} are both the dataset "
                                    f"image {im.id!r}")
                seen[im.id] = p["id"]
            return found, name
        failed.append((name, missing))
    # report file names when every image has one (the most telling rule), else the closest id rule
    named = all(isinstance(p.get("file_name"), str) for p in pred_images)
    name, missing = failed[0] if named and failed[0][0] == "file_name" else min(failed, key=lambda f: len(f[1]))
    raise LiidError(f"{where}: {len(missing)} of its {len(pred_images)} images match no image of the dataset "
                    f"{dataset.source} (by {name}; tried {', '.join(rules)}); the first is image id {missing[0]!r}")


def category_map(categories: object, classes: Sequence[str], where: str) -> dict[int, int]:
    """Prediction category id → dataset class index (1..K), matched by name."""
    if not isinstance(categories, list) or not categories:
        raise LiidError(f"{where}: no 'categories' list")
    index = {name: k for k, name in enumerate(classes) if k > 0}
    out: dict[int, int] = {}
    for c in categories:
        cid, name = (c.get("id"), c.get("name")) if isinstance(c, dict) else (None, None)
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str):
            raise LiidError(f"{where}: a category has no integer 'id' and string 'name' ({c!r})")
        if name not in index:
            shown = ", ".join(classes[1:11]) + (", ..." if len(classes) > 11 else "")
            raise LiidError(f"{where}: category {name!r} is not a class of the dataset ({shown})")
        if cid in out:
            raise LiidError(f"{where}: category id {cid} is listed twice")
        out[cid] = index[name]
    return out


def to_rle(seg: object, height: int, width: int) -> dict:
    """A COCO ``segmentation`` (compressed or uncompressed RLE, polygons) as an RLE with bytes ``counts``;
    ValueError when it is none of those or not ``height`` x ``width``."""
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str) and isinstance(seg.get("size"), list):
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_util.frPyObjects(seg, height, width)
    elif isinstance(seg, list) and seg:
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    else:
        raise ValueError("not an RLE or polygons")
    if [int(v) for v in rle["size"]] != [height, width]:
        raise ValueError(f"mask size {list(rle['size'])} is not the image size {[height, width]}")
    return {"size": [height, width], "counts": rle["counts"]}


def _read_predictions(pred: dict | list | str | os.PathLike) -> tuple[dict | list, str]:
    if isinstance(pred, (dict, list)):
        return pred, "predictions"
    data = read_json(pred)
    if not isinstance(data, (dict, list)):
        raise LiidError(f"{pred}: not a COCO JSON (top level is a {type(data).__name__})")
    return data, str(pred)


def _result_categories(dataset: Dataset) -> list[dict] | None:
    """The categories a COCO results list refers to: a COCO dataset's own (its JSON's ids), else None
    (= the dataset class indices 1..K)."""
    if dataset.kind != "coco":
        return None
    cats = read_json(dataset.source).get("categories")
    return cats if isinstance(cats, list) else None


def match_coco_images(pimgs: list, dataset: Dataset, where: str) -> tuple[list, list[ImageInfo], str]:
    """A COCO JSON's ``images`` checked (an id each, no id twice) and matched to the dataset's images, sizes
    included: ``(ids, dataset images, matching rule)``."""
    for p in pimgs:
        if not isinstance(p, dict) or not isinstance(p.get("id"), (int, str)) or isinstance(p["id"], bool):
            raise LiidError(f"{where}: an image has no integer 'id' ({p!r})")
    ids = [p["id"] for p in pimgs]
    if len(set(ids)) != len(ids):
        raise LiidError(f"{where}: image id {next(i for i in ids if ids.count(i) > 1)!r} is listed twice")
    found, rule = match_images(pimgs, dataset, where)
    for p, im in zip(pimgs, found, strict=True):
        if (p.get("height", im.height), p.get("width", im.width)) != (im.height, im.width):
            raise LiidError(f"{where}: image {p['id']!r} is {p.get('height')}x{p.get('width')}, the dataset "
                            f"image {im.id!r} is {im.height}x{im.width}")
    return ids, found, rule


def _pred_images(data: dict | list, dataset: Dataset, where: str,
                 image_ids: Sequence[str] | None) -> tuple[list, list[tuple[int, ImageInfo]], str]:
    """The annotations, the evaluated images as (evaluation id, dataset image), and the matching rule."""
    if isinstance(data, dict):
        for key in ("images", "annotations"):
            if not isinstance(data.get(key), list):
                raise LiidError(f"{where}: not a COCO instances JSON (no {key!r} list)")
        ids, found, rule = match_coco_images(data["images"], dataset, where)
        return data["annotations"], list(zip(ids, found, strict=True)), rule
    anns = data
    for a in anns:
        if not isinstance(a, dict) or not isinstance(a.get("image_id"), int) or isinstance(a["image_id"], bool):
            raise LiidError(f"{where}: a result has no integer 'image_id'")
    pimgs = [{"id": i} for i in sorted({a["image_id"] for a in anns})]
    found, rule = match_images(pimgs, dataset, where, rules=("id", "digits", "coco_id")) if pimgs else ([], "id")
    pairs = {im.id: p["id"] for p, im in zip(pimgs, found, strict=True)}
    wanted = [dataset.info(i) for i in image_ids] if image_ids is not None else dataset.images
    next_id = max([0, *[p["id"] for p in pimgs]]) + 1
    out = []
    for im in wanted:
        if im.id not in pairs:
            pairs[im.id] = next_id
            next_id += 1
        out.append((pairs[im.id], im))
    evaluated = {im.id for _, im in out}
    outside = [p["id"] for p, im in zip(pimgs, found, strict=True) if im.id not in evaluated]
    if outside:
        raise LiidError(f"{where}: {len(outside)} result image ids are not among the evaluated images; "
                        f"the first is {outside[0]!r}")
    return anns, out, rule


def _detections(anns: list, images: dict[object, ImageInfo], cats: dict[int, int], where: str) -> list[dict]:
    """Validated predictions as COCO results (image_id, category_id = class index, RLE, score); no ``bbox``,
    so that ``loadRes`` takes the mask area (what detectron2's evaluator does too)."""
    out = []
    for n, a in enumerate(anns):
        what = f"annotation {a.get('id', n) if isinstance(a, dict) else n}"
        if not isinstance(a, dict):
            raise LiidError(f"{where}: {what} is not an object")
        iid, cid = a.get("image_id"), a.get("category_id")
        im = images.get(iid) if isinstance(iid, (int, str)) else None
        if im is None:
            raise LiidError(f"{where}: {what} has image_id {iid!r}, which is not in 'images'")
        if not isinstance(cid, int) or cid not in cats:
            raise LiidError(f"{where}: {what} has category_id {cid!r}, which is not a category")
        score = a.get("score", 1.0)
        if not _number(score):
            raise LiidError(f"{where}: {what} has a non-numeric score {score!r}")
        try:
            rle = to_rle(a.get("segmentation"), im.height, im.width)
        except Exception as e:  # pycocotools raises bare Exception for some bad input
            raise LiidError(f"{where}: {what} has a bad segmentation ({e})") from None
        out.append({"image_id": iid, "category_id": cats[cid], "segmentation": rle,
                    "score": float(score)})
    return out


def ground_truth_coco(dataset: Dataset, images: list[tuple[object, ImageInfo]], progress: bool
                  ) -> tuple[dict, dict[object, tuple[list[dict], np.ndarray]], int]:
    """A COCO ground-truth dict for the images (those with instances), the non-crowd (RLEs, classes) of each
    image for ABO, and how many images were skipped for having no ground truth."""
    gt_images, anns, solid, skipped = [], [], {}, 0
    for eid, im in progress_bar(images, desc="evaluate", unit="img", enabled=progress):
        inst = dataset.instances(im.id)
        if inst is None:
            skipped += 1
            continue
        gt_images.append({"id": eid, "file_name": im.file.name, "height": im.height, "width": im.width})
        if len(inst) == 0:
            solid[eid] = ([], np.zeros(0, np.int64))
            continue
        rles = mask_util.encode(np.asfortranarray(inst.masks.transpose(1, 2, 0).astype(np.uint8)))
        areas, boxes = rle_areas(rles), mask_util.toBbox(rles).reshape(-1, 4)
        for j, r in enumerate(rles):
            anns.append({"id": len(anns) + 1, "image_id": eid, "category_id": int(inst.classes[j]),
                         "segmentation": {"size": [im.height, im.width], "counts": r["counts"].decode("ascii")},
                         "area": float(areas[j]), "bbox": [float(v) for v in boxes[j]],
                         "iscrowd": int(inst.iscrowd[j])})
        keep = ~inst.iscrowd
        solid[eid] = ([r for r, k in zip(rles, keep, strict=True) if k], inst.classes[keep].astype(np.int64))
    cats = [{"id": k, "name": c, "supercategory": "object"} for k, c in enumerate(dataset.classes) if k > 0]
    return {"images": gt_images, "annotations": anns, "categories": cats}, solid, skipped


def best_overlaps(gt_rles: list[dict], gt_classes: np.ndarray, dt_rles: list[dict],
                  dt_classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per GT instance: best mask IoU with a prediction of its class, and with any prediction (0 if none)."""
    n = len(gt_rles)
    if n == 0 or not dt_rles:
        return np.zeros(n), np.zeros(n)
    iou = np.asarray(mask_util.iou(dt_rles, gt_rles, [0] * n), dtype=np.float64).reshape(len(dt_rles), n)
    same = np.asarray(dt_classes)[:, None] == np.asarray(gt_classes)[None, :]
    return np.where(same, iou, 0.0).max(axis=0), iou.max(axis=0)


def run_cocoeval(gt: dict, dets: list[dict]) -> tuple[COCOeval, str]:
    """pycocotools' ``segm`` evaluation of ``dets`` (copied: ``loadRes`` edits them) on ``gt``; its prints
    are captured and returned."""
    with contextlib.redirect_stdout(io.StringIO()) as buf:
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(d) for d in dets])
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev, buf.getvalue()


def _mean_valid(p: np.ndarray) -> float | None:
    p = p[p > -1]
    return float(p.mean()) if p.size else None


def evaluate_instances(dataset: Dataset, pred: dict | list | str | os.PathLike,
                       categories: list[dict] | None = None, image_ids: Sequence[str] | None = None,
                       progress: bool = True) -> dict:
    """Mask AP (COCOeval ``segm``) and ABO of predictions against the dataset's ground-truth instances.

    ``pred``: a COCO instances dict/JSON file (its ``images`` are the evaluated images; categories matched to
    the dataset classes by name) or a COCO results list (the evaluated images are ``image_ids``, default every
    dataset image; its category ids are ``categories``' ids, default a COCO dataset's own category ids, else
    the class indices 1..K). Prediction images without ground truth are skipped (counted). As in COCO, AP
    counts the 100 highest-scoring predictions of an image; ABO counts all of them.
    """
    if not dataset.has_instances:
        raise LiidError(f"{dataset.source} has no ground-truth instances (a {dataset.kind} dataset)")
    data, where = _read_predictions(pred)
    anns, images, rule = _pred_images(data, dataset, where, image_ids)
    if not anns:
        raise LiidError(f"{where}: no annotations (nothing to evaluate)")
    if isinstance(data, dict):
        cats = category_map(data.get("categories"), dataset.classes, where)
    else:
        categories = categories if categories is not None else _result_categories(dataset)
        cats = (category_map(categories, dataset.classes, where) if categories is not None
                else {k: k for k in range(1, len(dataset.classes))})
    dets = _detections(anns, dict(images), cats, where)
    gt, solid, skipped = ground_truth_coco(dataset, images, progress)
    dets = [d for d in dets if d["image_id"] in solid]
    n_gt = sum(len(c) for _, c in solid.values())
    if not solid or n_gt == 0:
        raise LiidError(f"{where}: no ground-truth instances in its {len(images)} images in {dataset.source}")
    if not dets:
        raise LiidError(f"{where}: no annotations on images with ground truth (nothing to evaluate)")
    ev, _ = run_cocoeval(gt, dets)

    by_image: dict[object, list[dict]] = {}
    for d in dets:
        by_image.setdefault(d["image_id"], []).append(d)
    same, agnostic, gt_cls = [], [], []
    for eid, (rles, classes) in solid.items():
        ds = by_image.get(eid, [])
        s, a = best_overlaps(rles, classes, [d["segmentation"] for d in ds],
                             np.asarray([d["category_id"] for d in ds], dtype=np.int64))
        same.append(s)
        agnostic.append(a)
        gt_cls.append(classes)
    same_a, agnostic_a, cls_a = np.concatenate(same), np.concatenate(agnostic), np.concatenate(gt_cls)
    dt_cls = np.asarray([d["category_id"] for d in dets], dtype=np.int64)

    # VOC's mAP^r (detection/map_r.py) on the same images: every prediction, crowd ground truth ignored
    gt_by_image: dict[object, list[dict]] = {}
    for a in gt["annotations"]:
        gt_by_image.setdefault(a["image_id"], []).append(a)
    eids = list(solid)
    mr = map_r([([a["segmentation"] for a in gt_by_image.get(e, [])],
                 np.asarray([a["category_id"] for a in gt_by_image.get(e, [])], dtype=np.int64),
                 np.asarray([a["iscrowd"] for a in gt_by_image.get(e, [])], dtype=bool)) for e in eids],
               [([d["segmentation"] for d in by_image.get(e, [])],
                 np.asarray([d["category_id"] for d in by_image.get(e, [])], dtype=np.int64),
                 np.asarray([d.get("score", 1.0) for d in by_image.get(e, [])], dtype=np.float64)) for e in eids])

    precision = ev.eval["precision"]  # [T, R, K, A, M]; A = 0: all areas, M = 2: 100 detections
    per_class = {}
    for kk, k in enumerate(ev.params.catIds):
        sel = cls_a == k
        per_class[dataset.classes[k]] = {
            "ap": _mean_valid(precision[:, :, kk, 0, 2]), "ap50": _mean_valid(precision[0, :, kk, 0, 2]),
            "abo": float(same_a[sel].mean()) if sel.any() else None,
            "map_r50": mr["per_class"].get(k, {}).get(0.5),
            "gt_instances": int(sel.sum()), "predictions": int((dt_cls == k).sum())}
    size_ap = [None if v < 0 else float(v) for v in ev.stats[3:6]]  # COCO's -1: no instance of that size
    return {"kind": "instances", "ap": float(ev.stats[0]), "ap50": float(ev.stats[1]), "ap75": float(ev.stats[2]),
            "ap_small": size_ap[0], "ap_medium": size_ap[1], "ap_large": size_ap[2],
            "map_r": {f"{t:g}": mr["map_r"][t] for t in THRESHOLDS},
            "abo": float(same_a.mean()), "abo_class_agnostic": float(agnostic_a.mean()),
            "images": len(solid), "gt_instances": int(n_gt),
            "crowd_instances": sum(a["iscrowd"] for a in gt["annotations"]), "predictions": len(dets),
            "skipped_no_gt": skipped, "dataset_images": len(dataset.images), "image_match": rule,
            "coco_stats": [float(v) for v in ev.stats], "per_class": per_class}


# -------------------------------------------------------------------------------------------- semantic


def read_prediction_png(file: Path, height: int, width: int, num_classes: int) -> np.ndarray:
    """A palette or grayscale PNG as class indices uint8 [H, W]; checked for size and values (0..K, 255)."""
    return read_index_png(file, height, width, num_classes, what="prediction")


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K+1, K+2]: rows the true class, columns the predicted class, the last column "no prediction"
    (255 in the prediction). Pixels whose ground truth is 255 are left out."""
    n = num_classes + 1
    valid = gt != IGNORE
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    p[p == IGNORE] = n
    return np.bincount(g * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)


def semantic_scores(conf: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-class IoU (None where neither ground truth nor prediction has the class), mIoU over the others,
    pixel accuracy, from a ``confusion`` matrix."""
    n = len(classes)
    tp = np.diag(conf[:, :n]).astype(np.float64)
    gt = conf.sum(axis=1).astype(np.float64)
    pred = conf[:, :n].sum(axis=0).astype(np.float64)
    union = gt + pred - tp
    iou = np.divide(tp, union, out=np.full(n, np.nan), where=union > 0)
    total = float(gt.sum())
    return {"miou": float(np.nanmean(iou)) if (union > 0).any() else 0.0,
            "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
            "pixels": int(total), "unpredicted_pixels": int(conf[:, n].sum()),
            "per_class": {classes[k]: {"iou": None if np.isnan(iou[k]) else float(iou[k]),
                                       "gt_pixels": int(gt[k]), "pred_pixels": int(pred[k])} for k in range(n)}}


def evaluate_semantic(dataset: Dataset, pred_dir: str | os.PathLike, progress: bool = True) -> dict:
    """mIoU and pixel accuracy of ``pred_dir/<image id>.png`` over every dataset image with semantic ground
    truth; a missing PNG is an error (naming the first few missing images and their count)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise LiidError(f"{pred_dir}: prediction folder not found")
    if not dataset.has_semantic:
        raise LiidError(f"{dataset.source} has no semantic ground truth (a {dataset.kind} dataset)")
    check_image_files(pred_dir, dataset, "PNG")
    k = dataset.num_classes
    conf = np.zeros((k + 1, k + 2), dtype=np.int64)
    images = skipped = 0
    for im in progress_bar(dataset.images, desc="evaluate", unit="img", enabled=progress):
        gt = dataset.semantic(im.id)
        if gt is None:
            skipped += 1
            continue
        conf += confusion(gt, read_prediction_png(pred_dir / f"{im.id}.png", im.height, im.width, k), k)
        images += 1
    if images == 0:
        raise LiidError(f"{dataset.source}: none of its {len(dataset.images)} images has semantic ground truth")
    scores = semantic_scores(conf, dataset.classes)
    per_class = scores.pop("per_class")
    pngs = {n for n in os.listdir(pred_dir) if n.endswith(".png")}
    return {"kind": "semantic", **scores, "images": images, "skipped_no_gt": skipped,
            "extra_pngs": len(pngs - {f"{im.id}.png" for im in dataset.images}),
            "per_class": per_class, "confusion": conf.tolist()}


# ------------------------------------------------------------------------------------------------ table


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(result: dict) -> str:
    """A plain-text table of an ``evaluate_instances`` or ``evaluate_semantic`` result: a row per class
    (in class order) and an overall row."""
    per = result["per_class"]
    width = max([len("overall"), *map(len, per)])
    if result["kind"] == "instances":
        head = f"{'class':<{width}} {'gt':>6} {'pred':>6} {'AP':>6} {'AP50':>6} {'ABO':>6}"
        rows = [f"{c:<{width}} {e['gt_instances']:>6} {e['predictions']:>6} {_fmt(e['ap']):>6} "
                f"{_fmt(e['ap50']):>6} {_fmt(e['abo']):>6}" for c, e in per.items()]
        total = (f"{'overall':<{width}} {result['gt_instances']:>6} {result['predictions']:>6} "
                 f"{_fmt(result['ap']):>6} {_fmt(result['ap50']):>6} {_fmt(result['abo']):>6}")
        foot = (f"AP75 {_fmt(result['ap75'])}  class-agnostic ABO {_fmt(result['abo_class_agnostic'])}  "
                f"({result['images']} images, {result['crowd_instances']} crowd instances ignored)")
        if "map_r" in result:
            foot += ("\nAP small/medium/large " + " / ".join(_fmt(result[k]) for k in ("ap_small", "ap_medium",
                                                                                         "ap_large"))
                     + "  VOC mAP^r " + "  ".join(f"@{t} {_fmt(v)}" for t, v in result["map_r"].items()))
    else:
        head = f"{'class':<{width}} {'gt px':>10} {'pred px':>10} {'IoU':>6}"
        rows = [f"{c:<{width}} {e['gt_pixels']:>10} {e['pred_pixels']:>10} {_fmt(e['iou']):>6}"
                for c, e in per.items()]
        total = f"{'overall':<{width}} {result['pixels']:>10} {'':>10} {_fmt(result['miou']):>6}"
        foot = (f"mIoU {_fmt(result['miou'])}  pixel accuracy {_fmt(result['pixel_accuracy'])}  "
                f"({result['images']} images, {result['unpredicted_pixels']} pixels without a prediction)")
    rule = "-" * len(head)
    return "\n".join([head, rule, *rows, rule, total, foot])
