"""OAA / OAA+ inside train-cls (paper 003): eq. 2 attention, the hybrid loss (eqs. 7-9) by hand, the maps
kept per image (un-flipped, only when the class wins), saved and resumed exactly, and OAA+ training on them."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import liid.training.train_cls as tc
from liid.cli import main
from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.training.oaa import OaaMaps, attention_from_scores, hybrid_loss, normalised_targets

FAST = ["--backbone", "resnet18", "--from-scratch", "--size", "64", "--batch-size", "4", "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str | Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["train-cls", *map(str, args)])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, 10, seed=0, config=SyntheticConfig(size=64, classes=3), progress=False)
    return out


@pytest.fixture(scope="module")
def oaa_run(syn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "oaa"
    code, text = run(syn, "--out", out, "--epochs", "2", "--oaa", "max", *FAST)
    assert code == 0, text
    return out


def test_eq2_attention_relu_over_max():
    raw = torch.tensor([[[[-1.0, 2.0], [4.0, 1.0]], [[-3.0, -1.0], [-2.0, -5.0]]]])
    a = attention_from_scores(raw)
    assert torch.allclose(a[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(a[0, 1], torch.zeros(2, 2))  # no positive evidence: no attention


def test_hybrid_loss_by_hand():
    # one image, two classes, two pixels; q = sigmoid(0) = 0.5 everywhere
    scores = torch.zeros(1, 2, 1, 2)
    p = torch.tensor([[[[0.5, 0.0]], [[0.0, 0.0]]]])
    # class 1: L+ = -(0.5 log 0.5)/1, L- = -log 0.5 / 1; class 2 (absent): N+ empty, L- = -(2 log 0.5)/2
    want = -0.5 * math.log(0.5) - math.log(0.5) - math.log(0.5)
    assert hybrid_loss(scores, p).item() == pytest.approx(want, rel=1e-6)
    # raising the score where p > 0 lowers the loss; low attention values are never pushed down (no eq. 6 term)
    s2 = scores.clone()
    s2[0, 0, 0, 0] = 3.0
    assert hybrid_loss(s2, p).item() < hybrid_loss(scores, p).item()
    with pytest.raises(ValueError):
        hybrid_loss(scores, p[:, :1])


def test_maps_fuse_only_winning_classes_and_round_trip(tmp_path):
    maps = OaaMaps.empty(["a", "b"], [[1, 3], [2]], num_classes=3, shape=(1, 2), fusion="max")
    att = np.array([[[0.2, 1.0]], [[1.0, 1.0]], [[1.0, 0.4]]], dtype=np.float32)
    maps.update(0, np.array([2.0, 5.0, 1.0]), att)  # class 1 beats absent class 2? no (2 < 5); class 3 neither
    assert maps.counts[0].tolist() == [0, 0] and not maps.maps[0].any()
    maps.update(0, np.array([6.0, 5.0, 1.0]), att)  # now class 1 wins, class 3 still loses
    assert maps.counts[0].tolist() == [1, 0]
    np.testing.assert_allclose(maps.dense(0)[0], [[0.2, 1.0]])
    maps.update(0, np.array([6.0, 5.0, 7.0]), att[::-1].copy())  # both win: element-wise max
    np.testing.assert_array_equal(maps.dense(0)[0], [[1.0, 1.0]])
    np.testing.assert_allclose(maps.dense(0)[2], [[0.2, 1.0]])
    assert not maps.dense(0)[1].any()
    maps.epochs = 3
    maps.save(tmp_path / "oaa.npz")
    back = OaaMaps.load(tmp_path / "oaa.npz")
    assert back.ids == ["a", "b"] and back.epochs == 3 and back.fusion == "max"
    for i in range(2):
        np.testing.assert_array_equal(back.dense(i), maps.dense(i))
        np.testing.assert_array_equal(back.counts[i], maps.counts[i])
    with pytest.raises(LiidError, match="no OAA maps"):
        OaaMaps.load(tmp_path / "nothing.npz")


def test_batch_update_unflips_the_maps():
    data = SimpleNamespace(ids=["x"], flipped=lambda i: True)
    dataset = SimpleNamespace(labels=lambda iid: [1], num_classes=1)
    raw = torch.tensor([[[[0.0, 1.0, 2.0, 4.0]]]])  # flipped input: the object is on the right
    maps = tc._oaa_update(None, "max", data, dataset, raw, torch.tensor([[1.0]]), [0])
    np.testing.assert_allclose(maps.dense(0)[0], [[1.0, 0.5, 0.25, 0.0]])  # stored in image orientation
    t = normalised_targets(maps, [0], [True], (1, 4))
    np.testing.assert_allclose(t[0, 0].numpy(), [[0.0, 0.25, 0.5, 1.0]])  # flipped back for a flipped input


def test_train_cls_oaa_keeps_maps(oaa_run, syn):
    maps = OaaMaps.load(oaa_run / "oaa.npz")
    ds = open_dataset(syn)
    assert maps.epochs == 2 and maps.fusion == "max" and maps.ids == [im.id for im in ds.images]
    for i, iid in enumerate(maps.ids):
        assert maps.present[i].tolist() == sorted(ds.labels(iid))
        m = maps.maps[i]
        assert m.shape[1:] == (2, 2) and m.min() >= 0 and m.max() <= 1  # 64 px / stride 32
        assert ((maps.counts[i] >= 0) & (maps.counts[i] <= 2)).all()
        assert all(m[j].max() == pytest.approx(1.0) for j in np.flatnonzero(maps.counts[i]))


def test_oaa_resume_reproduces_the_maps(oaa_run, syn, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = tc.write_json

    def crash(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(tc, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        tc.train_classifier(open_dataset(syn), out, tc.TrainClsConfig(
            backbone="resnet18", from_scratch=True, size=64, batch_size=4, epochs=2, device="cpu", oaa="max"),
            progress=False, echo=lambda s: None)
    monkeypatch.setattr(tc, "write_json", real)
    assert OaaMaps.load(out / "oaa.npz").epochs == 1
    code, text = run(syn, "--out", out, "--epochs", "2", "--oaa", "max", "--resume", *FAST)
    assert code == 0, text
    a, b = OaaMaps.load(oaa_run / "oaa.npz"), OaaMaps.load(out / "oaa.npz")
    for i in range(len(a.ids)):
        np.testing.assert_allclose(b.maps[i], a.maps[i], atol=1e-6)
        np.testing.assert_array_equal(b.counts[i], a.counts[i])


def test_oaa_plus_trains_on_the_maps(oaa_run, syn, tmp_path):
    out = tmp_path / "int"
    code, text = run(syn, "--out", out, "--epochs", "1", "--oaa-targets", oaa_run, *FAST)
    assert code == 0, text
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["config"]["oaa_targets"] == str(oaa_run)
    code, text = run(syn, "--out", tmp_path / "x", "--oaa-targets", tmp_path / "none", *FAST)
    assert code == 2 and "no OAA maps" in text
    code, text = run(syn, "--out", tmp_path / "y", "--oaa", "max", "--oaa-targets", oaa_run, *FAST)
    assert code == 2 and "exclude each other" in text
    other = tmp_path / "other"
    write_synthetic(other, 16, seed=0, config=SyntheticConfig(size=64, classes=3), progress=False)
    code, text = run(other, "--out", tmp_path / "z", "--oaa-targets", oaa_run, *FAST)
    assert code == 2 and "no OAA maps for" in text
