"""Keep the top N proposals of an image: drop tiny and near-whole-image regions, suppress near-duplicate masks
(greedy NMS on mask IoU), keep by score. LIID keeps 20 per image on VOC and 40 on COCO out of 500.

Greedy NMS visits proposals best first, so the first N kept are the same whether one stops at N or filters
everything and truncates: a store filtered without ``top`` holds every shorter top-N as a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.store import ImageProposals, _coco_rle, rle_areas


@dataclass(frozen=True)
class FilterConfig:
    """Defaults measured on coco-mini val and the synthetic set (BENCHMARKS.md)."""

    top: int | None = None  # keep at most this many; None keeps all that pass
    min_area: float = 0.001  # fraction of the image: smaller masks are dropped
    max_area: float = 0.9  # fraction of the image: larger masks (near-whole image) are dropped
    nms_iou: float = 0.8  # a mask overlapping a better-scored kept mask by more than this is dropped

    def validate(self) -> None:
        if self.top is not None and self.top < 1:
            raise LiidError(f"filter: top must be at least 1, got {self.top}")
        if not 0.0 <= self.min_area < self.max_area <= 1.0:
            raise LiidError(f"filter: need 0 <= min_area < max_area <= 1, got {self.min_area}, {self.max_area}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise LiidError(f"filter: nms_iou must be in (0, 1], got {self.nms_iou}")


def filter_indices(rles: list[dict], scores: np.ndarray, height: int, width: int,
                   config: FilterConfig = FilterConfig()) -> np.ndarray:
    """Indices of the kept proposals, best score first (ties keep the input order)."""
    config.validate()
    if not rles:
        return np.zeros(0, dtype=np.int64)
    coco = [_coco_rle(r) for r in rles]
    area = rle_areas(coco).astype(np.float64) / float(height * width)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    order = order[(area[order] >= config.min_area) & (area[order] <= config.max_area)]
    limit = len(order) if config.top is None else config.top
    kept: list[int] = []
    for i in order:
        if len(kept) >= limit:
            break
        if kept and config.nms_iou < 1.0:
            iou = mask_util.iou([coco[j] for j in kept], [coco[i]], [0])
            if np.asarray(iou).max() > config.nms_iou:
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


def select(props: ImageProposals, indices: np.ndarray) -> ImageProposals:
    """The proposals at ``indices``, in that order."""
    idx = np.asarray(indices, dtype=np.int64)
    return ImageProposals(np.asarray(props.boxes)[idx].reshape(-1, 4), np.asarray(props.scores)[idx],
                          [props.rles[int(i)] for i in idx], props.height, props.width)


def filter_proposals(props: ImageProposals, config: FilterConfig = FilterConfig()) -> ImageProposals:
    """``props`` reduced by ``filter_indices`` (best first)."""
    return select(props, filter_indices(props.rles, props.scores, props.height, props.width, config))
