"""OAA (paper 003): online accumulated attention, the cumulative maps kept during classifier training.

At every epoch t, each training image's attention map ``A_t`` of each of its classes (the CAM, in [0, 1])
is fused into that image's cumulative map: ``M_t = max(M_{t-1}, A_t)`` element-wise (paper 003 eq. 1), or,
the variant the paper compares with, the running average of the maps fused so far. A map is fused only
when the classifier recognises the class on that image: its score beats the score of every class the
image does not have (an early, wrong attention map would otherwise stay in the max for good).

Pure numpy on arrays of one image, so the rule is testable by hand; the training hook that calls it once
per image and epoch, and stores the maps, sits in the trainer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from liid.errors import LiidError

FUSIONS = ("max", "average")


def class_wins(scores: np.ndarray, present: Sequence[int] | np.ndarray) -> np.ndarray:
    """bool [K]: class k+1 is present and its score is higher than every absent class's score (all present
    classes win when the image has every class). ``scores``: [K] classifier scores (logits or probabilities)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = len(scores)
    mask = np.zeros(k, dtype=bool)
    idx = np.asarray(present, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 1 or idx.max() > k):
        raise LiidError(f"present classes {idx.tolist()}: expected indices in 1..{k}")
    mask[idx - 1] = True
    best_absent = scores[~mask].max() if (~mask).any() else -np.inf
    return mask & (scores > best_absent)


def accumulate(cumulative: np.ndarray | None, attention: np.ndarray, scores: np.ndarray,
               present: Sequence[int] | np.ndarray, fusion: str = "max",
               counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fuse one epoch's attention maps of one image into its cumulative maps; returns (maps, counts).

    ``cumulative``: float [K, H, W] (None before the first epoch: all zero); ``attention``: float [K, H, W]
    in [0, 1]; ``counts``: int [K], how many maps each class has fused so far (the average's weight).
    Only the classes ``class_wins`` names change: ``max`` takes the element-wise maximum, ``average`` the
    running mean ``(n·M + A) / (n + 1)``. The inputs are not modified.
    """
    if fusion not in FUSIONS:
        raise LiidError(f"fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    att = np.asarray(attention, dtype=np.float32)
    if att.ndim != 3:
        raise LiidError(f"attention: expected [K, H, W], got shape {att.shape}")
    cum = np.zeros_like(att) if cumulative is None else np.array(cumulative, dtype=np.float32)
    if cum.shape != att.shape:
        raise LiidError(f"cumulative maps {cum.shape} and attention maps {att.shape} differ in shape")
    n = np.zeros(len(att), dtype=np.int64) if counts is None else np.array(counts, dtype=np.int64)
    for j in np.flatnonzero(class_wins(scores, present)):
        if fusion == "max":
            cum[j] = np.maximum(cum[j], att[j])
        else:
            cum[j] = (n[j] * cum[j] + att[j]) / (n[j] + 1)
        n[j] += 1
    return cum, n
