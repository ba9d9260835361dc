"""mAP^r (detection/map_r.py) on hand-made cases: the VOC all-point AP, matching, duplicates, crowd, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_util

from liid.detection.map_r import map_r, voc_ap


def rle(y0, y1, x0, x1, size=20):
    m = np.zeros((size, size), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return mask_util.encode(np.asfortranarray(m))


def test_voc_ap_by_hand():
    # recall 0.5 at precision 1, recall 1 at precision 0.5: 0.5 * 1 + 0.5 * 0.5
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(0.75)
    # the envelope: a later, higher precision lifts the earlier recall levels
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([0.5, 1 / 3, 0.5])) == pytest.approx(0.5)
    assert voc_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_duplicates_are_false_positives_and_order_matters():
    gt = [([rle(0, 10, 0, 10)], np.array([1]), np.array([False]))]
    exact = rle(0, 10, 0, 10)
    # the duplicate scored lower: TP then FP -> precision 1 at recall 1 -> AP 1
    r = map_r(gt, [([exact, exact], np.array([1, 1]), np.array([0.9, 0.8]))])
    assert r["map_r"][0.5] == pytest.approx(1.0)
    # a wrong mask scored higher: FP then TP -> precision 0.5 at recall 1 -> AP 0.5
    wrong = rle(12, 20, 12, 20)
    r = map_r(gt, [([wrong, exact], np.array([1, 1]), np.array([0.9, 0.8]))])
    assert r["map_r"][0.5] == pytest.approx(0.5)


def test_thresholds_and_classes():
    gt = [([rle(0, 10, 0, 10), rle(10, 20, 10, 20)], np.array([1, 2]), np.array([False, False]))]
    # class 1: IoU 60/100... a 10x6 mask inside the 10x10 one: IoU 0.6; class 2: exact
    dets = [([rle(0, 10, 0, 6), rle(10, 20, 10, 20)], np.array([1, 2]), np.array([0.9, 0.9]))]
    r = map_r(gt, dets)
    assert r["per_class"][1][0.5] == pytest.approx(1.0) and r["per_class"][1][0.7] == pytest.approx(0.0)
    assert r["per_class"][2][0.75] == pytest.approx(1.0)
    assert r["map_r"][0.25] == pytest.approx(1.0) and r["map_r"][0.5] == pytest.approx(1.0)
    assert r["map_r"][0.7] == pytest.approx(0.5) and r["map_r"][0.75] == pytest.approx(0.5)


def test_crowd_is_ignored_and_missed_instances_lower_recall():
    gt = [([rle(0, 10, 0, 10), rle(10, 20, 10, 20)], np.array([1, 1]), np.array([False, True])),
          ([rle(0, 5, 0, 5)], np.array([1]), np.array([False]))]
    dets = [([rle(10, 20, 10, 20), rle(0, 10, 0, 10)], np.array([1, 1]), np.array([0.95, 0.9])),
            ([], np.zeros(0, np.int64), np.zeros(0))]
    r = map_r(gt, dets)
    # the crowd hit is neither TP nor FP; one of two instances found at precision 1: AP 0.5
    assert r["map_r"][0.5] == pytest.approx(0.5)
    # a class without ground truth is left out of the mean (its predictions do not count)
    dets2 = [(dets[0][0] + [rle(0, 3, 0, 3)], np.array([1, 1, 7]), np.array([0.95, 0.9, 0.99])), dets[1]]
    assert map_r(gt, dets2)["map_r"][0.5] == pytest.approx(0.5)
    assert 7 not in map_r(gt, dets2)["per_class"]
