"""vit-sm (paper 002): the semantic-modulation math on hand-made matrices, the multi-class-token ViT (attention
rows, shapes, same math as timm), DeiT weight loading, and train-vit (outputs, exact resume, load_vit, CAMs).
Tiny networks (embed 32-64, patch 8) on 64-px synthetic images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

from click.testing import CliRunner  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

import liid.training.train_vit as tv  # noqa: E402
from liid.commands.train_vit import command  # noqa: E402
from liid.datasets import open_dataset  # noqa: E402
from liid.datasets.synthetic import SyntheticConfig, write_synthetic  # noqa: E402
from liid.errors import LiidError  # noqa: E402
from liid.labelers.vit_sm import (  # noqa: E402
    ALPHA,
    TOP,
    cams_to_image,
    final_cam,
    modulate,
    related_count,
    related_patch_score,
    split_attention,
    vit_sm_cams,
)
from liid.models.vit import DEIT_S_FILE, MultiClassTokenViT, load_deit_weights  # noqa: E402
from liid.training.data import to_input  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4}
FAST = ["--embed-dim", "32", "--depth", "2", "--heads", "4", "--patch", "8", "--size", "64", "--from-scratch",
        "--batch-size", "4", "--lr", "1e-3", "--warmup-epochs", "0", "--device", "cpu"]


def fast_config(**kw) -> tv.TrainVitConfig:
    base = {"embed_dim": 32, "depth": 2, "num_heads": 4, "patch_size": 8, "size": 64, "from_scratch": True,
            "batch_size": 4, "lr": 1e-3, "warmup_epochs": 0, "device": "cpu", "epochs": 2}
    return tv.TrainVitConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------- the math
def test_constants():
    assert TOP == 0.3 and ALPHA == 1.2
    assert [related_count(n) for n in (3, 5, 10, 196)] == [1, 2, 3, 59]  # 0.9→1, 1.5→2 (half up), 58.8→59


def test_split_attention_blocks():
    attn = np.arange(25, dtype=float).reshape(5, 5)  # C = 2 class tokens, N = 3 patches
    c2p, p2p = split_attention(attn, 2)
    np.testing.assert_array_equal(c2p, [[2, 3, 4], [7, 8, 9]])
    np.testing.assert_array_equal(p2p, [[12, 13, 14], [17, 18, 19], [22, 23, 24]])
    with pytest.raises(LiidError, match="attention"):
        split_attention(attn[:, :4], 2)
    with pytest.raises(LiidError, match="attention"):
        split_attention(attn, 5)  # no patch left


def test_related_patch_score_by_hand():
    # N = 10 patches, so the top 30 % are 3: row i of A_p2p ranks patches i, i+1, i+2 (mod 10) first.
    p2p = np.full((10, 10), 0.05)
    for i in range(10):
        for k, v in enumerate((0.3, 0.2, 0.1)):
            p2p[i, (i + k) % 10] = v
    c2p = np.stack([np.arange(10.0), 10.0 - np.arange(10.0)])
    r = related_patch_score(c2p, p2p)
    # class 0: mean of (i, i+1, i+2) = i+1; wrap-around at i = 8: (8+9+0)/3, i = 9: (9+0+1)/3
    np.testing.assert_allclose(r[0], [1, 2, 3, 4, 5, 6, 7, 8, 17 / 3, 10 / 3])
    # class 1 (values 10..1): 9-i; i = 8: (2+1+10)/3, i = 9: (1+10+9)/3
    np.testing.assert_allclose(r[1], [9, 8, 7, 6, 5, 4, 3, 2, 13 / 3, 20 / 3])
    # ties go to the lower index: N = 3 → one related patch, patch 0 for every row
    np.testing.assert_allclose(related_patch_score([[1.0, 2.0, 3.0]], np.ones((3, 3))), [[1, 1, 1]])
    with pytest.raises(LiidError, match="a_c2p"):
        related_patch_score(np.ones((2, 4)), p2p)
    with pytest.raises(LiidError, match="top"):
        related_patch_score(c2p, p2p, top=0)


def test_modulate_adds_alpha_r():
    rng = np.random.default_rng(0)
    a, r = rng.random((3, 7)), rng.random((3, 7))
    np.testing.assert_array_equal(modulate(a, r), a + 1.2 * r)
    np.testing.assert_array_equal(modulate(a, r, alpha=0.0), a)
    with pytest.raises(LiidError, match="r:"):
        modulate(a, r[:, :6])


def test_final_cam_by_hand():
    original = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 2.0]])  # the -1 is ReLU'd away
    c2p = np.array([[0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])
    p2p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])  # not symmetric: the order matters
    # Modulated = [[0.5, 2, 0], [0, 0, 2]]; Final(c, i) = Σ_j p2p(i, j) Modulated(c, j)
    np.testing.assert_allclose(final_cam(original, c2p, p2p), [[0.5, 1.25, 0.0], [0.0, 0.0, 2.0]])
    with pytest.raises(LiidError, match="a_p2p"):
        final_cam(original, c2p, p2p[:2])


def test_cams_to_image_shape_and_range():
    cam = np.array([[0.0, 1.0, 2.0, 4.0], [-1.0, -2.0, 0.0, 0.0], [3.0, -1.0, 0.0, 0.0]])
    out = cams_to_image(cam, (2, 2), (5, 7))
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out[0].max() == pytest.approx(1.0) and out[2].max() == pytest.approx(1.0)
    assert not out[1].any()  # no positive response: all 0
    assert out[0, -1, -1] == pytest.approx(1.0) and out[0, 0, 0] == 0  # the peak stays in its corner
    with pytest.raises(LiidError, match="cam"):
        cams_to_image(cam, (3, 2), (5, 7))


# ------------------------------------------------------------------------------------------------ the network
def test_model_shapes_and_attention_rows():
    torch.manual_seed(0)
    model = MultiClassTokenViT(3, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x, n_layers=2)
        assert out.cls_logits.shape == (2, 3) and out.patch_logits.shape == (2, 3)
        assert out.cams.shape == (2, 3, 8, 8) and out.attn.shape == (2, 2, 3 + 64, 3 + 64)
        torch.testing.assert_close(out.attn.sum(-1), torch.ones(2, 2, 67))
        assert (out.attn >= 0).all()
        torch.testing.assert_close(out.patch_logits, out.cams.mean(dim=(2, 3)))
        tokens = model.tokens(x)[0]
        torch.testing.assert_close(out.cls_logits, tokens[:, :3].mean(-1))
        assert model(x).attn is None  # training needs no weights: fused path
        torch.testing.assert_close(model(x).cls_logits, out.cls_logits)  # fused and explicit paths agree
        # another input size: the position embedding is resampled to the 6×4 grid
        other = model(torch.randn(1, 3, 48, 32), n_layers=1)
        assert other.cams.shape == (1, 3, 6, 4) and other.attn.shape == (1, 1, 27, 27)
    with pytest.raises(ValueError, match="patch size"):
        model(torch.randn(1, 3, 60, 64))


def _tiny_timm(img_size: int = 32) -> VisionTransformer:
    torch.manual_seed(1)
    return VisionTransformer(img_size=img_size, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)


def test_load_deit_weights_tiny(tmp_path):
    """Same math as timm: with one class token and the file's own grid, our tokens are timm's forward_features."""
    src = _tiny_timm().eval()
    file = tmp_path / "tiny.pth"
    torch.save({"model": src.state_dict()}, file)  # DeiT's file layout
    same = MultiClassTokenViT(1, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4).eval()
    assert load_deit_weights(same, file) == file
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(same.tokens(x, n_layers=2)[0], src.forward_features(x))
    # C = 3 class tokens on a 64-px grid (8×8 from the file's 4×4)
    model = MultiClassTokenViT(3, img_size=64, patch_size=8, embed_dim=64, depth=2, num_heads=4)
    head = model.head.weight.detach().clone()
    load_deit_weights(model, file)
    sd = src.state_dict()
    for c in range(3):
        torch.testing.assert_close(model.cls_token[0, c], sd["cls_token"][0, 0])
        torch.testing.assert_close(model.pos_embed[0, c], sd["pos_embed"][0, 0])
    assert model.pos_embed.shape == (1, 3 + 64, 64)
    torch.testing.assert_close(model.blocks[1].attn.qkv.weight, sd["blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(model.head.weight, head)  # our head keeps its init


def test_load_deit_weights_errors(tmp_path, monkeypatch):
    model = MultiClassTokenViT(2, img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4)
    with pytest.raises(LiidError, match="not found"):
        load_deit_weights(model, tmp_path / "missing.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(LiidError, match=DEIT_S_FILE) as e:
        load_deit_weights(model)
    assert "\n" not in str(e.value)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(_tiny_timm().state_dict(), tmp_path / "hub" / "checkpoints" / DEIT_S_FILE)
    assert load_deit_weights(model) == tmp_path / "hub" / "checkpoints" / DEIT_S_FILE  # the hub cache file
    deeper = MultiClassTokenViT(2, img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)
    with pytest.raises(LiidError, match="--depth"):
        load_deit_weights(deeper)
    wider = MultiClassTokenViT(2, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    with pytest.raises(LiidError, match="--embed-dim"):
        load_deit_weights(wider)
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(LiidError, match="not a DeiT"):
        load_deit_weights(model, tmp_path / "other.pth")


def test_load_deit_small(tmp_path):
    """The real layout: timm's deit_small_patch16_224 (random init, nothing downloaded) into 20 class tokens."""
    import timm

    torch.manual_seed(0)
    src = timm.create_model("deit_small_patch16_224", pretrained=False)
    torch.save(src.state_dict(), tmp_path / DEIT_S_FILE)
    model = MultiClassTokenViT(20)
    load_deit_weights(model, tmp_path / DEIT_S_FILE)
    assert model.cls_token.shape == (1, 20, 384) and model.pos_embed.shape == (1, 20 + 196, 384)
    torch.testing.assert_close(model.pos_embed[0, 20:], src.pos_embed[0, 1:])  # same 14×14 grid: copied


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, 12, seed=0, config=SyntheticConfig(size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def two_epochs(syn, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    tv.train_vit(open_dataset(syn), out, fast_config(), progress=False, echo=lambda s: None)
    return out


def step_losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]


def test_run_writes_outputs(two_epochs):
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json"):
        assert (two_epochs / name).is_file(), name
    rec = json.loads((two_epochs / "train.json").read_text())
    assert rec["format"] == "liid-train-vit" and rec["finished"] and rec["epochs_done"] == 2 and rec["images"] == 10
    assert rec["arch"]["embed_dim"] == 32 and rec["weights"] is None
    f = rec["final"]
    assert math.isfinite(f["loss"]) and 0 <= f["train_map"] <= 1 and 0 <= f["train_map_patch"] <= 1
    losses = step_losses(two_epochs)
    assert len(losses) == 2 * 3 and all(math.isfinite(v) for v in losses)  # 10 images, batches of 4
    step = json.loads((two_epochs / "log.jsonl").read_text().splitlines()[0])
    assert step["loss"] == pytest.approx(step["loss_cls"] + step["loss_pat"], rel=1e-5)
    meta = torch.load(two_epochs / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["epoch"] == 2 and meta["num_classes"] == 6 and meta["size"] == 64
    assert meta["arch"]["depth"] == 2 and meta["model"] == "MultiClassTokenViT" and len(meta["class_names"]) == 7


def test_resume_matches_uninterrupted(syn, two_epochs, tmp_path, monkeypatch):
    out = tmp_path / "r"
    real = tv.write_json

    def crash_after_first_epoch(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # after epoch 1's checkpoint, log and plot are written

    monkeypatch.setattr(tv, "write_json", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        tv.train_vit(open_dataset(syn), out, fast_config(), progress=False, echo=lambda s: None)
    monkeypatch.setattr(tv, "write_json", real)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    with pytest.raises(LiidError, match="--resume"):
        tv.train_vit(open_dataset(syn), out, fast_config(), progress=False, echo=lambda s: None)
    said: list[str] = []
    tv.train_vit(open_dataset(syn), out, fast_config(), resume=True, progress=False, echo=said.append)
    assert "resuming after epoch 1/2" in said[0]
    assert step_losses(out) == step_losses(two_epochs)
    with pytest.raises(LiidError, match="lr"):
        tv.train_vit(open_dataset(syn), out, fast_config(lr=1e-2), resume=True, progress=False, echo=lambda s: None)


def test_load_vit_and_cams(syn, two_epochs, tmp_path):
    ds = open_dataset(syn)
    model, size = tv.load_vit(two_epochs, ds, torch.device("cpu"))
    assert size == 64 and not model.training and model.num_classes == 6
    image = ds.load_image(ds.images[0].id)
    cams = vit_sm_cams(model, image, size)
    assert cams.shape == (6, *image.shape[:2]) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1 and np.isclose(cams.reshape(6, -1).max(1), 1).any()
    with pytest.raises(LiidError, match="multiple"):
        vit_sm_cams(model, image, 60)
    other = tmp_path / "syn3"
    write_synthetic(other, 3, seed=1, config=SyntheticConfig(size=64, classes=3), progress=False)
    with pytest.raises(LiidError, match="classes"):
        tv.load_vit(two_epochs, open_dataset(other), torch.device("cpu"))
    with pytest.raises(LiidError, match="not found"):
        tv.load_vit(tmp_path / "nothing", ds, torch.device("cpu"))


def test_deit_augmentation_is_reproducible(syn):
    """The DeiT transform (MCTformer's): a function of (seed, epoch, index) only, the global generators left as
    they were, a new draw each epoch, and the plain square resize when not training."""
    import random

    ds = open_dataset(syn)
    data = tv.DeitData(ds, 64, seed=3)

    def seed_all() -> None:
        random.seed(11)
        np.random.seed(11)
        torch.manual_seed(11)

    seed_all()
    before = (random.random(), np.random.random(), torch.rand(1))
    seed_all()
    x1, y1, i1 = data[2]
    after = (random.random(), np.random.random(), torch.rand(1))
    assert before[:2] == after[:2] and torch.equal(before[2], after[2])  # the loop's draws are untouched
    assert x1.shape == (3, 64, 64) and x1.dtype == torch.float32 and i1 == 2
    assert torch.equal(y1, torch.from_numpy(ds.label_vector(data.ids[2])[1:].astype(np.float32)))
    assert torch.equal(data[2][0], x1)  # same item, same epoch: the same crop and colours
    data.set_epoch(1)
    assert not torch.equal(data[2][0], x1)  # another epoch, another draw
    data.train = False
    assert torch.equal(data[2][0], to_input(ds.load_image(data.ids[2]), 64))


def test_config_errors():
    with pytest.raises(LiidError, match="--augment"):
        fast_config(augment="mixup")
    with pytest.raises(LiidError, match="--warmup-epochs"):
        tv.TrainVitConfig(epochs=2)
    with pytest.raises(LiidError, match="--heads"):
        fast_config(num_heads=5)
    with pytest.raises(LiidError, match="--size"):
        fast_config(size=60)
    assert [tv.epoch_lr(tv.TrainVitConfig(epochs=10, lr=1e-3, min_lr=0.0, warmup_epochs=2), e)
            for e in (0, 1, 2, 6)] == pytest.approx([1e-6, 1e-6 + (1e-3 - 1e-6) / 2, 1e-3, 0.5e-3])


def test_command(syn, tmp_path):
    res = CliRunner().invoke(command, [str(syn), "--out", str(tmp_path / "c"), "--epochs", "1", *FAST])
    assert res.exit_code == 0, res.output
    assert "train mAP" in res.output and (tmp_path / "c" / "checkpoint.pt").is_file()
    res = CliRunner().invoke(command, [str(syn), "--out", str(tmp_path / "c"), "--epochs", "1", *FAST])
    assert isinstance(res.exception, LiidError) and "--overwrite" in str(res.exception)
    res = CliRunner().invoke(command, ["--help"])
    assert res.exit_code == 0 and "--embed-dim" in res.output and DEIT_S_FILE in "".join(res.output.split())
