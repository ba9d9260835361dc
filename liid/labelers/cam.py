"""``cam``: pseudo-labels straight from a multi-label classifier's class activation maps (LIID Table 9 baselines).

Semantic: each pixel takes the present class with the highest CAM, background where that CAM is weak.
Instances: every connected region of a present class's thresholded CAM is one object, scored by its peak;
its mask is the region's box (``rect``), the ellipse inscribed in that box (``ellipse``), or the segment
proposal whose box overlaps that box most (``proposal``, the paper's "CAM + MCG").

CAMs are float ``[K, H, W]`` in ``[0, 1]`` at image resolution (``liid.training.cams.compute_cams``), row
``k`` being class ``k + 1``; boxes are XYXY pixels with exclusive ``x2``/``y2`` (``proposals.store``'s
convention). Pure numpy/scipy, so the rules are testable on hand-made arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from liid.errors import LiidError
from liid.proposals.store import ImageProposals

# The background threshold of paper 000's fusion (Algorithm 2): a pixel whose best present-class score is
# below 0.2 is background. Used here both for the semantic map and for the CAM regions that become instances.
THRESHOLD = 0.2
KINDS = ("rect", "ellipse", "proposal")


@dataclass(frozen=True)
class CamInstance:
    """One CAM instance: ``mask`` bool [H, W], ``label`` its class (1..K), ``score`` the region's peak CAM
    value, ``box`` the CAM region's box, ``proposal`` the chosen proposal's index (``kind="proposal"``; else -1)."""

    mask: np.ndarray
    label: int
    score: float
    box: np.ndarray
    proposal: int = -1


def _present(cams: np.ndarray, present: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cams as float32 [K, H, W], present as sorted unique int64 1..K), validated."""
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3:
        raise LiidError(f"cams: expected an array [K, H, W], got shape {cams.shape}")
    present = np.unique(np.asarray(present, dtype=np.int64).reshape(-1))
    if len(present) and (present[0] < 1 or present[-1] > cams.shape[0]):
        raise LiidError(f"present classes {present.tolist()}: expected indices in 1..{cams.shape[0]}")
    return cams, present


def cam_semantic(cams: np.ndarray, present: Sequence[int] | np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Class map int64 [H, W]: per pixel the present class (1-based) with the highest CAM, 0 where that CAM is
    below ``threshold``.

    Only the image's labels compete (absent classes never appear, as image labels are known in this
    weakly supervised setting); on a tie the lower class index wins. No present class: all background.
    """
    cams, present = _present(cams, present)
    h, w = cams.shape[1:]
    if len(present) == 0:
        return np.zeros((h, w), dtype=np.int64)
    sub = cams[present - 1]
    best = sub.argmax(axis=0)
    sem = present[best]
    sem[np.take_along_axis(sub, best[None], axis=0)[0] < threshold] = 0
    return sem


def peak_regions(cam: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The connected regions (8-connectivity) of ``cam >= threshold`` of one class map [H, W], each as
    (bool mask [H, W], box float32 XYXY with exclusive x2/y2, peak CAM value), highest peak first.

    Each region is taken as one object instance, the CAM baselines' instance rule.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise LiidError(f"cam: expected a 2-d map [H, W], got shape {cam.shape}")
    comp, n = ndimage.label(cam >= threshold, structure=np.ones((3, 3), dtype=bool))
    regions = []
    for k, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is None:  # pragma: no cover - labels are consecutive
            continue
        mask = comp == k
        box = np.array([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop], dtype=np.float32)
        regions.append((mask, box, float(cam[mask].max())))
    regions.sort(key=lambda r: -r[2])  # stable: equal peaks keep scan order
    return regions


def _box_pixels(box: Sequence[float], h: int, w: int) -> tuple[int, int, int, int]:
    """Integer pixel range (x1, y1, x2, y2) covered by a box, clipped to the image (x2/y2 exclusive)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (min(max(int(np.floor(x1)), 0), w), min(max(int(np.floor(y1)), 0), h),
            min(max(int(np.ceil(x2)), 0), w), min(max(int(np.ceil(y2)), 0), h))


def rect_mask(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """bool [h, w]: the box filled (the ``Rect`` baseline); a fractional box covers every pixel it touches."""
    x1, y1, x2, y2 = _box_pixels(box, h, w)
    mask = np.zeros((h, w), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def ellipse_mask(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """bool [h, w]: the ellipse inscribed in the box (the ``Ellipse`` baseline), a pixel in when its centre is.

    Centre and semi-axes come from the box's own (exclusive) edges, so the mask lies inside the box and its
    area approaches pi * a * b; a one-pixel box gives its pixel, an empty box an empty mask.
    """
    mask = np.zeros((h, w), dtype=bool)
    bx1, by1, bx2, by2 = (float(v) for v in box)
    a, b = (bx2 - bx1) / 2, (by2 - by1) / 2
    if a <= 0 or b <= 0:
        return mask
    x1, y1, x2, y2 = _box_pixels(box, h, w)
    ys, xs = np.mgrid[y1:y2, x1:x2]
    inside = ((xs + 0.5 - (bx1 + a)) / a) ** 2 + ((ys + 0.5 - (by1 + b)) / b) ** 2 <= 1.0
    mask[y1:y2, x1:x2] = inside
    return mask


def best_proposal(box: Sequence[float], proposal_boxes: np.ndarray) -> int:
    """Index of the proposal whose box has the highest IoU with ``box`` (``torchvision.ops.box_iou``; the first
    on a tie), -1 when there are no proposals."""
    boxes = np.asarray(proposal_boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return -1
    import torch
    from torchvision.ops import box_iou

    iou = box_iou(torch.tensor(np.asarray(box, dtype=np.float64).reshape(1, 4)), torch.from_numpy(boxes))
    return int(np.nan_to_num(iou.numpy()[0], nan=0.0).argmax())


def cam_instances(cams: np.ndarray, present: Sequence[int] | np.ndarray, threshold: float = THRESHOLD,
                  kind: str = "rect", proposals: ImageProposals | None = None) -> list[CamInstance]:
    """The CAM instances of one image: per present class (ascending), per ``peak_regions`` region (highest
    peak first), one instance scored by the peak, whose mask is the region's ``rect``, ``ellipse``, or the
    best-IoU ``proposal`` of ``proposals`` (none for that region when the image has no proposals).

    Regions of different classes, and two regions choosing the same proposal, may overlap: the export's
    per-class NMS settles that.
    """
    if kind not in KINDS:
        raise LiidError(f"instances {kind!r}: choose one of {', '.join(KINDS)}")
    cams, present = _present(cams, present)
    h, w = cams.shape[1:]
    if kind == "proposal":
        if proposals is None:
            raise LiidError("cam instances of kind 'proposal' need the image's proposals")
        if (proposals.height, proposals.width) != (h, w):
            raise LiidError(f"proposals are {proposals.height}x{proposals.width}, the CAMs {h}x{w}")
    out: list[CamInstance] = []
    for c in present:
        for _, box, peak in peak_regions(cams[c - 1], threshold):
            if kind == "rect":
                out.append(CamInstance(rect_mask(box, h, w), int(c), peak, box))
            elif kind == "ellipse":
                out.append(CamInstance(ellipse_mask(box, h, w), int(c), peak, box))
            else:
                j = best_proposal(box, proposals.boxes)
                if j >= 0:
                    out.append(CamInstance(proposals.decode([j])[0], int(c), peak, box, j))
    return out
