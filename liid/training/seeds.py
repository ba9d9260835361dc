"""DSRG (paper 004, Huang et al., CVPR 2018): seeds from CAMs and saliency, grown by the segmentation network.

Two rules on the arrays of one image, pure numpy/scipy so they are testable by hand; the training loop that
calls them (seeds once, growth every epoch, the balanced seeding loss) is ``liid.training.dsrg``.

* ``initial_seeds`` (section 3.1, "seed generation"): foreground seeds are the pixels of a present class whose
  CAM is in the top ``FG_TOP`` = 20% of its largest value, i.e. ``CAM_k ≥ (1 − 0.2)·max CAM_k`` (the paper:
  "pixels belonging to top 20% of the largest value in the heat map"; SEC's value); background seeds are the
  pixels whose normalised saliency is below ``BG_BELOW`` = 0.06. Everything else is unlabeled (255).
* ``grow_seeds`` (section 3.3, eq. 3 and Algorithm 1, "DSRG(S, H)"): a pixel joins class ``c`` when the
  network's most probable class there (over background and the image's classes) is ``c`` with probability
  above ``θ_c`` (``THETA_B`` = 0.99 for background, ``THETA_F`` = 0.85 for foreground) and it is connected to
  a seed of ``c`` through such pixels. The paper's repeated visiting of neighbours until nothing changes is
  the same as keeping the connected components (8-connectivity, as the reference code's ``CC_labeling_8``)
  of the qualifying pixels that contain a seed, which is how the paper says it computes it.

Label maps are uint8 [H, W]: 0 background, 1..K the classes, 255 (``UNLABELED``) no label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from liid.errors import LiidError

FG_TOP = 0.2  # foreground seeds: CAM within the top 20% of its maximum (CAM ≥ 0.8·max)
BG_BELOW = 0.06  # background seeds: normalised saliency below 0.06
THETA_F = 0.85  # growth into a foreground class: its probability above 0.85
THETA_B = 0.99  # growth into background: its probability above 0.99
UNLABELED = 255
CONNECTIVITY = np.ones((3, 3), dtype=bool)  # 8-connectivity, as the reference implementation


def _present(present: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """``present`` as sorted unique int64 in 1..K; a LiidError naming the bad indices otherwise."""
    p = np.unique(np.asarray(present, dtype=np.int64).reshape(-1))
    if len(p) and (p[0] < 1 or p[-1] > k):
        raise LiidError(f"present classes {p.tolist()}: expected indices in 1..{k}")
    return p


def initial_seeds(cams: np.ndarray, saliency: np.ndarray, present: Sequence[int] | np.ndarray,
                  fg_top: float = FG_TOP, bg_below: float = BG_BELOW) -> np.ndarray:
    """The seed cues of one image (section 3.1): uint8 [H, W], 0 background, 1..K classes, 255 unlabeled.

    ``cams``: float [K, H, W] in [0, 1], row ``k`` = class ``k + 1``; ``saliency``: float [H, W] in [0, 1];
    ``present``: the image's classes (1..K). Only present classes get seeds.

    * Foreground: class ``c`` claims the pixels where ``CAM_c ≥ (1 − fg_top)·max(CAM_c)`` (a class whose CAM
      is zero everywhere claims none). A pixel claimed by several classes goes to the one with the highest
      CAM relative to its own maximum (``CAM_c / max CAM_c``; ties to the lower class index).
    * Background: ``saliency < bg_below``.
    * A pixel that is both a foreground claim and background by saliency is left unlabeled: the two cues
      contradict each other, and seeds are meant to be few but precise (the paper's "high precision").
    """
    cams = np.asarray(cams, dtype=np.float32)
    sal = np.asarray(saliency, dtype=np.float32)
    if cams.ndim != 3:
        raise LiidError(f"cams: expected an array [K, H, W], got shape {list(cams.shape)}")
    if sal.shape != cams.shape[1:]:
        raise LiidError(f"saliency map is {list(sal.shape)}, the CAMs are {list(cams.shape[1:])} (HxW)")
    if not np.isfinite(cams).all() or not np.isfinite(sal).all():
        raise LiidError("cams or saliency: not finite (NaN or infinity)")
    if not 0 < fg_top <= 1 or not 0 <= bg_below <= 1:
        raise LiidError(f"fg_top {fg_top} must be in (0, 1], bg_below {bg_below} in [0, 1]")
    present = _present(present, cams.shape[0])
    seeds = np.full(sal.shape, UNLABELED, dtype=np.uint8)
    best = np.zeros(sal.shape, dtype=np.float32)  # the winning class's CAM relative to its maximum
    for c in present:  # ascending: a later class needs a strictly higher relative CAM to take a pixel
        cam = cams[c - 1]
        peak = float(cam.max())
        if peak <= 0:
            continue
        rel = cam / peak
        claim = (rel >= 1 - fg_top) & (rel > best)
        seeds[claim] = c
        best[claim] = rel[claim]
    bg = sal < bg_below
    seeds[bg & (seeds != UNLABELED)] = UNLABELED
    seeds[bg & (best == 0)] = 0
    return seeds


def check_seeds(seeds: np.ndarray, shape: tuple[int, int], allowed: np.ndarray, what: str = "seeds") -> np.ndarray:
    """``seeds`` as uint8 [H, W] of the given shape whose values are ``allowed`` classes or 255."""
    seeds = np.asarray(seeds)
    if seeds.shape != tuple(shape):
        raise LiidError(f"{what} are {'x'.join(map(str, seeds.shape))}, expected {'x'.join(map(str, shape))} (HxW)")
    bad = ~np.isin(seeds, allowed) & (seeds != UNLABELED)
    if bad.any():
        raise LiidError(f"{what}: value {int(seeds[bad][0])} is neither background, one of the image's classes "
                        f"{[int(c) for c in allowed if c]} nor {UNLABELED}")
    return seeds.astype(np.uint8, copy=False)


def grow_seeds(probs: np.ndarray, seeds: np.ndarray, present: Sequence[int] | np.ndarray,
               theta_f: float = THETA_F, theta_b: float = THETA_B) -> np.ndarray:
    """One region-growing step ``DSRG(S, H)`` (section 3.3): the seeds plus the pixels they grow into.

    ``probs``: float [K+1, H, W], the segmentation network's softmax (row 0 background); ``seeds``: uint8
    [H, W] (0, the present classes, 255); ``present``: the image's classes (1..K).

    Similarity criterion (eq. 3): at an unlabeled pixel, ``c`` = the argmax of ``probs`` over background and
    the present classes (absent classes are ignored, not renormalised away) and ``p`` its probability; the
    pixel qualifies for ``c`` when ``p > θ_b`` (``c`` = background) or ``p > θ_f`` (a foreground class). It
    joins ``c`` when it lies in an 8-connected component of {qualifying pixels of ``c``} ∪ {seeds of ``c``}
    that contains a seed of ``c``: seeds of ``c`` bridge, pixels of other classes block. Seeds never change.
    A θ of 1 or more switches that side's growth off (the paper's θ = ∞ ablation).
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise LiidError(f"probs: expected an array [K+1, H, W], got shape {list(probs.shape)}")
    present = _present(present, probs.shape[0] - 1)
    classes = np.concatenate([[0], present]).astype(np.int64)
    seeds = check_seeds(seeds, probs.shape[1:], classes)
    sel = probs[classes]
    best = sel.argmax(axis=0)
    p = np.take_along_axis(sel, best[None], axis=0)[0]
    winner = classes[best]
    free = seeds == UNLABELED
    grown = seeds.copy()
    for c in classes:
        qualifies = free & (winner == c) & (p > (theta_b if c == 0 else theta_f))
        if not qualifies.any():
            continue
        own = seeds == c
        comp, _ = ndimage.label(qualifies | own, structure=CONNECTIVITY)
        keep = np.unique(comp[own])
        grown[qualifies & np.isin(comp, keep[keep > 0])] = c
    return grown
