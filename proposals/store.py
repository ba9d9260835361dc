"""The proposal store: segment proposals per image, written by proposal generation/import (docs/FORMATS.md).

A directory with ``index.json`` (the images, in order) and one JSON file per image under ``images/``
holding that image's proposals: boxes (XYXY float pixels, ``x2``/``y2`` exclusive), scores and COCO RLE
masks (``counts`` as an ASCII string). A proposal's index is its position in those lists; the feature
store refers to proposals by ``(image index, proposal index)``. A third party can write one with
``json`` + ``pycocotools.mask`` alone.

Per-image files are read lazily (``read_image_proposals``), so a COCO-scale store is never held in memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from liid.atomic import atomic_dir, read_json, write_json
from liid.errors import LiidError

FORMAT = "liid.proposal_store"
VERSION = 1


@dataclass
class ImageProposals:
    """The proposals of one image; index ``j`` in each field is proposal ``j``."""

    boxes: np.ndarray  # [M, 4] float32, XYXY pixels, x2/y2 exclusive
    scores: np.ndarray  # [M] float32
    rles: list[dict]  # M COCO RLEs {"size": [H, W], "counts": str}
    height: int
    width: int

    def __len__(self) -> int:
        return len(self.rles)

    def decode(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Masks as bool [m, H, W] (all proposals, or those at ``indices``)."""
        rles = self.rles if indices is None else [self.rles[int(i)] for i in indices]
        if not rles:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return mask_util.decode([_coco_rle(r) for r in rles]).transpose(2, 0, 1).astype(bool)


def _coco_rle(rle: dict) -> dict:
    """The form pycocotools' C functions take: ``counts`` as bytes."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(rle["size"]), "counts": counts}


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """Pixel counts of COCO RLEs, int64 [n].

    Chunked by 255: pycocotools 2.0.11 ``mask.area`` overflows a uint8 for lists of more than 255 RLEs under
    NumPy 2 ("Python integer 256 out of bounds for uint8").
    """
    coco = [_coco_rle(r) for r in rles]
    parts = [np.asarray(mask_util.area(coco[i:i + 255]), dtype=np.int64).reshape(-1) for i in range(0, len(coco), 255)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def masks_to_proposals(masks: np.ndarray, scores: np.ndarray) -> ImageProposals:
    """Proposals from bool masks [M, H, W] and scores [M]: COCO RLEs and XYXY (exclusive) boxes.

    A mask occupying columns 3..7 gets ``x1 = 3, x2 = 8`` (pycocotools' ``toBbox`` gives XYWH with
    ``w`` = number of columns, so ``x2 = x + w``). An empty mask gets the box ``[0, 0, 0, 0]``.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise LiidError(f"masks: expected a 3-d array [M, H, W], got shape {masks.shape}")
    m, h, w = masks.shape
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if scores.shape[0] != m:
        raise LiidError(f"masks_to_proposals: {m} masks but {scores.shape[0]} scores")
    if m == 0:
        return ImageProposals(np.zeros((0, 4), np.float32), scores, [], h, w)
    encoded = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return rles_to_proposals(encoded, scores, h, w)


