"""mAP^r: VOC's instance-segmentation metric (Hariharan et al., SDS 2014), what PRM, IRNet and BESTIE report.

Per class and IoU threshold t: all predictions of the class over the dataset, highest score first; each is a
true positive if its best-overlapping ground-truth instance of the class (mask IoU) reaches t and was not
matched before, ignored if that instance is a crowd/difficult one, else a false positive. AP is VOC's
all-point interpolated area under the precision-recall curve (VOC2010+, ``use_07_metric=False``); mAP^r is
the mean over the classes that have ground truth. This is the rule of chainercv's
``eval_instance_segmentation_voc`` (which IRNet uses); chainercv is no longer maintained, and COCOeval
differs (101-point interpolation, best *unmatched* ground truth, area ranges), so it is written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_util

THRESHOLDS = (0.25, 0.5, 0.7, 0.75)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: the area under the precision envelope (max precision at recall >= r)."""
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[step + 1] - mrec[step]) * mpre[step + 1]).sum())


def map_r(gt: Sequence[tuple[list[dict], np.ndarray, np.ndarray]],
          dets: Sequence[tuple[list[dict], np.ndarray, np.ndarray]],
          thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """mAP^r at each threshold, and per class.

    ``gt[i]`` = (RLEs, classes, crowd flags) of image i; ``dets[i]`` = (RLEs, classes, scores) of the same image.
    Returns ``{"map_r": {t: value}, "per_class": {class: {t: AP or None}}}`` (None: a class without ground truth).
    """
    classes = sorted({int(c) for _, cl, crowd in gt for c, w in zip(cl, crowd, strict=True) if not w})
    records: dict[int, list[tuple[float, int, np.ndarray]]] = {c: [] for c in classes}  # score, image, IoUs
    npos = {c: 0 for c in classes}
    gt_crowd: list[dict[int, np.ndarray]] = []
    for i, ((g_rles, g_cls, g_crowd), (d_rles, d_cls, d_score)) in enumerate(zip(gt, dets, strict=True)):
        g_cls, g_crowd = np.asarray(g_cls, dtype=np.int64), np.asarray(g_crowd, dtype=bool)
        d_cls, d_score = np.asarray(d_cls, dtype=np.int64), np.asarray(d_score, dtype=np.float64)
        crowd_of = {}
        for c in classes:
            gsel = np.nonzero(g_cls == c)[0]
            npos[c] += int((~g_crowd[gsel]).sum())
            crowd_of[c] = g_crowd[gsel]
            for j in np.nonzero(d_cls == c)[0]:
                if gsel.size:
                    iou = np.asarray(mask_util.iou([d_rles[j]], [g_rles[k] for k in gsel], [0] * gsel.size),
                                     dtype=np.float64).reshape(-1)
                else:
                    iou = np.zeros(0)
                records[c].append((float(d_score[j]), i, iou))
        gt_crowd.append(crowd_of)
    out: dict = {"map_r": {}, "per_class": {c: {} for c in classes}}
    for t in thresholds:
        aps = []
        for c in classes:
            recs = sorted(records[c], key=lambda r: -r[0])  # stable: equal scores keep image order
            used = [np.zeros(gt_crowd[i][c].size, dtype=bool) for i in range(len(gt))]
            tp, fp = [], []
            for _, i, iou in recs:
                if iou.size and iou.max() >= t:
                    k = int(iou.argmax())
                    if gt_crowd[i][c][k]:
                        continue  # a crowd / difficult instance: neither right nor wrong
                    hit = not used[i][k]
                    used[i][k] = True
                    tp.append(hit)
                    fp.append(not hit)
                else:
                    tp.append(False)
                    fp.append(True)
            if npos[c] == 0:
                out["per_class"][c][t] = None
                continue
            ctp, cfp = np.cumsum(tp), np.cumsum(fp)
            rec = ctp / npos[c] if len(tp) else np.zeros(0)
            prec = ctp / np.maximum(ctp + cfp, 1e-12) if len(tp) else np.zeros(0)
            ap = voc_ap(rec, prec)
            out["per_class"][c][t] = ap
            aps.append(ap)
        out["map_r"][t] = float(np.mean(aps)) if aps else None
    return out
