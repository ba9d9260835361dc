"""``oracle``: proposals labeled by the ground truth, the upper bound of any labeler (LIID Table 7).

A proposal is kept when its box overlaps some non-crowd ground-truth instance box with IoU > 0.5 (strictly:
exactly 0.5 is background); it takes the class of the ground-truth box it overlaps most (the first such box on a
tie). Every other proposal is background. Its score is that best box IoU, so the export's per-class NMS keeps,
of overlapping proposals of one class, the one that fits its ground-truth box best.

Boxes are XYXY pixels with exclusive ``x2``/``y2`` (the proposal store's convention); the ground-truth boxes are
the extents of the instance masks in the same convention (``proposals.store.masks_to_proposals``). Box IoU is
``torchvision.ops.box_iou``, computed in float64 so that an IoU of exactly 0.5 stays exactly 0.5.
"""

from __future__ import annotations

import numpy as np

from liid.errors import LiidError

IOU = 0.5


def oracle_labels(proposal_boxes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray, iou: float = IOU,
                  gt_iscrowd: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 [M], scores float32 [M]) of proposals with boxes ``[M, 4]`` against ground truth boxes
    ``[G, 4]`` of classes ``[G]`` (1..K); ``gt_iscrowd`` bool [G] marks boxes to ignore.

    ``labels[j]`` = the class of the non-crowd ground-truth box with the highest box IoU with proposal ``j``
    when that IoU is > ``iou``, else 0 (background). ``scores[j]`` = that highest IoU (0 without any non-crowd
    ground truth), also for background proposals.
    """
    boxes = np.asarray(proposal_boxes, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(gt_classes).reshape(-1)
    if classes.shape[0] != gt.shape[0]:
        raise LiidError(f"oracle_labels: {gt.shape[0]} ground-truth boxes but {classes.shape[0]} classes")
    if gt_iscrowd is not None:
        crowd = np.asarray(gt_iscrowd, dtype=bool).reshape(-1)
        if crowd.shape[0] != gt.shape[0]:
            raise LiidError(f"oracle_labels: {gt.shape[0]} ground-truth boxes but {crowd.shape[0]} crowd flags")
        gt, classes = gt[~crowd], classes[~crowd]
    m = boxes.shape[0]
    if m == 0 or gt.shape[0] == 0:
        return np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.float32)
    import torch
    from torchvision.ops import box_iou

    overlap = box_iou(torch.from_numpy(boxes), torch.from_numpy(gt)).numpy()
    overlap = np.nan_to_num(overlap, nan=0.0)  # two empty boxes: 0 / 0
    best = overlap.argmax(axis=1)
    score = overlap[np.arange(m), best]
    labels = np.where(score > iou, classes[best].astype(np.int64), 0)
    return labels.astype(np.int64), score.astype(np.float32)