def rles_to_proposals(rles: Sequence[dict], scores: np.ndarray, height: int, width: int) -> ImageProposals:
    """Proposals from pycocotools RLEs (``counts`` bytes or str): XYXY (exclusive) boxes from ``toBbox``,
    ``counts`` stored as str."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    coco = [_coco_rle(r) for r in rles]
    if not coco:
        return ImageProposals(np.zeros((0, 4), np.float32), scores, [], height, width)
    xywh = mask_util.toBbox(coco).astype(np.float64).reshape(len(coco), 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    out = [{"size": [height, width], "counts": r["counts"].decode("ascii")} for r in coco]
    return ImageProposals(boxes, scores, out, height, width)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def validate_image_proposals(props: ImageProposals, where: str) -> None:
    """Check one image's proposals; ``where`` names the file in messages."""
    boxes = np.asarray(props.boxes)
    scores = np.asarray(props.scores)
    m = len(props.rles)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise LiidError(f"{where}: 'boxes' must be a list of [x1, y1, x2, y2], got shape {boxes.shape}")
    if scores.ndim != 1:
        raise LiidError(f"{where}: 'scores' must be a flat list, got shape {scores.shape}")
    if not (boxes.shape[0] == scores.shape[0] == m):
        raise LiidError(f"{where}: lengths differ: {boxes.shape[0]} boxes, {scores.shape[0]} scores, "
                        f"{m} masks")
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        raise LiidError(f"{where}: proposal {int(np.argmax(bad))} has a NaN or inf box")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise LiidError(f"{where}: proposal {int(np.argmax(bad))} has a NaN or inf score")
    size = [props.height, props.width]
    for j, rle in enumerate(props.rles):
        if not isinstance(rle, dict) or not isinstance(rle.get("counts"), str) or "size" not in rle:
            raise LiidError(f"{where}: proposal {j}: mask must be {{'size': [H, W], 'counts': str}}")
        if list(rle["size"]) != size:
            raise LiidError(f"{where}: proposal {j}: mask size {list(rle['size'])} does not match the "
                            f"image size {size}")


def _check_id(image_id, where: str) -> str:
    if not isinstance(image_id, str) or not image_id:
        raise LiidError(f"{where}: image id {image_id!r} must be a non-empty string")
    if "/" in image_id or "\\" in image_id or image_id.startswith(".") or "\0" in image_id:
        raise LiidError(f"{where}: image id {image_id!r} cannot be a file name (no '/', '\\', leading '.')")
    return image_id


def _check_entry(entry, k: int, where: str) -> dict:
    if not isinstance(entry, dict):
        raise LiidError(f"{where}: images[{k}] is not an object")
    _check_id(entry.get("id"), f"{where}: images[{k}]")
    for key in ("height", "width"):
        if not _positive_int(entry.get(key)):
            raise LiidError(f"{where}: image {entry['id']!r}: {key!r} must be a positive integer")
    if not isinstance(entry.get("file_name"), str):
        raise LiidError(f"{where}: image {entry['id']!r}: 'file_name' must be a string")
    f = entry.get("file")
    if not isinstance(f, str) or not f or os.path.isabs(f) or ".." in Path(f).parts:
        raise LiidError(f"{where}: image {entry['id']!r}: 'file' must be a relative path inside the store")
    coco_id = entry.get("coco_id", 0)
    if not isinstance(coco_id, int) or isinstance(coco_id, bool):
        raise LiidError(f"{where}: image {entry['id']!r}: 'coco_id' must be an integer")
    return entry


