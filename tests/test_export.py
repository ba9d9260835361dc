"""``liid export``: background dropped, per-class NMS, COCO JSON that pycocotools/detectron2 load, PNGs."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from liid.detection.export import coco_image_ids, export_pseudo_labels, nms_per_class, paint_semantic, voc_palette
from liid.errors import LiidError
from liid.graph.feature_store import FeatureStore, read_feature_store, write_feature_store
from liid.proposals.store import masks_to_proposals, write_proposal_store

CLASSES = ["background", "cat", "dog"]


def _rect(h, w, y1, y2, x1, x2):
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


# image "000001" (20x30): p0 big cat, p1 near-duplicate cat (suppressed), p2 dog over p0 (kept: other
# class), p3 small cat inside (painted on top), p4 background. Proposal scores favour p1 over p0, the
# probabilities favour p0: which one survives tells which score NMS used.
H1, W1 = 20, 30
MASKS1 = np.stack([
    _rect(H1, W1, 2, 16, 2, 21),   # p0 cat   box [2, 2, 21, 16]
    _rect(H1, W1, 3, 16, 2, 20),   # p1 cat   IoU with p0 = 234/266
    _rect(H1, W1, 2, 16, 3, 21),   # p2 dog   IoU with p0 = 252/266
    _rect(H1, W1, 8, 12, 8, 12),   # p3 cat   small, inside p2
    _rect(H1, W1, 0, 20, 25, 30),  # p4 background
])
SCORES1 = [0.1, 0.95, 0.5, 0.5, 0.9]
H2, W2 = 16, 16
MASKS2 = np.stack([_rect(H2, W2, 4, 12, 4, 12), _rect(H2, W2, 0, 16, 0, 16)])
# feature-store rows: (image index, proposal index, label, probability of that label)
ROWS = [(0, 1, 1, 0.6), (0, 0, 1, 0.9), (0, 2, 2, 0.8), (0, 3, 1, 0.7), (0, 4, 0, 0.99),
        (1, 0, 2, 0.85), (1, 1, 0, 0.7)]
IMAGES = ["000001", "000002", "000003"]  # "000003" has no proposals in the feature store


def _feature_store(path, rows=ROWS, images=IMAGES):
    n = len(rows)
    probs = np.full((n, 3), 0.0, np.float32)
    for r, (_, _, lab, p) in enumerate(rows):
        probs[r] = (1 - p) / 2
        probs[r, lab] = p
    store = FeatureStore(
        features=np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32), probs=probs,
        proposal_image=np.array([r[0] for r in rows], np.int64),
        proposal_index=np.array([r[1] for r in rows], np.int64),
        image_labels=np.array([[1, 1, 1], [1, 0, 1], [1, 1, 0]][: len(images)], bool),
        classes=CLASSES, images=list(images))
    return write_feature_store(path, store)


def _proposal_store(path, ids=IMAGES):
    meta = {"000001": ({"id": "000001", "file_name": "000001.jpg", "height": H1, "width": W1},
                       masks_to_proposals(MASKS1, SCORES1)),
            "000002": ({"id": "000002", "file_name": "000002.jpg", "height": H2, "width": W2},
                       masks_to_proposals(MASKS2, [0.3, 0.2])),
            "000003": ({"id": "000003", "file_name": "000003.jpg", "height": 5, "width": 6},
                       masks_to_proposals(np.zeros((0, 5, 6), bool), []))}
    return write_proposal_store(path, [meta[i][0] for i in ids], [meta[i][1] for i in ids])


@pytest.fixture
def inputs(tmp_path):
    """A feature store, a proposal store, a graph dir pointing at the store and a cut dir pointing at it."""
    fs = _feature_store(tmp_path / "features")
    ps = _proposal_store(tmp_path / "proposals")
    graph = tmp_path / "graph"
    graph.mkdir()
    (graph / "graph.json").write_text(json.dumps({"format": "liid.graph",
                                                  "source": {"feature_store": str(fs)}}))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "summary.json").write_text(json.dumps({"graph": str(graph)}))
    np.save(cut / "labels.npy", np.array([r[2] for r in ROWS], np.int32))
    return {"tmp": tmp_path, "features": fs, "proposals": ps, "graph": graph, "cut": cut}


def _cli():
    """``liid`` itself when all its subcommands import; else a group with the same error handling."""
    try:
        from liid.cli import main
        return main, ["export"]
    except ImportError:
        from liid.commands.export import command

        class _Group(click.Group):
            def invoke(self, ctx):
                try:
                    return super().invoke(ctx)
                except LiidError as e:
                    click.echo(f"error: {e}", err=True)
                    sys.exit(2)

        group = _Group("liid")
        group.add_command(command)
        return group, ["export"]


def _run(*args):
    group, prefix = _cli()
    return CliRunner().invoke(group, [*prefix, *map(str, args)])


def _load_coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_export_cli_end_to_end(inputs):
    out = inputs["tmp"] / "out"
    res = _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", out)
    assert res.exit_code == 0, res.output
    assert "4 instances in 3 images" in res.stdout
    coco = json.loads((out / "instances.json").read_text())
    assert [im["id"] for im in coco["images"]] == [1, 2, 3]
    assert coco["categories"] == [{"id": 1, "name": "cat", "supercategory": "object"},
                                  {"id": 2, "name": "dog", "supercategory": "object"}]
    anns = coco["annotations"]
    # image 1: p0 (cat 0.9) beats p1 (cat 0.6) by probability; p2 dog survives although it overlaps p0
    got = [(a["image_id"], a["category_id"], round(a["score"], 4), a["bbox"]) for a in anns]
    assert got == [(1, 1, 0.9, [2.0, 2.0, 19.0, 14.0]), (1, 2, 0.8, [3.0, 2.0, 18.0, 14.0]),
                   (1, 1, 0.7, [8.0, 8.0, 4.0, 4.0]), (2, 2, 0.85, [4.0, 4.0, 8.0, 8.0])]
    assert [a["id"] for a in anns] == [1, 2, 3, 4]
    np.testing.assert_array_equal(
        mask_util.decode({"size": anns[0]["segmentation"]["size"],
                          "counts": anns[0]["segmentation"]["counts"].encode()}), MASKS1[0])
    assert [a["area"] for a in anns] == [266.0, 252.0, 16.0, 64.0]
    summary = json.loads((out / "export.json").read_text())
    assert summary["instances"] == 4 and summary["images"] == 3 and summary["proposals"] == 7
    assert summary["dropped_background"] == 2 and summary["suppressed_nms"] == 1
    assert summary["proposals"] == summary["instances"] + summary["dropped_background"] + \
        summary["dropped_empty"] + summary["suppressed_nms"]
    assert summary["per_class"] == {"cat": 2, "dog": 2}
    assert summary["config"]["nms_iou"] == 0.4 and summary["config"]["score"] == "prob"
    assert summary["config"]["image_ids"] == "digits"
    assert sorted(p.name for p in (out / "semantic").iterdir()) == ["000001.png", "000002.png", "000003.png"]


def test_semantic_png_palette_and_small_on_top(inputs):
    out = inputs["tmp"] / "out"
    assert _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", out).exit_code == 0
    img = Image.open(out / "semantic" / "000001.png")
    assert img.mode == "P" and img.size == (W1, H1)
    pal = np.array(img.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(pal, voc_palette())
    assert tuple(pal[1]) == (128, 0, 0) and tuple(pal[2]) == (0, 128, 0)
    assert tuple(pal[255]) == (224, 224, 192)  # VOC's ignore color
    sem = np.array(img)
    expected = np.zeros((H1, W1), np.uint8)
    expected[MASKS1[0]] = 1  # largest (cat, 266 px) first
    expected[MASKS1[2]] = 2  # dog (252 px) on top
    expected[MASKS1[3]] = 1  # small cat (16 px) on top of the dog
    np.testing.assert_array_equal(sem, expected)
    assert sem[10, 10] == 1 and sem[5, 10] == 2 and sem[5, 2] == 1 and sem[0, 0] == 0 and sem[10, 27] == 0
    assert 255 not in sem
    sem2 = np.array(Image.open(out / "semantic" / "000002.png"))
    np.testing.assert_array_equal(sem2, MASKS2[0].astype(np.uint8) * 2)
    sem3 = Image.open(out / "semantic" / "000003.png")
    assert sem3.mode == "P" and sem3.size == (6, 5) and not np.array(sem3).any()


def test_pycocotools_loads_and_loadres(inputs):
    out = inputs["tmp"] / "out"
    assert _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", out).exit_code == 0
    coco = _load_coco(out / "instances.json")
    assert sorted(coco.getImgIds()) == [1, 2, 3] and coco.getCatIds() == [1, 2]
    assert len(coco.getAnnIds(imgIds=[1])) == 3 and len(coco.getAnnIds(imgIds=[3])) == 0
    np.testing.assert_array_equal(coco.annToMask(coco.loadAnns([3])[0]), MASKS1[3].astype(np.uint8))
    anns = json.loads((out / "instances.json").read_text())["annotations"]
    with contextlib.redirect_stdout(io.StringIO()):
        res = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")}
                            for a in anns])
    for a in anns:
        np.testing.assert_array_equal(res.annToMask(res.anns[a["id"]]), coco.annToMask(coco.anns[a["id"]]))
        assert res.anns[a["id"]]["area"] == a["area"]


def test_detectron2_fields(inputs):
    """What ``detectron2.data.datasets.load_coco_json`` reads, with the types it expects."""
    out = inputs["tmp"] / "out"
    assert _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", out).exit_code == 0
    d = json.loads((out / "instances.json").read_text())
    coco = _load_coco(out / "instances.json")
    cat_ids = sorted(coco.getCatIds())
    assert cat_ids == list(range(1, len(cat_ids) + 1))  # contiguous: no id remapping warning
    ann_ids = [a["id"] for a in d["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for im in d["images"]:
        assert isinstance(im["id"], int) and isinstance(im["file_name"], str)
        assert isinstance(im["height"], int) and isinstance(im["width"], int)
        for a in coco.imgToAnns[im["id"]]:
            assert a["image_id"] == im["id"] and a.get("ignore", 0) == 0
    for a in d["annotations"]:
        assert a["iscrowd"] == 0 and isinstance(a["iscrowd"], int)
        assert len(a["bbox"]) == 4 and all(isinstance(v, float) for v in a["bbox"])
        assert a["category_id"] in cat_ids and isinstance(a["category_id"], int)
        seg = a["segmentation"]
        assert isinstance(seg, dict) and isinstance(seg["counts"], str) and seg
        im = coco.imgs[a["image_id"]]
        assert seg["size"] == [im["height"], im["width"]]
        assert isinstance(a["area"], float) and isinstance(a["score"], float)


def test_nms_per_class_and_score_source(inputs):
    store = read_feature_store(inputs["features"])
    labels = np.array([r[2] for r in ROWS])
    out = inputs["tmp"] / "byproposal"
    s = export_pseudo_labels(labels, store, inputs["proposals"], out, use_probs=False, progress=False)
    anns = json.loads((out / "instances.json").read_text())["annotations"]
    # by proposal score p1 (0.95) beats p0 (0.1); the dog p2 still survives
    assert [(a["category_id"], a["score"], a["bbox"][:2]) for a in anns[:3]] == [
        (1, pytest.approx(0.95), [2.0, 3.0]), (2, pytest.approx(0.5), [3.0, 2.0]),
        (1, pytest.approx(0.5), [8.0, 8.0])]
    assert s["config"]["score"] == "proposal" and s["suppressed_nms"] == 1
    # a looser threshold keeps both cats
    s = export_pseudo_labels(labels, store, inputs["proposals"], inputs["tmp"] / "loose", nms_iou=0.95,
                             progress=False)
    assert s["suppressed_nms"] == 0 and s["instances"] == 5


def test_nms_per_class_unit():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    labels = np.array([1, 1, 2, 1])
    assert nms_per_class(boxes, scores, labels, 0.4).tolist() == [0, 2, 3]
    assert nms_per_class(boxes, scores, np.ones(4, int), 0.4).tolist() == [0, 3]
    assert nms_per_class(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.4).tolist() == []


def test_paint_semantic_order():
    big, small = _rect(6, 6, 0, 6, 0, 6), _rect(6, 6, 2, 4, 2, 4)
    for order in ([0, 1], [1, 0]):  # whatever the instance order, the small one ends on top
        masks = np.stack([big, small])[order]
        sem = paint_semantic(6, 6, masks, np.array([3, 7])[order], np.array([0.1, 0.9])[order])
        assert sem[3, 3] == 7 and sem[0, 0] == 3
    # equal areas: the higher score ends on top
    sem = paint_semantic(6, 6, np.stack([big, big]), np.array([3, 7]), np.array([0.9, 0.1]))
    assert (sem == 3).all()


def test_coco_image_id_rules():
    e = [{"id": "0012"}, {"id": "7"}]
    assert coco_image_ids(e) == ([12, 7], "digits")
    assert coco_image_ids([{"id": "a", "coco_id": 5}, {"id": "b", "coco_id": 9}]) == ([5, 9], "coco_id")
    assert coco_image_ids([{"id": "07"}, {"id": "7"}]) == ([1, 2], "position")  # ints would collide
    assert coco_image_ids([{"id": "a", "coco_id": 5}, {"id": "b"}]) == ([1, 2], "position")
    assert coco_image_ids([{"id": "2008_000123"}, {"id": "x"}]) == ([1, 2], "position")


def test_features_option_and_relative_paths(inputs, monkeypatch):
    # the graph records the feature store relative to graph.json's folder
    (inputs["graph"] / "graph.json").write_text(json.dumps({"source": {"feature_store": "../features"}}))
    monkeypatch.chdir(inputs["tmp"] / "cut")
    res = _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", inputs["tmp"] / "o1")
    assert res.exit_code == 0, res.output
    # --features overrides a cut whose summary names no graph
    (inputs["cut"] / "summary.json").write_text("{}")
    res = _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", inputs["tmp"] / "o2")
    assert res.exit_code != 0 and "summary.json: missing path 'graph'" in res.stderr
    res = _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", inputs["tmp"] / "o2",
               "--features", inputs["features"], "--no-palette-pngs", "--nms-iou", "0.5")
    assert res.exit_code == 0, res.output
    assert not (inputs["tmp"] / "o2" / "semantic").exists()
    assert json.loads((inputs["tmp"] / "o2" / "export.json").read_text())["config"]["nms_iou"] == 0.5


def _error_line(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _leftovers(tmp):
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("out"))


def test_error_cases(inputs):
    tmp, cut, out = inputs["tmp"], inputs["cut"], inputs["tmp"] / "out"
    labels = np.array([r[2] for r in ROWS], np.int32)

    def fails(expect_in_message, *extra, proposals=inputs["proposals"]):
        res = _run(cut, "--proposals", proposals, "--out", out, *extra)
        assert res.exit_code not in (0, None), res.output
        line = _error_line(res)
        for s in expect_in_message:
            assert s in line, line
        assert _leftovers(tmp) == [], "an output or temporary folder was left behind"
        return line

    np.save(cut / "labels.npy", labels[:-1])
    fails([str(cut / "labels.npy"), "6 labels", "7 proposals"])
    bad = labels.copy()
    bad[3] = 3
    np.save(cut / "labels.npy", bad)
    fails([str(cut / "labels.npy"), "proposal 3 has label 3", "outside [0, 3)"])
    bad[3] = -1
    np.save(cut / "labels.npy", bad)
    fails([str(cut / "labels.npy"), "proposal 3 has label -1"])
    np.save(cut / "labels.npy", labels.astype(np.float32))
    fails([str(cut / "labels.npy"), "integer"])
    (cut / "labels.npy").write_bytes(b"garbage")
    fails([str(cut / "labels.npy"), "corrupt"])
    np.save(cut / "labels.npy", labels)

    # an image of the feature store missing from the proposal store
    ps2 = _proposal_store(tmp / "ps_missing", ids=["000001", "000002"])
    fails([str(ps2 / "index.json"), "'000003'", "not in the proposal store"], proposals=ps2)

    # a proposal index beyond the image's proposal count: found while writing, nothing left behind
    fs_bad = _feature_store(tmp / "fs_bad", rows=[*ROWS[:-1], (1, 9, 0, 0.7)])
    fails([str(inputs["proposals"] / "images" / "000002.json"), "row 6 names proposal 9", "has 2 proposals"],
          "--features", fs_bad)

    # missing inputs
    fails(["nope", "feature store directory not found"], "--features", tmp / "nope")
    fails([str(tmp / "nope"), "proposal store directory not found"], proposals=tmp / "nope")

    # an existing output without --overwrite is refused before any work
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = _run(cut, "--proposals", inputs["proposals"], "--out", out)
    assert res.exit_code not in (0, None)
    assert str(out) in _error_line(res) and "--overwrite" in _error_line(res)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    res = _run(cut, "--proposals", inputs["proposals"], "--out", out, "--overwrite")  # the user's folder
    assert res.exit_code not in (0, None) and "not a folder this toolkit wrote" in _error_line(res)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    (out / "keep.txt").unlink()
    res = _run(cut, "--proposals", inputs["proposals"], "--out", out)
    assert res.exit_code == 0, res.output
    res = _run(cut, "--proposals", inputs["proposals"], "--out", out, "--overwrite")  # this toolkit's: replaced
    assert res.exit_code == 0, res.output
    assert (out / "instances.json").exists()
    assert _leftovers(tmp) == ["out"]


def test_library_errors_direct(inputs):
    store = read_feature_store(inputs["features"])
    with pytest.raises(LiidError, match=r"labels.npy: expected a 1-d integer array"):
        export_pseudo_labels(np.zeros((7, 1), int), store, inputs["proposals"], inputs["tmp"] / "o")
    assert not (inputs["tmp"] / "o").exists()


def test_empty_mask_dropped(tmp_path):
    fs = read_feature_store(_feature_store(tmp_path / "fs", rows=[(0, 0, 1, 0.9), (0, 1, 2, 0.8)],
                                           images=["a"]))
    masks = np.stack([_rect(6, 7, 1, 3, 1, 3), np.zeros((6, 7), bool)])
    ps = write_proposal_store(tmp_path / "ps", [{"id": "a", "file_name": "a.jpg", "height": 6, "width": 7}],
                              [masks_to_proposals(masks, [0.5, 0.5])])
    s = export_pseudo_labels(np.array([1, 2]), fs, ps, tmp_path / "out", progress=False)
    assert s["instances"] == 1 and s["dropped_empty"] == 1 and s["per_class"] == {"cat": 1, "dog": 0}
    coco = json.loads((tmp_path / "out" / "instances.json").read_text())
    assert coco["images"] == [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 7}]
    assert s["config"]["image_ids"] == "position"


def test_label_off_the_image_is_noise(inputs):
    """With ``build-graph --labels all`` (eq. 10 as written) the cut may give a proposal a class its image does not
    have: export drops it as noise and counts it."""
    labels = np.array([r[2] for r in ROWS], np.int32)
    labels[5] = 1  # image 000002 (labels: dog) proposal 0 -> cat
    np.save(inputs["cut"] / "labels.npy", labels)
    out = inputs["tmp"] / "out"
    res = _run(inputs["cut"], "--proposals", inputs["proposals"], "--out", out)
    assert res.exit_code == 0, res.output
    coco = json.loads((out / "instances.json").read_text())
    assert [(a["image_id"], a["category_id"]) for a in coco["annotations"]] == [(1, 1), (1, 2), (1, 1)]
    summary = json.loads((out / "export.json").read_text())
    assert summary["dropped_not_image_label"] == 1 and summary["dropped_background"] == 3
