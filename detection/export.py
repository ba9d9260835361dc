"""Export a multiway cut as training data: a COCO instances JSON and VOC-palette semantic PNGs.

This is the last step of the LIID pipeline (paper sec. 5): every proposal has a label from the cut;
label 0 (background/noise) is dropped, the rest go through NMS at IoU 0.4 and become pseudo instances.
The semantic pseudo-mask of an image is the union of its instances per class, larger instances painted
first and smaller ones on top, so a small object inside a large one stays visible (a labeler may give
its own map instead: ``ImageLabels.semantic``).

NMS is **per class** (``torchvision.ops.batched_nms``), as in the LIID reference code: two overlapping
proposals with different labels both survive; of two overlapping proposals with the same label only the
higher-scoring one does. The score used for NMS, and written as ``score``, is the proposal's probability
of its assigned label (the feature store's ``probs``) when probabilities are given, else its proposal score.

Arrays in, files out: ``export_labeled`` takes per image the labeled proposals (indices, labels, scores)
of any labeler, reads proposals image by image (lazily) and writes the output directory atomically;
``export_pseudo_labels`` is the cut's (and mil-argmax's) way in, from labels per feature-store row. The
``liid export`` and ``liid label`` commands only resolve paths and call them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from liid.atomic import atomic_dir, check_output, write_json
from liid.datasets.palette import voc_palette, write_palette_png  # noqa: F401 (part of the export API)
from liid.errors import LiidError
from liid.graph.feature_store import FeatureStore
from liid.progress import progress as progress_bar
from liid.proposals.store import ImageProposals, read_image_proposals, read_proposal_index, rle_areas

FORMAT = "liid.export"
VERSION = 1
IGNORE = 255  # VOC "ignore" index: reserved; this export never writes it (uncovered pixels are 0)


def coco_image_ids(entries: list[dict]) -> tuple[list[int], str]:
    """Integer COCO ids for proposal-store image entries, and which rule gave them.

    ``"digits"``: every id is a string of ASCII digits (VOC/COCO file stems) and their integers are
    unique → ``int(id)``; else ``"coco_id"``: every entry has a unique ``coco_id`` → that; else
    ``"position"``: position in the list + 1.
    """
    ids = [e["id"] for e in entries]
    if all(re.fullmatch(r"[0-9]+", i) for i in ids):
        nums = [int(i) for i in ids]
        if len(set(nums)) == len(nums):
            return nums, "digits"
    if all("coco_id" in e for e in entries):
        nums = [int(e["coco_id"]) for e in entries]
        if len(set(nums)) == len(nums):
            return nums, "coco_id"
    return list(range(1, len(entries) + 1)), "position"


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by per-class NMS (``torchvision.ops.batched_nms``), highest score first.

    Boxes are XYXY pixels with exclusive ``x2``/``y2``: torchvision's box area ``(x2-x1)*(y2-y1)`` is then
    exactly the box's pixel count.
    """
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    import torch
    from torchvision.ops import batched_nms

    keep = batched_nms(torch.as_tensor(np.asarray(boxes, dtype=np.float32)),
                       torch.as_tensor(np.asarray(scores, dtype=np.float32)),
                       torch.as_tensor(np.asarray(labels, dtype=np.int64)), float(iou))
    return keep.numpy().astype(np.int64)


def paint_semantic(height: int, width: int, masks: np.ndarray, labels: np.ndarray,
                   scores: np.ndarray) -> np.ndarray:
    """Semantic map uint8 [H, W]: pixel = class index, 0 where no instance lies.

    ``masks`` bool [M, H, W]. Larger instances are painted first, smaller on top; of equal areas the
    higher-scoring one ends on top.
    """
    sem = np.zeros((height, width), dtype=np.uint8)
    if len(labels) == 0:
        return sem
    areas = masks.reshape(len(labels), -1).sum(axis=1)
    for j in np.lexsort((np.asarray(scores), -areas)):
        sem[masks[j]] = labels[j]
    return sem


