"""``liid label --method cam`` (LIID Table 9 baselines): the CAM rules on hand-made maps, and the CLI on a tiny
synthetic dataset with a classifier the test builds (random resnet18 trunk, non-negative class weights so
every CAM has content)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from PIL import Image

from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.labelers import METHODS
from liid.labelers.cam import (
    THRESHOLD,
    best_proposal,
    cam_instances,
    cam_semantic,
    ellipse_mask,
    peak_regions,
    rect_mask,
)
from liid.proposals.store import masks_to_proposals, read_image_proposals, read_proposal_index, write_proposal_store

# ------------------------------------------------------------------------------------------------ semantic


def _three_cams() -> np.ndarray:
    cams = np.zeros((3, 2, 3), np.float32)
    cams[0] = [[0.9, 0.1, 0.5], [0.3, 0.0, 0.25]]
    cams[1] = 1.0  # class 2: the strongest everywhere
    cams[2] = [[0.5, 0.15, 0.6], [0.1, 0.1, 0.19]]
    return cams


def test_cam_semantic_argmax_over_present_classes_and_threshold():
    cams = _three_cams()
    sem = cam_semantic(cams, [1, 3], 0.2)
    # class 2 is absent: never appears although its CAM is 1 everywhere; (0, 1) has max 0.15 < 0.2
    assert sem.tolist() == [[1, 0, 3], [1, 0, 1]]
    assert np.array_equal(cam_semantic(cams, np.array([3, 1])), sem) and THRESHOLD == 0.2
    assert cam_semantic(cams, [1, 3], 0.3).tolist() == [[1, 0, 3], [1, 0, 0]]
    assert cam_semantic(cams, [3], 0.2).tolist() == [[3, 0, 3], [0, 0, 0]]
    assert cam_semantic(cams, [1, 2, 3], 0.2).tolist() == [[2, 2, 2], [2, 2, 2]]
    assert cam_semantic(cams, [], 0.0).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(LiidError, match="1..3"):
        cam_semantic(cams, [4])


# ------------------------------------------------------------------------------------------------- regions


def test_peak_regions_split_blobs_and_order_by_peak():
    cam = np.zeros((10, 12), np.float32)
    cam[1:4, 1:4] = 0.4
    cam[2, 2] = 0.6                 # blob A, peak 0.6
    cam[4, 4] = 0.3                 # touches A only diagonally: joins it (8-connectivity)
    cam[5:9, 6:11] = 0.5
    cam[7, 9] = 0.9                 # blob B, peak 0.9
    cam[0, 11] = 0.1                # below the threshold: no region
    regions = peak_regions(cam, 0.2)
    assert [r[2] for r in regions] == pytest.approx([0.9, 0.6])
    (mask_b, box_b, _), (mask_a, box_a, _) = regions
    assert box_b.tolist() == [6, 5, 11, 9] and mask_b.sum() == 20
    assert box_a.tolist() == [1, 1, 5, 5] and mask_a.sum() == 10 and mask_a[4, 4]
    assert not (mask_a & mask_b).any()
    # a higher threshold keeps only the peaks
    assert [(r[1].tolist(), r[2]) for r in peak_regions(cam, 0.55)] == [([9, 7, 10, 8], pytest.approx(0.9)),
                                                                        ([2, 2, 3, 3], pytest.approx(0.6))]
    assert peak_regions(np.zeros((4, 4)), 0.2) == []


def test_rect_and_ellipse_masks():
    box = [10, 20, 50, 40]  # a = 20, b = 10
    rect = rect_mask(box, 64, 64)
    assert rect.sum() == 800 and rect[20:40, 10:50].all()
    ell = ellipse_mask(box, 64, 64)
    assert abs(ell.sum() - np.pi * 20 * 10) < 0.02 * np.pi * 200
    assert not (ell & ~rect).any()                      # inside the box
    assert ell[30, 30] and ell[30, 10] and ell[30, 49] and ell[20, 29] and ell[39, 30]  # touches all 4 sides
    assert not ell[20, 10] and not ell[39, 49]          # not the corners
    assert np.array_equal(ell[20:40, 10:50], ell[20:40, 10:50][::-1, ::-1])  # symmetric about the centre
    assert ellipse_mask([3, 3, 4, 4], 8, 8).sum() == 1 and ellipse_mask([3, 3, 3, 5], 8, 8).sum() == 0
    # a box reaching past the image is clipped
    assert rect_mask([-2, -2, 3, 3], 8, 8).sum() == 9 and ellipse_mask([4, 4, 12, 12], 8, 8).sum() > 0


def test_best_proposal():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], np.float32)
    assert best_proposal([6, 6, 15, 15], boxes) == 1
    assert best_proposal([21, 19, 30, 30], boxes) == 2
    assert best_proposal([0, 0, 9, 10], boxes) == 0
    assert best_proposal([0, 0, 9, 10], np.zeros((0, 4))) == -1


def test_cam_instances_kinds():
    cams = np.zeros((2, 16, 16), np.float32)
    cams[0, 2:6, 2:8] = 1.0     # class 1: one region, box [2, 2, 8, 6]
    cams[1, 10:14, 10:14] = 0.7  # class 2: absent in the image below
    inst = cam_instances(cams, [1], 0.2, "rect")
    assert [(i.label, i.score, i.box.tolist()) for i in inst] == [(1, 1.0, [2, 2, 8, 6])]
    assert inst[0].mask.sum() == 24 and inst[0].proposal == -1
    both = cam_instances(cams, [1, 2], 0.2, "ellipse")
    assert [(i.label, i.score) for i in both] == [(1, 1.0), (2, pytest.approx(0.7))]
    assert both[1].mask.sum() < 16 and both[1].mask[10:14, 10:14].sum() == both[1].mask.sum()
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 0:8, 0:8] = True
    masks[1, 2:6, 2:9] = True    # closest to the CAM box
    masks[2, 9:15, 9:15] = True
    props = masks_to_proposals(masks, np.ones(3))
    got = cam_instances(cams, [1, 2], 0.2, "proposal", props)
    assert [(i.label, i.proposal) for i in got] == [(1, 1), (2, 2)]
    assert np.array_equal(got[0].mask, masks[1])
    assert cam_instances(cams, [1], 0.2, "proposal", masks_to_proposals(masks[:0], [])) == []
    with pytest.raises(LiidError, match="proposals"):
        cam_instances(cams, [1], 0.2, "proposal")
    with pytest.raises(LiidError, match="rect, ellipse, proposal"):
        cam_instances(cams, [1], 0.2, "box")


# ------------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    import torch

    from liid.models import MultiLabelClassifier, build_backbone, save_checkpoint

    root = tmp_path_factory.mktemp("cam")
    syn = root / "syn"
    write_synthetic(syn, 3, seed=0, config=SyntheticConfig(size=64), val_fraction=0.0, progress=False)
    ds = open_dataset(syn)
    torch.manual_seed(0)
    trunk, channels = build_backbone("resnet18", from_scratch=True, freeze_bn=True)
    model = MultiLabelClassifier(trunk, channels, ds.num_classes)
    with torch.no_grad():  # ReLU features >= 0 and weights > 0: every CAM has a positive response
        model.classifier.weight.abs_()
    (root / "cls").mkdir()
    meta = {"backbone": "resnet18", "num_classes": ds.num_classes, "class_names": ds.classes,
            "config": {"size": 64}, "dataset": ds.describe(), "size": 64}
    save_checkpoint(root / "cls" / "checkpoint.pt", model, None, 1, meta)
    # a proposal store: the ground-truth masks and a background corner square per image
    index, props = [], []
    for im in ds.images:
        inst = ds.instances(im.id)
        corner = np.zeros((1, im.height, im.width), bool)
        corner[0, :6, :6] = True
        masks = np.concatenate([inst.masks, corner])
        index.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
        props.append(masks_to_proposals(masks, np.ones(len(masks))))
    write_proposal_store(root / "props", index, props)
    return {"syn": syn, "cls": root / "cls", "props": root / "props", "ds": ds}


def _cams(data) -> dict[str, np.ndarray]:
    import torch

    from liid.training.attention import load_classifier
    from liid.training.cams import compute_cams

    ds = data["ds"]
    model, size = load_classifier(data["cls"], ds, torch.device("cpu"))
    assert size == 64
    return {k: v.astype(np.float32) for k, v in compute_cams(model, ds, [im.id for im in ds.images], size).items()}


def test_cam_cli_rect(data, tmp_path):
    ds, out = data["ds"], tmp_path / "cam"
    args = ["label", "--method", "cam", "--cams", data["cls"], "--dataset", data["syn"], "--out", out]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "cam" in METHODS
    ids = [im.id for im in ds.images]
    assert len(ids) == 3
    assert sorted(p.name for p in (out / "semantic").iterdir()) == sorted(f"{i}.png" for i in ids)
    cams = _cams(data)
    for iid in ids:
        png = Image.open(out / "semantic" / f"{iid}.png")
        assert png.mode == "P"
        sem = np.asarray(png)
        assert sem.min() >= 0 and sem.max() <= ds.num_classes
        assert set(np.unique(sem).tolist()) <= {0, *ds.labels(iid).tolist()}
        assert np.array_equal(sem, cam_semantic(cams[iid], ds.labels(iid), 0.2))  # the CAM map, not the rects
        assert (sem > 0).any()
    coco = json.loads((out / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ds.classes[1:]
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(ds.classes)))
    assert len(coco["images"]) == 3 and coco["annotations"]
    by_coco_id = {im["id"]: im["file_name"].rsplit(".", 1)[0] for im in coco["images"]}
    for a in coco["annotations"]:
        assert a["category_id"] in ds.labels(by_coco_id[a["image_id"]]).tolist()
        assert 0 < a["score"] <= 1 and a["area"] == a["bbox"][2] * a["bbox"][3]  # a filled rectangle
    # every present class's strongest region peaks at 1 (CAMs are max-normalised) and survives NMS
    for iid in ids:
        cid = next(k for k, v in by_coco_id.items() if v == iid)
        tops = {a["category_id"] for a in coco["annotations"] if a["image_id"] == cid and a["score"] == 1.0}
        assert tops == set(ds.labels(iid).tolist())
    summary = json.loads((out / "export.json").read_text())
    inputs = summary["inputs"]
    assert inputs["method"] == "cam" and inputs["instances"] == "rect" and inputs["cam_threshold"] == 0.2
    assert inputs["proposals"] is None and inputs["dataset_description"] == ds.describe()
    from liid.fingerprint import fingerprint
    assert inputs["fingerprints"] == [fingerprint(data["cls"] / "checkpoint.pt")]
    assert summary["config"]["score"] == "CAM peak" and summary["instances"] == len(coco["annotations"])

    # the same command again is skipped; another threshold is refused without --overwrite
    stamp = (out / "instances.json").stat().st_mtime_ns
    res = invoke(*args)
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    res = invoke(*args, "--cam-threshold", "0.5")
    assert_one_line_error(res, str(out), "--overwrite")
    assert (out / "instances.json").stat().st_mtime_ns == stamp
    # ... and done with it: the threshold reaches the maps (these random CAMs are flat: 0.2 leaves no background)
    res = invoke(*args, "--cam-threshold", "0.9", "--overwrite")
    assert res.exit_code == 0, res.output
    sems = [np.asarray(Image.open(out / "semantic" / f"{iid}.png")) for iid in ids]
    for iid, sem in zip(ids, sems, strict=True):
        assert np.array_equal(sem, cam_semantic(cams[iid], ds.labels(iid), 0.9))
    assert any((sem == 0).any() for sem in sems)
    assert json.loads((out / "export.json").read_text())["inputs"]["cam_threshold"] == 0.9


def test_cam_cli_proposal_and_ellipse(data, tmp_path):
    ds = data["ds"]
    out = tmp_path / "prop"
    res = invoke("label", "--method", "cam", "--cams", data["cls"], "--dataset", data["syn"], "--instances",
                 "proposal", "--proposals", data["props"], "--out", out)
    assert res.exit_code == 0, res.output
    coco = json.loads((out / "instances.json").read_text())
    assert coco["annotations"]
    index = {e["id"]: e for e in read_proposal_index(data["props"])}
    by_coco_id = {im["id"]: im["file_name"].rsplit(".", 1)[0] for im in coco["images"]}
    for a in coco["annotations"]:  # every instance is one of the store's masks
        props = read_image_proposals(data["props"], index[by_coco_id[a["image_id"]]])
        assert a["segmentation"]["counts"] in [r["counts"] for r in props.rles]
    summary = json.loads((out / "export.json").read_text())
    assert summary["inputs"]["instances"] == "proposal" and len(summary["inputs"]["fingerprints"]) == 2
    cams = _cams(data)
    for im in ds.images:
        sem = np.asarray(Image.open(out / "semantic" / f"{im.id}.png"))
        assert np.array_equal(sem, cam_semantic(cams[im.id], ds.labels(im.id), 0.2))

    ell = tmp_path / "ell"
    res = invoke("label", "--method", "cam", "--cams", data["cls"], "--dataset", data["syn"], "--instances",
                 "ellipse", "--out", ell)
    assert res.exit_code == 0, res.output
    anns = json.loads((ell / "instances.json").read_text())["annotations"]
    # ellipses fill at most their box, and the larger ones less
    assert anns and all(a["area"] <= a["bbox"][2] * a["bbox"][3] for a in anns)
    assert any(a["area"] < a["bbox"][2] * a["bbox"][3] for a in anns)


def test_cam_cli_errors(data, tmp_path):
    out = tmp_path / "out"
    base = ["label", "--method", "cam", "--cams", data["cls"], "--dataset", data["syn"], "--out", out]
    res = invoke(*base, "--instances", "proposal")
    assert_one_line_error(res, "--instances proposal", "--proposals")
    res = invoke(*base, "--proposals", data["props"])
    assert_one_line_error(res, "--proposals", "--instances proposal only")
    res = invoke("label", "--method", "cam", "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, "--method cam needs --cams")
    res = invoke("label", "--method", "cam", "--cams", data["cls"], "--out", out)
    assert_one_line_error(res, "--method cam needs --dataset")
    res = invoke("label", "--method", "cam", "--cams", tmp_path / "none", "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, "checkpoint not found")
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--proposals", data["props"],
                 "--cams", data["cls"], "--out", out)
    assert_one_line_error(res, "--cams: not an option of --method oracle")
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, "--method oracle needs --proposals")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output or temporary folder left


def test_export_labeled_own_instances_and_semantic(tmp_path):
    """The export options the cam labeler uses: instances that are not store proposals (no store at all) and a
    semantic map that is not their union; a map of the wrong size or with classes past K is refused."""
    from liid.detection.export import ImageLabels, export_labeled

    masks = np.zeros((2, 8, 10), bool)
    masks[0, 1:4, 1:5] = True
    masks[1, 5:8, 6:10] = True
    own = masks_to_proposals(masks, np.ones(2))
    sem = np.zeros((8, 10), np.int64)
    sem[:, :3] = 2  # nothing like the union of the two instances
    entries = [{"id": "a", "file_name": "a.jpg", "height": 8, "width": 10}]
    classes = ["background", "x", "y"]
    got = ImageLabels(np.arange(2), np.array([1, 2]), np.array([0.5, 0.9], np.float32), proposals=own, semantic=sem)
    summary = export_labeled(entries, classes, None, {"a": got}, tmp_path / "out", progress=False)
    assert summary["instances"] == 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "semantic" / "a.png")), sem)
    anns = json.loads((tmp_path / "out" / "instances.json").read_text())["annotations"]
    assert [(a["category_id"], a["area"], a["score"]) for a in anns] == [(2, 12.0, pytest.approx(0.9)),
                                                                        (1, 12.0, 0.5)]
    with pytest.raises(LiidError, match="semantic map of shape"):
        export_labeled(entries, classes, None, {"a": ImageLabels(np.arange(2), np.array([1, 2]), proposals=own,
                                                                 semantic=sem[:4])}, tmp_path / "o2")
    with pytest.raises(LiidError, match="classes 0..2"):
        export_labeled(entries, classes, None, {"a": ImageLabels(np.arange(2), np.array([1, 2]), proposals=own,
                                                                 semantic=sem + 1)}, tmp_path / "o3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
