"""`liid label` with the semantic-only methods (oaa, oaa+, am-saliency): PNGs for every image, no instances.json,
labels within the image's classes, the stage rule, and the bad-input lines (instances asked of a method that
defines none, saliency folders with missing or wrongly sized maps, a plain classifier given as OAA+)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from PIL import Image

from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic

FAST = ["--backbone", "resnet18", "--from-scratch", "--size", "64", "--batch-size", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("sem")
    syn = root / "syn"
    write_synthetic(syn, 6, seed=0, config=SyntheticConfig(size=64, classes=3), val_fraction=0.0, progress=False)
    for args in (["--out", root / "cls", "--epochs", "2", "--oaa", "max"],
                 ["--out", root / "int", "--epochs", "1", "--oaa-targets", root / "cls"]):
        res = invoke("train-cls", syn, *args, *FAST)
        assert res.exit_code == 0, res.output
    return {"syn": syn, "cls": root / "cls", "int": root / "int", "ds": open_dataset(syn)}


def check_semantic_export(out: Path, ds) -> None:
    assert not (out / "instances.json").exists()
    rec = json.loads((out / "export.json").read_text())
    assert rec["instances_json"] is False and rec["images"] == len(ds.images)
    for im in ds.images:
        sem = np.asarray(Image.open(out / "semantic" / f"{im.id}.png"))
        assert sem.shape == (im.height, im.width)
        assert set(np.unique(sem).tolist()) <= {0, *ds.labels(im.id)}, im.id


@pytest.mark.parametrize("method,source", [("oaa", "cls"), ("oaa+", "int")])
def test_oaa_methods_write_semantic_maps(data, tmp_path, method, source):
    out = tmp_path / method
    res = invoke("label", "--method", method, "--cams", data[source], "--dataset", data["syn"], "--out", out,
                 "--device", "cpu") if method == "oaa+" else \
        invoke("label", "--method", method, "--cams", data[source], "--dataset", data["syn"], "--out", out)
    assert res.exit_code == 0, res.output
    assert "no instances" in res.output
    check_semantic_export(out, data["ds"])
    res = invoke("evaluate", data["syn"], out)  # liid evaluate takes it unchanged: mIoU
    assert res.exit_code == 0, res.output
    assert "miou" in res.output.strip().splitlines()[-1]
    again = invoke("label", "--method", method, "--cams", data[source], "--dataset", data["syn"], "--out", out)
    assert again.exit_code == 0 and "up to date" in again.output, again.output


def test_oaa_maps_follow_the_fusion(data, tmp_path):
    """Labels from the maps of the cls run equal cam_semantic on the resized maps, pixel for pixel."""
    from liid.labelers.cam import cam_semantic
    from liid.labelers.semantic import resize_maps
    from liid.training.oaa import OaaMaps

    out = tmp_path / "o"
    res = invoke("label", "--method", "oaa", "--cams", data["cls"], "--dataset", data["syn"], "--out", out,
                 "--cam-threshold", "0.5")
    assert res.exit_code == 0, res.output
    maps = OaaMaps.load(data["cls"] / "oaa.npz")
    for i, iid in enumerate(maps.ids):
        info = data["ds"].info(iid)
        want = cam_semantic(resize_maps(maps.dense(i), info.height, info.width), data["ds"].labels(iid), 0.5)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "semantic" / f"{iid}.png")), want)


def test_am_saliency_with_a_folder_and_with_opencv(data, tmp_path):
    sal = tmp_path / "sal"
    sal.mkdir()
    for im in data["ds"].images:  # a "precomputed" saliency map: the ground-truth foreground
        inst = data["ds"].instances(im.id)
        fg = inst.masks.any(axis=0) if len(inst) else np.zeros((im.height, im.width), bool)
        Image.fromarray((fg * 255).astype(np.uint8)).save(sal / f"{im.id}.png")
    out = tmp_path / "am"
    res = invoke("label", "--method", "am-saliency", "--cams", data["cls"], "--dataset", data["syn"],
                 "--saliency", sal, "--no-crf", "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    check_semantic_export(out, data["ds"])
    out2 = tmp_path / "am2"
    res = invoke("label", "--method", "am-saliency", "--cams", data["cls"], "--dataset", data["syn"],
                 "--rounds", "2", "--out", out2, "--device", "cpu")
    assert res.exit_code == 0, res.output
    check_semantic_export(out2, data["ds"])


def test_bad_input(data, tmp_path):
    out = tmp_path / "out"
    base = ["label", "--cams", data["cls"], "--dataset", data["syn"], "--out", out]
    res = invoke(*base, "--method", "oaa", "--instances", "rect")
    assert_one_line_error(res, "--method oaa defines no instance output", "--instances is for --method cam")
    res = invoke(*base, "--method", "oaa", "--saliency", "opencv")
    assert_one_line_error(res, "--saliency: not an option of --method oaa")
    res = invoke("label", "--method", "dsrg", "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, "--method dsrg needs --model")
    res = invoke(*base, "--method", "oaa+")  # a plain (OAA) classifier is not an integral attention model
    assert_one_line_error(res, "not an OAA+ integral attention model")
    res = invoke("label", "--method", "oaa", "--cams", data["int"], "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, "no OAA maps")
    sal = tmp_path / "sal"
    sal.mkdir()
    ids = [im.id for im in data["ds"].images]
    for iid in ids[:-2]:
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(sal / f"{iid}.png")
    res = invoke(*base, "--method", "am-saliency", "--saliency", sal)
    assert_one_line_error(res, ids[-2], ids[-1])  # the missing maps are named
    for iid in ids[-2:]:
        Image.fromarray(np.zeros((32, 48), np.uint8)).save(sal / f"{iid}.png")
    res = invoke(*base, "--method", "am-saliency", "--saliency", sal, "--no-crf", "--device", "cpu")
    assert_one_line_error(res, f"{ids[-2]}.png", "32x48")  # the wrongly sized map: its file and both sizes
    res = invoke(*base, "--method", "am-saliency", "--saliency", tmp_path / "nowhere")
    assert_one_line_error(res, "neither 'opencv' nor an existing folder")
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith("out")]


@pytest.mark.parametrize("method", ["dsrg", "vit-sm"])
def test_trained_methods_label_through_the_cli(data, tmp_path, method):
    """train-dsrg / train-vit, then `liid label --method dsrg|vit-sm --model DIR`: the same semantic export."""
    model = tmp_path / "model"
    if method == "dsrg":
        res = invoke("train-dsrg", data["syn"], "--cams", data["cls"], "--saliency", "opencv", "--out", model,
                     "--backbone", "resnet18", "--from-scratch", "--epochs", "1", "--crop", "64", "--batch-size", "2",
                     "--boundary-weight", "0", "--device", "cpu")
    else:
        res = invoke("train-vit", data["syn"], "--out", model, "--from-scratch", "--embed-dim", "32", "--depth", "2",
                     "--heads", "2", "--patch", "16", "--size", "64", "--epochs", "1", "--warmup-epochs", "0",
                     "--batch-size", "4", "--device", "cpu")
    assert res.exit_code == 0, res.output
    out = tmp_path / "labels"
    res = invoke("label", "--method", method, "--model", model, "--dataset", data["syn"], "--out", out,
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    check_semantic_export(out, data["ds"])
    res = invoke("label", "--method", method, "--model", model, "--dataset", data["syn"], "--out", tmp_path / "x",
                 "--instances", "rect")
    assert_one_line_error(res, f"--method {method} defines no instance output")
    res = invoke("label", "--method", method, "--model", data["cls"], "--dataset", data["syn"], "--out",
                 tmp_path / "y", "--device", "cpu")  # a classifier folder is not this method's model
    assert res.exit_code != 0 and "Traceback" not in res.output and res.stderr.startswith("error: ")
