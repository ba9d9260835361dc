"""extract → feature store → build-graph / `liid label --method mil-argmax`: the store's contents and order,
batching and dtype, the up-to-date skip, refusals of foreign checkpoints, and the graph-free argmax labeler.
A MIL network trained for one epoch (resnet18 from scratch, 64×64, alpha 0) on the synthetic dataset with
ground-truth masks (plus shifted/whole-image/corner masks) as proposals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, invoke

from liid.datasets import Dataset, open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.graph.feature_store import FeatureStore, read_feature_store
from liid.labelers import mil_argmax_labels
from liid.models import MILNetwork, MultiLabelClassifier, build_backbone, save_checkpoint
from liid.proposals.store import masks_to_proposals, write_proposal_store
from liid.training.data import to_input
from liid.training.extract import extract_features, load_mil
from liid.training.mil_data import read_proposal_set

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--backbone", "resnet18", "--from-scratch", "--size", "64", "--device", "cpu"]
TOP = 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, 10, seed=2, config=SyntheticConfig(size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def ds(syn) -> Dataset:
    return open_dataset(syn)


@pytest.fixture(scope="module")
def props(ds, tmp_path_factory) -> Path:
    """Per image: its ground-truth masks, the first one shifted, the whole image, a corner block."""
    metas, per_image = [], []
    for im in ds.images:
        m = ds.instances(im.id).masks
        corner = np.zeros(m.shape[1:], bool)
        corner[:12, :12] = True
        masks = np.concatenate([m, np.stack([np.roll(m[0], 6, axis=1), np.ones(m.shape[1:], bool), corner])])
        per_image.append(masks_to_proposals(masks, np.linspace(1.0, 0.1, len(masks))))
        metas.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
    return write_proposal_store(tmp_path_factory.mktemp("props") / "p", metas, per_image)


@pytest.fixture(scope="module")
def mil(syn, props, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mil") / "mil"
    res = invoke("train-mil", syn, "--proposals", props, "--out", out, "--alpha", "0", "--epochs", "1",
                 "--top", TOP, *FAST)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def store(syn, props, mil, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "s"
    res = invoke("extract", syn, "--proposals", props, "--mil", mil, "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    return out


def foreign_checkpoint(path: Path, model: str, k: int) -> Path:
    """An untrained resnet18 MILNetwork / MultiLabelClassifier checkpoint for ``k`` classes."""
    torch.manual_seed(0)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    net = MILNetwork(trunk, ch, k) if model == "mil" else MultiLabelClassifier(trunk, ch, k)
    path.mkdir()
    names = ["background"] + [f"c{i}" for i in range(1, k + 1)]
    save_checkpoint(path / "checkpoint.pt", net, None, 1,
                    {"backbone": "resnet18", "num_classes": k, "class_names": names, "config": {}, "size": 64})
    return path


# --- liid extract ----------------------------------------------------------------------------------------
def test_store_contents(ds, props, store):
    fs = read_feature_store(store)
    pset = read_proposal_set(ds, props, progress=False)
    per_image = [min(TOP, len(b)) for b in pset.boxes]
    assert fs.num_proposals == sum(per_image) == TOP * len(ds)
    assert fs.features.dtype == np.float16 and fs.features.shape == (fs.num_proposals, 512)
    assert fs.probs.dtype == np.float32 and fs.probs.shape == (fs.num_proposals, 7)
    np.testing.assert_allclose(np.asarray(fs.probs).sum(axis=1), 1.0, atol=1e-5)
    assert fs.images == [im.id for im in ds.images] and fs.classes == ds.classes
    img = np.asarray(fs.proposal_image)
    assert img.tolist() == np.repeat(np.arange(len(ds)), per_image).tolist()
    for i, m in enumerate(per_image):
        assert np.asarray(fs.proposal_index)[img == i].tolist() == list(range(m))
    want = np.stack([ds.label_vector(im.id) for im in ds.images]).astype(bool)
    np.testing.assert_array_equal(np.asarray(fs.image_labels), want)
    meta = json.loads((store / "store.json").read_text())
    assert meta["inputs"]["top"] == TOP and meta["inputs"]["size"] == 64 and meta["inputs"]["float32"] is False
    assert meta["extract"]["feature_dtype"] == "float16"


def test_rows_match_a_forward_pass_and_batching(ds, props, mil, store):
    model, meta = load_mil(mil, ds, CPU)
    assert meta["top"] == TOP and not model.training
    pset = read_proposal_set(ds, props, TOP, progress=False)
    one, stats = extract_features(model, ds, pset, 64, CPU, batch_images=1, feature_dtype=np.float32,
                                  progress=False)
    three, _ = extract_features(model, ds, pset, 64, CPU, batch_images=3, feature_dtype=np.float32,
                                progress=False)
    assert one.features.dtype == np.float32 and stats["batch_images"] == 1
    np.testing.assert_allclose(one.features, three.features, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.probs, three.probs, rtol=1e-4, atol=1e-6)
    # the rows of image i are that image's own proposals, unflipped, at the training size
    i = len(ds) - 1
    x = to_input(ds.load_image(pset.ids[i]), 64)[None]
    boxes = torch.from_numpy(pset.boxes[i].copy())  # 64×64 images at size 64: no scaling
    f, p = model.extract(x, [boxes])
    rows = np.asarray(one.proposal_image) == i
    np.testing.assert_allclose(one.features[rows], f.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.probs[rows], p.numpy(), rtol=1e-4, atol=1e-6)
    # the written float16 store holds the same numbers
    fs = read_feature_store(store)
    np.testing.assert_allclose(np.asarray(fs.features, np.float32), one.features, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(fs.probs, one.probs, rtol=1e-5, atol=1e-6)


def test_rerun_skips_and_other_settings(syn, props, mil, store, tmp_path):
    stamp = (store / "store.json").stat().st_mtime_ns
    res = invoke("extract", syn, "--proposals", props, "--mil", mil, "--out", store, "--device", "cpu")
    assert res.exit_code == 0 and "up to date" in res.stdout, res.output
    assert (store / "store.json").stat().st_mtime_ns == stamp
    res = invoke("extract", syn, "--proposals", props, "--mil", mil, "--out", store, "--float32")
    assert_one_line_error(res, str(store), "--overwrite")
    assert (store / "store.json").stat().st_mtime_ns == stamp
    out = tmp_path / "s32"
    res = invoke("extract", syn, "--proposals", props, "--mil", mil, "--out", out, "--float32", "--top", "2",
                 "--batch-images", "3", "--device", "cpu")
    assert res.exit_code == 0, res.output
    fs = read_feature_store(out)
    assert fs.features.dtype == np.float32 and fs.num_proposals == 2 * len(fs.images)
    assert np.asarray(fs.proposal_index).tolist() == [0, 1] * len(fs.images)


def test_extract_refuses_foreign_checkpoints(syn, props, tmp_path):
    out = tmp_path / "s"
    k3 = foreign_checkpoint(tmp_path / "k3", "mil", 3)
    res = invoke("extract", syn, "--proposals", props, "--mil", k3, "--out", out)
    assert res.exit_code == 2
    assert_one_line_error(res, str(k3 / "checkpoint.pt"), "K=3", "K=6")
    assert not out.exists()
    cls = foreign_checkpoint(tmp_path / "cls", "cls", 6)
    res = invoke("extract", syn, "--proposals", props, "--mil", cls, "--out", out)
    assert_one_line_error(res, "MultiLabelClassifier", "not a MIL network")
    assert not out.exists()
    with pytest.raises(LiidError, match="not found"):
        load_mil(tmp_path / "nothing", open_dataset(syn), CPU)


def test_build_graph_on_store(store, tmp_path):
    res = invoke("build-graph", store, "--out", tmp_path / "g")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / "graph.json").is_file()


# --- mil-argmax ------------------------------------------------------------------------------------------
def hand_store() -> FeatureStore:
    probs = np.array([[0.1, 0.2, 0.6, 0.1],  # image 0 (class 1): absent class 2 is the most probable
                      [0.5, 0.1, 0.3, 0.1],  # background
                      [0.05, 0.7, 0.1, 0.15],  # image 1 (classes 2, 3): absent class 1 is the most probable
                      [0.2, 0.0, 0.8, 0.0]], np.float32)
    labels = np.array([[False, True, False, False],  # background column left False: still allowed
                       [True, False, True, True]])
    return FeatureStore(features=np.zeros((4, 2), np.float32), probs=probs,
                        proposal_image=np.array([0, 0, 1, 1], np.int32), proposal_index=np.array([0, 1, 0, 1]),
                        image_labels=labels, classes=["background", "a", "b", "c"], images=["x", "y"])


def test_mil_argmax_hand_made():
    fs = hand_store()
    assert mil_argmax_labels(fs).tolist() == [1, 0, 3, 2]
    assert mil_argmax_labels(fs, restrict_to_image_labels=False).tolist() == [2, 0, 1, 2]
    assert mil_argmax_labels(fs, chunk=1).tolist() == [1, 0, 3, 2]
    assert mil_argmax_labels(fs).dtype == np.int32
    assert np.asarray(fs.image_labels)[:, 0].tolist() == [False, True]  # the input is not modified


def test_mil_argmax_random_never_picks_absent_classes():
    rng = np.random.default_rng(0)
    n, k1, images = 500, 6, 40
    probs = rng.dirichlet(np.ones(k1), n).astype(np.float32)
    labels = rng.random((images, k1)) < 0.3
    img = rng.integers(0, images, n)
    fs = FeatureStore(np.zeros((n, 2), np.float32), probs, img, np.zeros(n, np.int64), labels,
                      [str(c) for c in range(k1)], [str(i) for i in range(images)])
    got = mil_argmax_labels(fs, chunk=64)
    allowed = labels[img]
    allowed[:, 0] = True
    assert allowed[np.arange(n), got].all()
    np.testing.assert_array_equal(got, np.where(allowed, probs, -1).argmax(axis=1))
    free = mil_argmax_labels(fs, restrict_to_image_labels=False)
    np.testing.assert_array_equal(free, probs.argmax(axis=1))
    assert not allowed[np.arange(n), free].all()  # unrestricted does pick absent classes here


def test_label_mil_argmax_cli(ds, props, store, tmp_path):
    out = tmp_path / "x"
    res = invoke("label", "--method", "mil-argmax", "--features", store, "--proposals", props, "--out", out)
    assert res.exit_code == 0, res.output
    coco = json.loads((out / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ds.classes[1:]
    assert [c["id"] for c in coco["categories"]] == list(range(1, len(ds.classes)))
    assert len(coco["images"]) == len(ds)
    assert coco["annotations"]
    by_coco_id = {im["id"]: im["file_name"].rsplit(".", 1)[0] for im in coco["images"]}
    for a in coco["annotations"]:
        assert a["category_id"] in ds.labels(by_coco_id[a["image_id"]]).tolist()
        assert a["iscrowd"] == 0 and a["segmentation"]["counts"] and 0 <= a["score"] <= 1
    summary = json.loads((out / "export.json").read_text())
    assert summary["inputs"]["method"] == "mil-argmax" and summary["inputs"]["restrict_to_image_labels"]
    assert summary["proposals"] == read_feature_store(store).num_proposals
    # the same command again is skipped; other settings are refused without --overwrite, done with it
    stamp = (out / "instances.json").stat().st_mtime_ns
    res = invoke("label", "--method", "mil-argmax", "--features", store, "--proposals", props, "--out", out)
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    res = invoke("label", "--method", "mil-argmax", "--features", store, "--proposals", props, "--out", out,
                 "--any-label")
    assert_one_line_error(res, str(out), "--overwrite")
    assert (out / "instances.json").stat().st_mtime_ns == stamp
    res = invoke("label", "--method", "mil-argmax", "--features", store, "--proposals", props, "--out", out,
                 "--overwrite", "--any-label")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "export.json").read_text())["inputs"]["restrict_to_image_labels"] is False


def test_label_needs_features(props, tmp_path):
    out = tmp_path / "x"
    res = invoke("label", "--method", "mil-argmax", "--proposals", props, "--out", out)
    assert_one_line_error(res, "--features")
    assert not out.exists()
    res = invoke("label", "--method", "mil-argmax", "--features", tmp_path / "none", "--proposals", props,
                 "--out", out)
    assert_one_line_error(res, str(tmp_path / "none"))
    assert not out.exists()
