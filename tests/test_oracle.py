"""``liid label --method oracle``: the ground-truth box rule (IoU > 0.5, best-overlapping class, crowd ignored)
and the CLI on a tiny synthetic dataset, whose export `liid evaluate` scores AP50 = 1 when the ground-truth
masks are among the proposals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke

from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.detection.export import nms_per_class
from liid.labelers import METHODS, oracle_labels
from liid.proposals.store import masks_to_proposals, write_proposal_store

# ------------------------------------------------------------------------------------------------ the rule


def test_rule_threshold_is_strict():
    gt = np.array([[0, 0, 10, 10]], np.float32)  # area 100
    boxes = np.array([[0, 0, 10, 5],    # IoU 50/100 = 0.5 exactly: background
                      [0, 0, 10, 6],    # 0.6: kept
                      [0, 0, 10, 10],   # 1.0
                      [20, 20, 30, 30],  # no overlap
                      [0, 0, 0, 0]], np.float32)  # an empty box
    labels, scores = oracle_labels(boxes, gt, np.array([3]))
    assert labels.tolist() == [0, 3, 3, 0, 0]
    np.testing.assert_allclose(scores, [0.5, 0.6, 1.0, 0.0, 0.0], rtol=1e-6)
    assert labels.dtype == np.int64 and scores.dtype == np.float32
    # the threshold is a parameter
    assert oracle_labels(boxes, gt, np.array([3]), iou=0.7)[0].tolist() == [0, 0, 3, 0, 0]


def test_rule_best_overlapping_class_wins():
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], np.float32)  # class 1, class 2
    boxes = np.array([[0, 0, 10, 10],   # IoU 1 with class 1, 0.67 with class 2
                      [2, 0, 12, 10],   # the reverse
                      [1, 0, 11, 10],   # 0.82 with both: the first box wins the tie
                      [2, 0, 11, 10]], np.float32)  # 0.8 with 1, 0.9 with 2
    labels, scores = oracle_labels(boxes, gt, np.array([1, 2]))
    assert labels.tolist() == [1, 2, 1, 2]
    np.testing.assert_allclose(scores, [1.0, 1.0, 9 / 11, 0.9], rtol=1e-6)


def test_rule_ignores_crowd_and_handles_empty_inputs():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 8]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 8]], np.float32)
    labels, scores = oracle_labels(boxes, gt, np.array([1, 2]), gt_iscrowd=np.array([True, False]))
    # the crowd box (class 1) is ignored: both proposals go to class 2 (IoU 0.8 and 1.0)
    assert labels.tolist() == [2, 2]
    np.testing.assert_allclose(scores, [0.8, 1.0], rtol=1e-6)
    labels, scores = oracle_labels(boxes, gt, np.array([1, 2]), gt_iscrowd=np.array([True, True]))
    assert labels.tolist() == [0, 0] and scores.tolist() == [0.0, 0.0]
    labels, scores = oracle_labels(np.zeros((0, 4)), gt, np.array([1, 2]))
    assert labels.shape == (0,) and scores.shape == (0,)
    assert oracle_labels(boxes, np.zeros((0, 4)), np.zeros(0, int))[0].tolist() == [0, 0]
    assert "oracle" in METHODS


# ------------------------------------------------------------------------------------------------- the CLI


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The mask moved by (dy, dx) pixels; what leaves the image is lost (no wrap-around)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def _proposals(ds, ids, with_gt=True):
    """Per image: (the GT masks,) each shifted by 3 px, its left 60 %, and a corner background square."""
    meta, props = [], []
    for iid in ids:
        im, inst = ds.info(iid), ds.instances(iid)
        masks = [m for m in inst.masks] if with_gt else []
        for m in inst.masks:
            masks.append(_shift(m, 3, -3))
            cols = np.flatnonzero(m.any(axis=0))
            part = m.copy()
            part[:, cols[0] + int(0.6 * len(cols)):] = False
            masks.append(part)
        corner = np.zeros((im.height, im.width), bool)
        corner[:6, :6] = True
        masks.append(corner)
        meta.append({"id": iid, "file_name": im.file.name, "height": im.height, "width": im.width,
                     "coco_id": im.coco_id})
        props.append(masks_to_proposals(np.stack(masks), np.linspace(1, 0, len(masks))))
    return meta, props


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    write_synthetic(root / "syn", 8, seed=0, config=SyntheticConfig(size=64), progress=False)
    ds = open_dataset(root / "syn")  # the train split
    ids = [im.id for im in ds.images]
    meta, props = _proposals(ds, ids)
    write_proposal_store(root / "props", meta, props)
    return {"root": root, "syn": root / "syn", "props": root / "props", "ds": ds, "ids": ids}


def test_oracle_cli_scores_ap50_one(data, tmp_path):
    ds = data["ds"]
    # precondition of AP = 1: no two GT boxes of one class overlap enough for NMS 0.4 to drop one
    for iid in data["ids"]:
        inst = ds.instances(iid)
        boxes = masks_to_proposals(inst.masks, np.zeros(len(inst))).boxes
        assert len(nms_per_class(boxes, np.ones(len(inst)), inst.classes, 0.4)) == len(inst)
    out = tmp_path / "oracle"
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--proposals", data["props"],
                 "--out", out)
    assert res.exit_code == 0, res.output
    n_gt = sum(len(ds.instances(i)) for i in data["ids"])
    coco = json.loads((out / "instances.json").read_text())
    assert len(coco["annotations"]) == n_gt
    assert all(a["score"] == 1.0 for a in coco["annotations"])  # each kept proposal is a GT mask
    assert sorted(p.name for p in (out / "semantic").iterdir()) == sorted(f"{i}.png" for i in data["ids"])
    summary = json.loads((out / "export.json").read_text())
    assert summary["instances"] == n_gt and summary["config"]["score"] == "gt box IoU"
    assert summary["inputs"]["method"] == "oracle" and summary["inputs"]["iou"] == 0.5
    n_props = sum(3 * len(ds.instances(i)) + 1 for i in data["ids"])
    assert summary["proposals"] == n_props == summary["instances"] + summary["dropped_background"] + \
        summary["dropped_empty"] + summary["suppressed_nms"]
    assert summary["dropped_background"] >= len(data["ids"])  # at least the corner squares

    res = invoke("evaluate", data["syn"], out)
    assert res.exit_code == 0, res.output
    head = json.loads(res.stdout.strip().splitlines()[-1])
    assert head["ap50"] == pytest.approx(1.0) and head["ap"] == pytest.approx(1.0)
    assert head["abo"] == pytest.approx(1.0) and head["miou"] == pytest.approx(1.0)


def test_oracle_without_gt_masks_among_proposals(data, tmp_path):
    """Only shifted and partial masks: the oracle keeps one per instance where one overlaps > 0.5, AP50 < 1."""
    meta, props = _proposals(data["ds"], data["ids"], with_gt=False)
    store = write_proposal_store(tmp_path / "props", meta, props)
    out = tmp_path / "oracle"
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--proposals", store, "--out", out)
    assert res.exit_code == 0, res.output
    scores = [a["score"] for a in json.loads((out / "instances.json").read_text())["annotations"]]
    assert scores and all(0.5 < s < 1.0 for s in scores)


def test_oracle_errors(data, tmp_path):
    out = tmp_path / "out"
    res = invoke("label", "--method", "oracle", "--proposals", data["props"], "--out", out)
    assert_one_line_error(res, "--method oracle needs --dataset")
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--features", data["props"],
                 "--proposals", data["props"], "--out", out)
    assert_one_line_error(res, "--features")
    res = invoke("label", "--method", "mil-argmax", "--dataset", data["syn"], "--proposals", data["props"],
                 "--out", out)
    assert_one_line_error(res, "--dataset: not an option of --method mil-argmax")

    # an image of the dataset missing from the proposal store
    meta, props = _proposals(data["ds"], data["ids"][1:])
    partial = write_proposal_store(tmp_path / "partial", meta, props)
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--proposals", partial, "--out", out)
    assert_one_line_error(res, str(partial / "index.json"), repr(data["ids"][0]), "not in the proposal store",
                          "the dataset")

    # a dataset without ground truth: a folder of images
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"] / "JPEGImages", "--proposals",
                 data["props"], "--out", out)
    assert_one_line_error(res, "needs ground-truth instances")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partial"]  # no output or temporary folder left
