"""Proposal quality against ground-truth instances: ABO (average best overlap, mask IoU) and recall at IoU
0.5 / 0.7, for the top-N proposals (by score) and for all of them, per class and overall.

ABO is the mean, over ground-truth instances, of the best mask IoU any of the proposals reaches; MABO is
the mean of the per-class ABOs (Uijlings et al.). Crowd instances are not counted, as in COCO.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.store import _coco_rle

THRESHOLDS = (0.5, 0.7)


def check_tops(tops: Sequence[int | None]) -> tuple[int | None, ...]:
    """``tops`` as a tuple; each must be a positive int or None (= all proposals)."""
    tops = tuple(tops)
    for t in tops:
        if t is not None and (not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 1):
            raise LiidError(f"proposal evaluation: top-N must be a positive integer or None, got {t!r}")
    return tops


def best_overlaps(proposal_rles: list[dict], scores: np.ndarray, gt_masks: np.ndarray,
                  tops: Sequence[int | None]) -> dict[int | None, np.ndarray]:
    """For each N in ``tops`` (None = all), the best IoU of the top-N proposals (by score, ties in list
    order) with each GT mask, float64 [n]; 0 where there is no proposal."""
    tops = check_tops(tops)
    gt_masks = np.asarray(gt_masks)
    if gt_masks.ndim != 3:
        raise LiidError(f"proposal evaluation: GT masks must be [n, H, W], got shape {gt_masks.shape}")
    n = int(gt_masks.shape[0])
    if len(scores) != len(proposal_rles):
        raise LiidError(f"proposal evaluation: {len(proposal_rles)} masks but {len(scores)} scores")
    if n == 0:
        return {t: np.zeros(0) for t in tops}
    if not proposal_rles:
        return {t: np.zeros(n) for t in tops}
    size = [int(v) for v in gt_masks.shape[1:]]
    for j, r in enumerate(proposal_rles):
        if [int(v) for v in r["size"]] != size:
            raise LiidError(f"proposal evaluation: proposal {j} has size {list(r['size'])}, the GT masks {size}")
    gt = mask_util.encode(np.asfortranarray(gt_masks.transpose(1, 2, 0).astype(np.uint8)))
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    props = [_coco_rle(proposal_rles[int(i)]) for i in order]
    iou = np.asarray(mask_util.iou(props, gt, [0] * n), dtype=np.float64).reshape(len(props), n)
    return {t: iou[: (len(props) if t is None else int(t))].max(axis=0) for t in tops}


@dataclass
class ProposalScores:
    """Accumulates best overlaps over images; ``summary`` gives the numbers."""

    tops: tuple[int | None, ...] = (20, 40, None)
    best: dict = field(default_factory=dict)  # top → list of arrays of best IoUs
    classes: list = field(default_factory=list)  # arrays of GT classes, aligned with best[top]
    counts: list = field(default_factory=list)  # proposals per image

    def __post_init__(self) -> None:
        self.tops = check_tops(self.tops)
        if len(set(self.tops)) != len(self.tops):
            raise LiidError(f"proposal evaluation: repeated top-N in {self.tops}")

    def add(self, proposal_rles: list[dict], scores: np.ndarray, gt_masks: np.ndarray, gt_classes: np.ndarray,
            iscrowd: np.ndarray | None = None) -> None:
        """One image: its proposals (RLEs, scores) and its GT instances (crowd ones are left out)."""
        gt_classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
        keep = np.ones(len(gt_classes), bool) if iscrowd is None else ~np.asarray(iscrowd, bool).reshape(-1)
        if len(keep) != len(gt_classes) or len(gt_masks) != len(gt_classes):
            raise LiidError(f"proposal evaluation: {len(gt_masks)} GT masks, {len(gt_classes)} classes, "
                            f"{len(keep)} crowd flags")
        bo = best_overlaps(proposal_rles, scores, gt_masks[keep], self.tops)
        for t in self.tops:
            self.best.setdefault(t, []).append(bo[t])
        self.classes.append(gt_classes[keep])
        self.counts.append(len(proposal_rles))

    def summary(self, class_names: Sequence[str]) -> dict:
        """Overall and per-class ABO / recall for each top; keys like ``abo_top20``, ``recall50_all``,
        ``mabo_top40`` (mean of the per-class ABOs), and ``per_class`` {class name: {...}}. Recall counts an
        instance whose best IoU is at least the threshold (exactly 0.5 is recalled)."""
        cls = np.concatenate(self.classes) if self.classes else np.zeros(0, np.int64)
        out: dict = {"images": len(self.counts), "instances": int(cls.size),
                     "proposals_per_image": float(np.mean(self.counts)) if self.counts else 0.0}
        per_class: dict[str, dict] = {}
        for t in self.tops:
            name = "all" if t is None else f"top{t}"
            b = np.concatenate(self.best[t]) if self.best.get(t) else np.zeros(0)
            out[f"abo_{name}"] = float(b.mean()) if b.size else 0.0
            for thr in THRESHOLDS:
                out[f"recall{round(thr * 100)}_{name}"] = float((b >= thr).mean()) if b.size else 0.0
            class_abos = []
            for k in np.unique(cls):
                sel = b[cls == k]
                cname = class_names[int(k)] if 0 <= int(k) < len(class_names) else f"class{int(k)}"
                entry = per_class.setdefault(cname, {"instances": int(sel.size)})
                entry[f"abo_{name}"] = float(sel.mean())
                for thr in THRESHOLDS:
                    entry[f"recall{round(thr * 100)}_{name}"] = float((sel >= thr).mean())
                class_abos.append(float(sel.mean()))
            out[f"mabo_{name}"] = float(np.mean(class_abos)) if class_abos else 0.0
        out["per_class"] = per_class
        return out


def format_table(summary: dict, tops: Sequence[int | None]) -> str:
    """A plain-text table: one row per class (in class order) and an overall row; ABO and recall per top."""
    names = ["all" if t is None else f"top{t}" for t in tops]
    cols = [(f"abo_{n}", f"ABO@{n}") for n in names] + [(f"recall50_{n}", f"R50@{n}") for n in names] + \
        [(f"recall70_{n}", f"R70@{n}") for n in names]
    cw = max([9] + [len(label) for _, label in cols])
    width = max([len("overall")] + [len(c) for c in summary["per_class"]])

    def row(name: str, entry: dict) -> str:
        return f"{name:<{width}} {entry['instances']:>6} " + " ".join(f"{entry[k]:>{cw}.3f}" for k, _ in cols)

    head = f"{'class':<{width}} {'inst':>6} " + " ".join(f"{label:>{cw}}" for _, label in cols)
    lines = [head, "-" * len(head)]
    lines += [row(name, entry) for name, entry in summary["per_class"].items()]  # class order
    lines += ["-" * len(head), row("overall", summary)]
    return "\n".join(lines)