def check_labels(labels: np.ndarray, store: FeatureStore, where: str) -> np.ndarray:
    """Validate the cut's labels against the feature store once, at the boundary."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LiidError(f"{where}: expected a 1-d integer array, got {labels.dtype} shape {labels.shape}")
    if labels.shape[0] != store.num_proposals:
        raise LiidError(f"{where}: {labels.shape[0]} labels but the feature store {store.path or ''} has "
                        f"{store.num_proposals} proposals")
    k1 = len(store.classes)
    bad = (labels < 0) | (labels >= k1)
    if bad.any():
        j = int(np.argmax(bad))
        raise LiidError(f"{where}: proposal {j} has label {int(labels[j])}, outside [0, {k1}) "
                        f"({k1} classes incl. background)")
    return labels.astype(np.int64)


@dataclass(frozen=True)
class ImageLabels:
    """The labeled proposals of one image, what ``export_labeled`` takes per image.

    ``index`` int [m]: positions in the image's proposal-store lists; ``labels`` int [m]: 0 (background,
    dropped) or a class ``1..K``; ``scores`` float [m]: the NMS score, written as ``score`` (None: the
    proposal store's scores); ``rows`` int [m]: what each entry came from, named in error messages
    (default ``0..m-1``). A plain tuple ``(index, labels, scores)`` is accepted wherever this is.

    For labelers whose instances are not the store's proposals (or whose semantic map is not the union of its
    instances, e.g. the ``cam`` baselines): ``proposals`` holds the image's own instance masks and boxes, and
    ``index`` then refers to it instead of the proposal store; ``semantic`` int [H, W] (0..K) is written as
    the image's PNG instead of the union of its kept instances. Both default to None: the store, the union.
    """

    index: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    rows: np.ndarray | None = None
    proposals: ImageProposals | None = None
    semantic: np.ndarray | None = None


PerImage = Mapping[str, ImageLabels | tuple] | Callable[[str, Callable[[], ImageProposals]], ImageLabels | tuple | None]


def check_palette(classes: Sequence[str], palette_pngs: bool, where: object) -> None:
    """Refuse palette PNGs when the classes (incl. background) do not fit 8 bits with 255 reserved."""
    if palette_pngs and len(classes) > IGNORE:
        raise LiidError(f"{where}: {len(classes)} classes do not fit a palette PNG (at most {IGNORE}); "
                        f"pass --no-palette-pngs")


def proposal_entries(proposals: str | os.PathLike, image_ids: Sequence[str], source: str,
                     listing: str) -> list[dict]:
    """The proposal-store index entries of ``image_ids``, in that order.

    ``source`` names what listed the images in the "missing" message (``"the feature store X"``,
    ``"the dataset Y"``); ``listing`` is the file named when an id is listed twice.
    """
    index = read_proposal_index(proposals)
    by_id = {e["id"]: e for e in index}
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise LiidError(f"{proposals}/index.json: image {missing[0]!r} of {source} is not in the proposal "
                        f"store ({len(missing)} missing)")
    if len(set(image_ids)) != len(image_ids):
        seen: set[str] = set()
        dup = next(i for i in image_ids if i in seen or seen.add(i))
        raise LiidError(f"{listing}: image {dup!r} is listed twice")
    return [by_id[i] for i in image_ids]


def export_pseudo_labels(labels: np.ndarray, store: FeatureStore, proposals: str | os.PathLike,
                         out: str | os.PathLike, nms_iou: float = 0.4, use_probs: bool = True,
                         palette_pngs: bool = True, overwrite: bool = False, progress: bool = True,
                         labels_name: str = "labels.npy", inputs: dict | None = None) -> dict:
    """Write ``out/instances.json``, ``out/semantic/<image id>.png`` and ``out/export.json``.

    ``labels``: int [N], one label per feature-store row (0 = background/noise). ``store``: the feature
    store (``proposal_image``, ``proposal_index``, ``classes``, ``probs``). ``proposals``: the proposal
    store directory. The exported images are the feature store's images, in its order. Proposals with an
    empty mask are dropped (counted in ``dropped_empty``). Returns the summary written to ``export.json``.
    A thin layer over ``export_labeled``: it validates the feature store and hands it the rows of each image.
    """
    out = check_output(out, overwrite)
    proposals = Path(proposals)
    labels = check_labels(labels, store, labels_name)
    classes = list(store.classes)
    check_palette(classes, palette_pngs, store.path)
    entries = proposal_entries(proposals, list(store.images), f"the feature store {store.path or ''}",
                               f"{store.path}/store.json")
    img_of = np.asarray(store.proposal_image, dtype=np.int64)
    idx_of = np.asarray(store.proposal_index, dtype=np.int64)
    key = img_of * (int(idx_of.max()) + 1) + idx_of
    uniq, first = np.unique(key, return_index=True)
    if len(uniq) != len(key):
        dup = np.setdiff1d(np.arange(len(key)), first)[0]
        raise LiidError(f"{store.path}/proposal_index.npy: row {int(dup)} repeats proposal "
                        f"{int(idx_of[dup])} of image {store.images[img_of[dup]]!r}")
    probs = np.asarray(store.probs) if use_probs else None

    order = np.argsort(img_of, kind="stable")
    bounds = np.searchsorted(img_of[order], np.arange(len(entries) + 1))
    position = {e["id"]: i for i, e in enumerate(entries)}

    # a label that is not one of the proposal's image labels (possible when the graph let every node take every
    # label, eq. 10 as written) is noise, as background is
    allowed = store.allowed_labels()
    off_image = ~allowed[np.arange(len(labels)), labels]
    labels = np.where(off_image, 0, labels)

    def rows_of(image_id: str, _load: Callable[[], ImageProposals]) -> ImageLabels | None:
        i = position[image_id]
        rows = order[bounds[i]:bounds[i + 1]]
        if len(rows) == 0:
            return None
        lab = labels[rows]
        score = None if probs is None else np.asarray(probs[rows, lab], dtype=np.float32)
        return ImageLabels(idx_of[rows], lab, score, rows)

    return export_labeled(
        entries, classes, proposals, rows_of, out, nms_iou=nms_iou, palette_pngs=palette_pngs,
        overwrite=overwrite, progress=progress, score_name="prob" if probs is not None else "proposal",
        row_name="feature-store row", num_proposals=int(len(labels)),
        inputs=inputs or {"features": str(store.path), "proposals": str(proposals)},
        extra_counts={"dropped_not_image_label": int(off_image.sum())})


def export_labeled(entries: Sequence[dict], classes: Sequence[str], proposals: str | os.PathLike | None,
                   per_image: PerImage, out: str | os.PathLike, nms_iou: float = 0.4, palette_pngs: bool = True,
                   overwrite: bool = False, progress: bool = True, score_name: str = "prob",
                   row_name: str = "entry", num_proposals: int | None = None, inputs: dict | None = None,
                   description: str = "LIID pseudo instances (liid export)", write_instances: bool = True,
                   extra_counts: dict | None = None) -> dict:
    """The export itself, for any labeler: labeled proposals per image → ``out/instances.json``,
    ``out/semantic/<image id>.png`` and ``out/export.json``; returns the ``export.json`` summary.

    ``write_instances=False`` is for the semantic-only labelers (OAA, DSRG, ...): no ``instances.json`` is
    written (an empty one would read as "no objects" to a Mask R-CNN trainer); each image's labels must then
    bring their ``semantic`` map and no instances.

    ``entries``: proposal-store index entries of the exported images, in output order (``proposal_entries``).
    ``classes``: ``["background", 1..K names]``. ``per_image``: image id → ``ImageLabels`` (or a tuple
    ``(index, labels, scores)``), as a mapping (an absent id: nothing labeled) or a function
    ``(image_id, load) -> ImageLabels | None`` where ``load()`` returns the image's ``ImageProposals``
    (read once, cached; never read when the image has nothing labeled). Per image: background (label 0) and
    empty masks are dropped, per-class NMS at ``nms_iou`` on the proposal boxes by score, annotations by
    decreasing score. ``score_name`` is recorded as ``config.score``; ``num_proposals`` (default: the
    number of labeled entries) as ``proposals``. ``proposals`` may be None when every image's labels bring
    their own (``ImageLabels.proposals``); ``entries`` then need no ``file``.
    """
    out = check_output(out, overwrite)
    proposals = None if proposals is None else Path(proposals)
    classes = list(classes)
    check_palette(classes, palette_pngs, proposals if proposals is not None else out)
    coco_ids, id_rule = coco_image_ids(list(entries))
    images, annotations = [], []
    counts = {"dropped_background": 0, "dropped_empty": 0, "suppressed_nms": 0}
    per_class = np.zeros(len(classes), dtype=np.int64)
    total = 0
    with atomic_dir(out, overwrite=overwrite) as tmp:
        if palette_pngs:
            (tmp / "semantic").mkdir()
        for i in progress_bar(range(len(entries)), desc="export", unit="img", enabled=progress):
            e, cid = entries[i], coco_ids[i]
            h, w = e["height"], e["width"]
            images.append({"id": cid, "file_name": e["file_name"], "height": h, "width": w})
            load = functools.cache(functools.partial(_read_store_image, proposals, e))
            got = per_image.get(e["id"]) if isinstance(per_image, Mapping) else per_image(e["id"], load)
            where = f"labels of image {e['id']!r}"
            item = _image_labels(got, len(classes), where, (h, w))
            kept: list[tuple[int, dict]] = []
            if item is not None and len(item.index):
                total += len(item.index)
                own = item.proposals is not None
                kept = _image_instances(item.proposals if own else load(), item, nms_iou, counts,
                                        where if own else str(proposals / e["file"]), row_name)
            for lab, ann in kept:
                per_class[lab] += 1
                annotations.append({"id": len(annotations) + 1, "image_id": cid, **ann})
            if not write_instances and (item is None or item.semantic is None or len(item.index)):
                raise LiidError(f"{where}: a semantic-only export takes a semantic map and no instances")
            if palette_pngs and item is not None and item.semantic is not None:
                write_palette_png(tmp / "semantic" / f"{e['id']}.png", item.semantic)
            elif palette_pngs:
                masks = np.zeros((len(kept), h, w), dtype=bool)
                for j, (_, a) in enumerate(kept):
                    masks[j] = mask_util.decode(_bytes_rle(a["segmentation"])).astype(bool)
                sem = paint_semantic(h, w, masks, np.array([lab for lab, _ in kept], dtype=np.int64),
                                     np.array([a["score"] for _, a in kept], dtype=np.float64))
                write_palette_png(tmp / "semantic" / f"{e['id']}.png", sem)
        coco = {
            "info": {"description": description, "version": str(VERSION)},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": classes[k], "supercategory": "object"}
                           for k in range(1, len(classes))],
        }
        if write_instances:
            with open(tmp / "instances.json", "w") as f:
                json.dump(coco, f, separators=(",", ":"))
        summary = {
            "format": FORMAT, "version": VERSION,
            "images": len(images), "proposals": int(total if num_proposals is None else num_proposals),
            "instances": len(annotations),
            "instances_json": bool(write_instances),
            **counts,
            **(extra_counts or {}),
            "per_class": {classes[k]: int(per_class[k]) for k in range(1, len(classes))},
            "config": {"nms_iou": float(nms_iou), "nms": "per-class (torchvision.ops.batched_nms)",
                       "score": score_name, "palette_pngs": bool(palette_pngs), "image_ids": id_rule},
            "inputs": inputs or {"proposals": str(proposals)},
        }
        write_json(tmp / "export.json", summary)
    return summary


def _read_store_image(proposals: Path | None, entry: dict) -> ImageProposals:
    """One image's proposals from the store (``export_labeled``'s ``load``)."""
    if proposals is None:
        raise LiidError(f"image {entry['id']!r}: labels refer to the proposal store, but none was given")
    return read_image_proposals(proposals, entry)


def _image_labels(got: object, k1: int, where: str, size: tuple[int, int] | None = None) -> ImageLabels | None:
    """``per_image``'s answer for one image, validated: equal lengths, integer labels in ``[0, k1)``; its own
    proposals and semantic map (if any) of the image's ``size`` (H, W), the map's classes in ``[0, k1)``."""
    if got is None:
        return None
    item = got if isinstance(got, ImageLabels) else ImageLabels(*got)
    index = np.asarray(item.index).reshape(-1)
    labels = np.asarray(item.labels).reshape(-1)
    scores = None if item.scores is None else np.asarray(item.scores, dtype=np.float32).reshape(-1)
    rows = np.arange(len(index)) if item.rows is None else np.asarray(item.rows).reshape(-1)
    if len(index) and not (np.issubdtype(index.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)):
        raise LiidError(f"{where}: proposal indices and labels must be integers")
    if not len(index) == len(labels) == len(rows) or (scores is not None and len(scores) != len(index)):
        raise LiidError(f"{where}: {len(index)} proposal indices, {len(labels)} labels"
                        + ("" if scores is None else f", {len(scores)} scores"))
    bad = (labels < 0) | (labels >= k1) | (index < 0)
    if bad.any():
        j = int(np.argmax(bad))
        raise LiidError(f"{where}: entry {j}: proposal {int(index[j])} with label {int(labels[j])} "
                        f"(labels are 0..{k1 - 1}, indices >= 0)")
    own, sem = item.proposals, item.semantic
    if own is not None and size is not None and (own.height, own.width) != tuple(size):
        raise LiidError(f"{where}: its instances are {own.height}x{own.width}, the image {size[0]}x{size[1]}")
    if sem is not None:
        sem = np.asarray(sem)
        if size is not None and sem.shape != tuple(size):
            raise LiidError(f"{where}: semantic map of shape {sem.shape}, the image is {size[0]}x{size[1]}")
        if not np.issubdtype(sem.dtype, np.integer) or (sem.size and (sem.min() < 0 or sem.max() >= k1)):
            raise LiidError(f"{where}: semantic map must hold integer classes 0..{k1 - 1}")
    return ImageLabels(index.astype(np.int64), labels.astype(np.int64), scores, rows, own, sem)


def _bytes_rle(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}


def _image_instances(props: ImageProposals, item: ImageLabels, nms_iou: float, counts: dict, where: str,
                     row_name: str) -> list[tuple[int, dict]]:
    """One image: drop background and empty masks, per-class NMS; (label, annotation body) by score."""
    rows, pidx, lab, given = item.rows, item.index, item.labels, item.scores
    if pidx.max() >= len(props):
        j = int(np.argmax(pidx >= len(props)))
        raise LiidError(f"{where}: {row_name} {int(rows[j])} names proposal {int(pidx[j])}, "
                        f"but the image has {len(props)} proposals")
    fg = lab > 0
    counts["dropped_background"] += int((~fg).sum())
    rows, pidx, lab = rows[fg], pidx[fg], lab[fg]
    given = None if given is None else given[fg]
    if len(rows) == 0:
        return []
    rles = [_bytes_rle(props.rles[p]) for p in pidx]
    area = rle_areas(rles)  # not mask_util.area: it overflows past 255 RLEs under NumPy 2
    nonempty = area > 0
    counts["dropped_empty"] += int((~nonempty).sum())
    rows, pidx, lab, area = rows[nonempty], pidx[nonempty], lab[nonempty], area[nonempty]
    given = None if given is None else given[nonempty]
    rles = [r for r, ok in zip(rles, nonempty, strict=True) if ok]
    if len(rows) == 0:
        return []
    score = np.asarray(given if given is not None else props.scores[pidx], dtype=np.float32)
    keep = nms_per_class(props.boxes[pidx], score, lab, nms_iou)
    counts["suppressed_nms"] += len(rows) - len(keep)
    bbox = mask_util.toBbox([rles[k] for k in keep]).reshape(-1, 4) if len(keep) else np.zeros((0, 4))
    result = []
    for n, k in enumerate(keep):
        result.append((int(lab[k]), {
            "category_id": int(lab[k]),
            "segmentation": {"size": [int(props.height), int(props.width)],
                             "counts": rles[k]["counts"].decode("ascii")},
            "area": float(area[k]),
            "bbox": [float(v) for v in bbox[n]],
            "iscrowd": 0,
            "score": float(score[k]),
        }))
    return result
