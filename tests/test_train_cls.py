"""train-cls: outputs, determinism on CPU, exact resume, clear errors (class count, missing weights, unlabelled
images, existing output), and compute_cams shapes/range. resnet18 from scratch on 64×64 synthetic images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import liid.training.train_cls as tc
from liid.cli import main
from liid.datasets import open_dataset, register_dataset, unregister_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.models import build_backbone, hub_weights_path
from liid.models.classifier import MultiLabelClassifier
from liid.training import ClassificationData, compute_cams

FAST = ["--backbone", "resnet18", "--from-scratch", "--size", "64", "--batch-size", "4", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, 12, seed=0, config=SyntheticConfig(size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def syn3(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data3") / "syn3"
    write_synthetic(out, 12, seed=1, config=SyntheticConfig(size=64, classes=3), progress=False)
    return out


def run(*args: str | Path) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["train-cls", *map(str, args)])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def step_losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
            if json.loads(line)["type"] == "step"]


@pytest.fixture(scope="module")
def two_epochs(syn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    code, text = run(syn, "--out", out, "--epochs", "2", *FAST)
    assert code == 0, text
    return out


def test_run_writes_outputs(two_epochs):
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json"):
        assert (two_epochs / name).is_file(), name
    rec = json.loads((two_epochs / "train.json").read_text())
    assert rec["finished"] and rec["epochs_done"] == 2 and rec["images"] == 10 and rec["freeze_bn"] is False
    assert rec["settings"]["backbone"] == "resnet18" and rec["settings"]["size"] == 64
    final = rec["final"]
    assert math.isfinite(final["loss"]) and 0 <= final["train_map"] <= 1 and 0 <= final["train_label_accuracy"] <= 1
    losses = step_losses(two_epochs)
    assert len(losses) == 2 * 3 and all(math.isfinite(v) for v in losses)  # 10 images, batches of 4
    records = [json.loads(line) for line in (two_epochs / "log.jsonl").read_text().splitlines()]
    lrs = {r["epoch"]: r["lr"] for r in records if r["type"] == "epoch"}
    assert lrs == {1: 0.01, 2: pytest.approx(0.001)}
    ckpt = torch.load(two_epochs / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["epoch"] == 2 and ckpt["meta"]["num_classes"] == 6


def test_same_seed_same_losses(syn, two_epochs, tmp_path):
    code, text = run(syn, "--out", tmp_path / "b", "--epochs", "2", *FAST)
    assert code == 0, text
    assert step_losses(tmp_path / "b") == step_losses(two_epochs)
    code, text = run(syn, "--out", tmp_path / "c", "--epochs", "2", "--seed", "1", *FAST)
    assert code == 0, text
    assert step_losses(tmp_path / "c") != step_losses(two_epochs)


def test_resume_matches_uninterrupted(syn, two_epochs, tmp_path, monkeypatch):
    out = tmp_path / "r"
    calls = []
    real = tc.write_json

    def crash_after_first_epoch(*a, **k):
        real(*a, **k)
        calls.append(1)
        raise KeyboardInterrupt  # after epoch 1's checkpoint, log and plot are written

    monkeypatch.setattr(tc, "write_json", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        tc.train_classifier(open_dataset(syn), out, tc.TrainClsConfig(
            backbone="resnet18", from_scratch=True, size=64, batch_size=4, epochs=2, device="cpu"),
            progress=False, echo=lambda s: None)
    monkeypatch.setattr(tc, "write_json", real)
    assert calls == [1] and torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    code, text = run(syn, "--out", out, "--epochs", "2", *FAST)
    assert code == 2 and "--resume" in text
    code, text = run(syn, "--out", out, "--epochs", "2", "--resume", *FAST)
    assert code == 0, text
    assert "resuming after epoch 1/2" in text
    assert step_losses(out) == step_losses(two_epochs)
    # other settings are refused on resume
    code, text = run(syn, "--out", out, "--epochs", "2", "--resume", "--lr", "0.1", *FAST)
    assert code == 2 and "lr" in text


def test_checkpoint_of_other_class_count(syn3, two_epochs, tmp_path):
    code, text = run(syn3, "--out", two_epochs, "--epochs", "2", "--resume", *FAST)
    assert code == 2
    assert "K=6" in text and "K=3" in text and "checkpoint.pt" in text


def test_no_weights_names_hub_path(syn, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    args = [a for a in FAST if a != "--from-scratch"]
    code, text = run(syn, "--out", tmp_path / "w", *args)
    assert code == 2
    assert str(hub_weights_path("resnet18")) in text and str(tmp_path / "torch_home") in text
    assert "--from-scratch" in text and not (tmp_path / "w").exists()


def test_unlabelled_image(syn, tmp_path):
    ds = open_dataset(syn)
    bad = ds.images[3].id

    class NoLabels(type(ds)):
        def labels(self, image_id: str) -> np.ndarray:
            return np.zeros(0, dtype=np.int64) if image_id == bad else super().labels(image_id)

    ds.__class__ = NoLabels
    with pytest.raises(LiidError, match=bad):
        ClassificationData(ds, 64)
    register_dataset("unlabelled-test", lambda: ds)
    try:
        code, text = run("unlabelled-test", "--out", tmp_path / "u", *FAST)
    finally:
        unregister_dataset("unlabelled-test")
    assert code == 2 and bad in text and "no labels" in text
    assert not (tmp_path / "u").exists()


def test_existing_output_and_overwrite(syn, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, text = run(syn, "--out", out, "--epochs", "1", *FAST)
    assert code == 2 and "--overwrite" in text
    code, text = run(syn, "--out", out, "--epochs", "1", "--overwrite", *FAST)
    assert code == 2 and "not a train-cls folder" in text and (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    (out / "log.jsonl").write_text("stale\n")
    code, text = run(syn, "--out", out, "--epochs", "1", "--overwrite", *FAST)
    assert code == 0, text
    assert len(step_losses(out)) == 3


def test_data_items(syn):
    data = ClassificationData(open_dataset(syn), 48, seed=0)
    x, y, i = data[0]
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and y.shape == (6,) and i == 0
    assert y.sum() >= 1 and set(y.tolist()) <= {0.0, 1.0}
    flips = [[data.flipped(j) for j in range(len(data))] for data.epoch in (0, 1)]
    assert flips[0] != flips[1] and any(flips[0]) and not all(flips[0])
    data.train = False
    assert not any(data.flipped(j) for j in range(len(data)))


def test_compute_cams(syn):
    ds = open_dataset(syn)
    torch.manual_seed(0)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    model = MultiLabelClassifier(trunk, ch, ds.num_classes).train()
    ids = [im.id for im in ds.images[:3]]
    cams = compute_cams(model, ds, ids, size=96)
    assert list(cams) == ids and model.training
    for iid in ids:
        info = ds.info(iid)
        a = cams[iid]
        assert a.shape == (6, info.height, info.width) and a.dtype == np.float16
        assert a.min() >= 0 and a.max() <= 1 and np.isfinite(a).all()
        peaks = a.reshape(6, -1).max(axis=1)
        assert np.all((peaks == 0) | (np.abs(peaks - 1) < 1e-2))