def read_proposal_index(path: str | os.PathLike) -> list[dict]:
    """Read and validate ``index.json``; returns the image entries in image order."""
    path = Path(path)
    if not path.is_dir():
        raise LiidError(f"{path}: proposal store directory not found")
    where = str(path / "index.json")
    meta = read_json(path / "index.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise LiidError(f"{where}: not a proposal store (format {fmt!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise LiidError(f"{where}: version {meta.get('version')!r} is not one this toolkit reads "
                        f"(<= {VERSION})")
    images = meta.get("images")
    if not isinstance(images, list):
        raise LiidError(f"{where}: missing list 'images'")
    seen: set[str] = set()
    for k, entry in enumerate(images):
        _check_entry(entry, k, where)
        if entry["id"] in seen:
            raise LiidError(f"{where}: image id {entry['id']!r} appears twice")
        seen.add(entry["id"])
    return images


def read_image_proposals(store_path: str | os.PathLike, image_entry: dict) -> ImageProposals:
    """Load and validate one image's proposals (the file named by its index entry)."""
    file = Path(store_path) / image_entry["file"]
    where = str(file)
    d = read_json(file)
    if not isinstance(d, dict):
        raise LiidError(f"{where}: expected a JSON object")
    if d.get("image_id") != image_entry["id"]:
        raise LiidError(f"{where}: image_id {d.get('image_id')!r} does not match the index entry "
                        f"{image_entry['id']!r}")
    if d.get("height") != image_entry["height"] or d.get("width") != image_entry["width"]:
        raise LiidError(f"{where}: size {d.get('height')}x{d.get('width')} does not match the index "
                        f"({image_entry['height']}x{image_entry['width']})")
    for key in ("boxes", "scores", "masks"):
        if not isinstance(d.get(key), list):
            raise LiidError(f"{where}: missing list {key!r}")
    for j, b in enumerate(d["boxes"]):
        if not isinstance(b, list) or len(b) != 4:
            raise LiidError(f"{where}: proposal {j}: box must be [x1, y1, x2, y2]")
    try:
        boxes = np.asarray(d["boxes"], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(d["scores"], dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise LiidError(f"{where}: 'boxes' and 'scores' must hold numbers ({e})") from None
    props = ImageProposals(boxes, scores, d["masks"], int(d["height"]), int(d["width"]))
    validate_image_proposals(props, where)
    return props


def proposal_json(image_id: str, props: ImageProposals, **extra) -> dict:
    """One image's proposals in the store's per-image layout (docs/FORMATS.md), plus ``extra`` keys."""
    return {
        "image_id": image_id, "height": props.height, "width": props.width,
        "boxes": [[float(v) for v in b] for b in np.asarray(props.boxes, dtype=np.float32).reshape(-1, 4)],
        "scores": [float(s) for s in np.asarray(props.scores, dtype=np.float32)],
        "masks": [{"size": [int(s) for s in r["size"]], "counts": r["counts"]} for r in props.rles],
        **extra,
    }


def write_proposal_store(path: str | os.PathLike, images_meta: Sequence[dict],
                         per_image_proposals: Iterable[ImageProposals], overwrite: bool = False,
                         meta: dict | None = None) -> Path:
    """Write a proposal store atomically.

    ``images_meta``: one dict per image, ``{"id": str, "file_name": str, "height": int, "width": int}``
    plus an optional integer ``"coco_id"``. ``per_image_proposals`` yields one ``ImageProposals`` per
    entry of ``images_meta``, in the same order (a generator is fine: images are written one at a time).
    ``meta`` (JSON-serialisable: how the store was made) is kept under ``"meta"`` in ``index.json``;
    readers of the store ignore it. It is serialised after the last image is written, so the generator may
    fill in counts as it goes.
    """
    path = Path(path)
    entries = []
    seen: set[str] = set()
    for k, m in enumerate(images_meta):
        entry = {"id": m.get("id"), "file_name": m.get("file_name"), "height": m.get("height"),
                 "width": m.get("width"), "file": f"images/{m.get('id')}.json"}
        if "coco_id" in m:
            entry["coco_id"] = m["coco_id"]
        _check_entry(entry, k, "images_meta")
        if entry["id"] in seen:
            raise LiidError(f"images_meta: image id {entry['id']!r} appears twice")
        seen.add(entry["id"])
        entries.append(entry)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        it = iter(per_image_proposals)
        for entry in entries:
            props = next(it, None)
            where = f"{path / entry['file']}"
            if props is None:
                raise LiidError(f"{where}: no proposals given for image {entry['id']!r} "
                                f"({len(entries)} images in images_meta)")
            if (props.height, props.width) != (entry["height"], entry["width"]):
                raise LiidError(f"{where}: proposals are for a {props.height}x{props.width} image, "
                                f"the image is {entry['height']}x{entry['width']}")
            validate_image_proposals(props, where)
            with open(tmp / entry["file"], "w") as f:
                json.dump(proposal_json(entry["id"], props), f, separators=(",", ":"))
        if next(it, None) is not None:
            raise LiidError(f"{path}: more proposal lists than the {len(entries)} images in images_meta")
        index = {"format": FORMAT, "version": VERSION, "images": entries}
        if meta is not None:
            index["meta"] = meta
        write_json(tmp / "index.json", index)
    return path


def read_proposal_meta(path: str | os.PathLike) -> dict:
    """The ``"meta"`` object of a store's ``index.json`` (how it was made), or ``{}`` when it has none."""
    where = Path(path) / "index.json"
    index = read_json(where)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise LiidError(f"{where}: not a proposal store")
    meta = index.get("meta")
    return meta if isinstance(meta, dict) else {}
