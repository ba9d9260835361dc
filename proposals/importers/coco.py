"""COCO results-format JSON (detector / proposal-generator output for many images in one file).

A list of ``{"image_id": int, "segmentation": RLE or polygons, "score": float, ...}``; ``category_id`` and
``bbox`` are ignored (proposals are class-agnostic; boxes are recomputed from the masks). RLEs may be
compressed (``counts`` a string) or uncompressed (``counts`` a list); polygons are rasterised with
``frPyObjects`` at the image size. Errors name the file and the entry's index in the list.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
from pycocotools import mask as mask_util

from liid.atomic import read_json
from liid.errors import LiidError
from liid.proposals.importers._common import (
    check_image_size,
    check_max_proposals,
    check_rle_counts,
    finish,
    rle_counts_from_string,
)
from liid.proposals.store import ImageProposals


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _segmentation(seg, height: int, width: int, at: str) -> dict:
    """One entry's mask as a pycocotools RLE (``counts`` bytes), validated against the image size."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
            raise LiidError(f"{at}: RLE 'size' must be [H, W], got {size!r}")
        if size != [height, width]:
            raise LiidError(f"{at}: RLE size {size} does not match the image size [{height}, {width}]")
        if isinstance(counts, list):  # uncompressed
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
                raise LiidError(f"{at}: uncompressed RLE 'counts' must be a list of integers")
            why = check_rle_counts(np.asarray(counts, dtype=np.int64), height, width)
            if why:
                raise LiidError(f"{at}: {why}")
            return mask_util.frPyObjects(seg, height, width)
        if isinstance(counts, (str, bytes)):
            why = check_rle_counts(rle_counts_from_string(counts), height, width)
            if why:
                raise LiidError(f"{at}: {why}")
            return {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        raise LiidError(f"{at}: RLE 'counts' must be a string or a list of integers")
    if isinstance(seg, list) and seg:
        for p, poly in enumerate(seg):
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(_is_number(v) and math.isfinite(v) for v in poly)):
                raise LiidError(f"{at}: polygon {p} must be a flat list [x1, y1, x2, y2, ...] of at least 3 "
                                f"finite points")
        # Every polygon has >= 6 numbers, so frPyObjects never takes one for a 4-number box.
        return mask_util.merge(mask_util.frPyObjects(seg, height, width), intersect=0)
    raise LiidError(f"{at}: 'segmentation' must be an RLE object or a non-empty list of polygons")


def read_coco_results(path: str | os.PathLike, sizes: Mapping[int, tuple[int, int]],
                      max_per_image: int | None = None) -> dict[int, ImageProposals]:
    """Import a COCO results file: ``{image_id: ImageProposals}`` sorted by score descending per image.

    ``sizes`` maps each COCO image id to its ``(height, width)``; an entry for any other id is an error.
    Images with no entry are absent from the result. Ties keep file order; ``max_per_image`` keeps the
    best n of each image. Empty masks are kept (a detector may output them); their box is ``[0, 0, 0, 0]``.
    """
    where = str(path)
    max_per_image = check_max_proposals(max_per_image)
    checked = {k: check_image_size(h, w, f"{where}: image {k}") for k, (h, w) in sizes.items()}
    data = read_json(path)
    if not isinstance(data, list):
        raise LiidError(f"{where}: expected a JSON list of COCO results, got {type(data).__name__}")
    if not data:
        raise LiidError(f"{where}: no proposals")
    per_image: dict[int, tuple[list[dict], list[float]]] = {}
    for k, entry in enumerate(data):
        at = f"{where}: entry {k}"
        if not isinstance(entry, dict):
            raise LiidError(f"{at}: expected an object with 'image_id', 'segmentation', 'score'")
        image_id = entry.get("image_id")
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise LiidError(f"{at}: 'image_id' must be an integer, got {image_id!r}")
        if image_id not in checked:
            raise LiidError(f"{at}: image_id {image_id} is not one of the {len(checked)} images being imported")
        score = entry.get("score")
        if not _is_number(score) or not math.isfinite(score):
            raise LiidError(f"{at}: 'score' must be a finite number, got {score!r}")
        if "segmentation" not in entry:
            raise LiidError(f"{at}: no 'segmentation' (box-only results cannot be imported as proposals)")
        height, width = checked[image_id]
        rle = _segmentation(entry["segmentation"], height, width, f"{at} (image_id {image_id})")
        rles, scores = per_image.setdefault(image_id, ([], []))
        rles.append(rle)
        scores.append(float(score))
    out = {}
    for image_id, (rles, scores) in per_image.items():
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:max_per_image]
        height, width = checked[image_id]
        out[image_id] = finish([rles[i] for i in order], np.asarray(scores)[order], height, width,
                               f"{where}: image_id {image_id}")
    return out
