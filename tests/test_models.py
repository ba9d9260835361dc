"""liid.models: classifier/CAM and MIL shapes, RoIPool against a hand computation, gradients into the
backbone, offline weight loading (hub cache, --weights PATH, clear errors), checkpoints, device choice.
Small: resnet18 on 64×64 inputs; the network is never touched (any download attempt fails the test)."""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from liid.errors import LiidError
from liid.models import (
    MILNetwork,
    MultiLabelClassifier,
    build_backbone,
    hub_weights_path,
    load_checkpoint,
    pick_device,
    save_checkpoint,
)

K = 3


def _no_network(*args, **kwargs):
    raise AssertionError("a test tried to download something")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Any download path raises; the hub dir points to an empty temporary folder unless a test fills it."""
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _mil(seed: int = 0) -> MILNetwork:
    torch.manual_seed(seed)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    return MILNetwork(trunk, ch, K)


def _classifier(seed: int = 0) -> MultiLabelClassifier:
    torch.manual_seed(seed)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    return MultiLabelClassifier(trunk, ch, K)


# --- backbone and classifier -------------------------------------------------------------------------


def test_backbone_stride_and_channels():
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    assert ch == 512 and trunk.out_channels == 512 and trunk.stride == 32 and trunk.name == "resnet18"
    assert trunk(torch.randn(2, 3, 64, 96)).shape == (2, 512, 2, 3)


def test_classifier_logits_and_cams():
    model = _classifier().eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
        cams = model.cams(images)
        big = model.cams(images, size=(64, 64))
        raw = model.raw_cams(images)
    assert logits.shape == (2, K)
    assert torch.allclose(logits, raw.mean(dim=(2, 3)), atol=1e-5)  # GAP of the CAM is the logit
    assert cams.shape == (2, K, 2, 2) and big.shape == (2, K, 64, 64)
    for c in (cams, big):
        assert c.min() >= 0 and c.max() <= 1
        peaks = c.amax(dim=(2, 3))
        assert torch.all((peaks == 0) | torch.isclose(peaks, torch.ones_like(peaks)))
    nonempty = raw.clamp_min(0).amax(dim=(2, 3)) > 0
    assert torch.allclose(cams.amax(dim=(2, 3))[nonempty], torch.ones(int(nonempty.sum())))


def test_cam_all_negative_map_stays_zero():
    model = _classifier().eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.weight[1] = -1.0  # features are post-ReLU ≥ 0, so class 1's map is ≤ 0
        cams = model.cams(torch.randn(1, 3, 64, 64), size=(16, 16))
    assert torch.all(cams[:, 1] == 0) and torch.all(cams[:, 0] == 0)
    assert not torch.isnan(cams).any()


# --- MIL network -------------------------------------------------------------------------------------


def test_mil_shapes_probabilities_and_scale():
    model = _mil().eval()
    images = torch.randn(2, 3, 64, 64)
    boxes = [torch.tensor([[0.0, 0, 63, 63], [10, 5, 40, 30], [32, 32, 63, 63]]), torch.tensor([[0.0, 0, 20, 20]])]
    with torch.no_grad():
        f, logits, p = model(images, boxes)
    assert model.spatial_scale == 1 / 32
    assert f.shape == (4, 512) and logits.shape == (4, K + 1) and p.shape == (4, K + 1)
    assert torch.allclose(p.sum(dim=1), torch.ones(4), atol=1e-6)
    # the [M,5] form (batch index first) gives the same rows
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
    with torch.no_grad():
        f5, _, p5 = model(images, rois)
    assert torch.allclose(f, f5) and torch.allclose(p, p5)
    feats, probs = model.extract(images, boxes, feature_dtype=torch.float16)
    assert feats.dtype == torch.float16 and probs.dtype == torch.float32 and not feats.requires_grad
    assert torch.allclose(feats.float(), f, atol=1e-2, rtol=1e-3) and torch.allclose(probs, p)


def test_mil_rejects_bad_boxes():
    model = _mil()
    with pytest.raises(ValueError, match="2 box tensors for 1 images"):
        model(torch.randn(1, 3, 64, 64), [torch.zeros(1, 4), torch.zeros(1, 4)])
    with pytest.raises(ValueError, match=r"\[M,5\]"):
        model(torch.randn(1, 3, 64, 64), torch.zeros(2, 4))


class _CellMean(nn.Module):
    """A stand-in backbone: the mean of each 32×32 block (1 channel), so every feature cell is known."""

    name = "cellmean"
    stride = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 32)


def _roi_pool_by_hand(fm: torch.Tensor, box: list[float], out: int, scale: float) -> float:
    """Caffe/torchvision RoIPool (rounded box corners, inclusive end cell, max per bin), then the bin mean."""
    height, width = fm.shape
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    bin_w, bin_h = roi_w / out, roi_h / out
    total = 0.0
    for ph in range(out):
        for pw in range(out):
            hs = min(max(math.floor(ph * bin_h) + y1, 0), height)
            he = min(max(math.ceil((ph + 1) * bin_h) + y1, 0), height)
            ws = min(max(math.floor(pw * bin_w) + x1, 0), width)
            we = min(max(math.ceil((pw + 1) * bin_w) + x1, 0), width)
            total += 0.0 if he <= hs or we <= ws else float(fm[hs:he, ws:we].max())
    return total / (out * out)


def test_roi_pool_matches_hand_computation():
    torch.manual_seed(1)
    model = MILNetwork(_CellMean(), channels=1, num_classes=K)
    assert model.spatial_scale == 1 / 32
    cells = torch.randint(-64, 64, (4, 5)) / 8.0  # 4×5 cells, each a constant 32×32 block (exact means)
    image = cells.repeat_interleave(32, 0).repeat_interleave(32, 1)[None, None]
    boxes = torch.tensor(
        [[0.0, 0, 159, 127], [40, 10, 100, 90], [64, 64, 64, 64], [70, 33, 150, 120], [0, 0, 15, 15], [1, 1, 14, 14]]
    )
    f, _, _ = model(image, [boxes])
    assert torch.allclose(model.backbone(image)[0, 0], cells, atol=1e-6)
    expected = torch.tensor([_roi_pool_by_hand(cells, b.tolist(), 7, 1 / 32) for b in boxes])
    assert torch.allclose(f[:, 0], expected, atol=1e-6)
    assert f[2, 0] == pytest.approx(float(cells[2, 2]))  # a box inside one cell pools to that cell's value
    assert f[4, 0] == f[5, 0] == pytest.approx(float(cells[0, 0]))  # same cells → identical features


def test_gradients_reach_first_conv():
    model = _mil().train()
    _, logits, p = model(torch.randn(1, 3, 64, 64), [torch.tensor([[0.0, 0, 63, 63], [8, 8, 40, 50]])])
    loss = -torch.log(p[:, 1]).mean()
    loss.backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# --- weights ----------------------------------------------------------------------------------------


def test_hub_file_names(offline):
    assert hub_weights_path("resnet50") == offline / "checkpoints" / "resnet50-0676ba61.pth"
    assert hub_weights_path("resnet18") == offline / "checkpoints" / "resnet18-f37072fd.pth"


def test_imagenet_weights_from_hub_cache(offline):
    torch.manual_seed(123)
    reference = torchvision.models.resnet18(weights=None).state_dict()  # full resnet, fc included
    (offline / "checkpoints").mkdir(parents=True)
    torch.save(reference, offline / "checkpoints" / "resnet18-f37072fd.pth")
    torch.manual_seed(0)
    trunk, _ = build_backbone("resnet18", "imagenet")
    state = trunk.state_dict()
    for key in ("conv1.weight", "layer3.0.conv1.weight", "layer4.1.bn2.running_var"):
        assert torch.equal(state[key], reference[key])
    trunk_default, _ = build_backbone("resnet18")  # the default is the same lookup
    assert torch.equal(trunk_default.layer2[0].conv1.weight, reference["layer2.0.conv1.weight"])


def test_torch_home_is_honoured(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real torch.hub.get_dir, driven by TORCH_HOME; downloads still fail
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub_weights_path("resnet18") == tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(LiidError, match="th/hub/checkpoints/resnet18-f37072fd.pth"):
        build_backbone("resnet18")


def test_weights_path_loads_torchvision_trunk_and_checkpoint(tmp_path):
    torch.manual_seed(7)
    full = torchvision.models.resnet18(weights=None).state_dict()
    for k in [k for k in full if k.endswith("num_batches_tracked")]:  # older torchvision files lack these
        del full[k]
    torch.save(full, tmp_path / "tv.pth")
    trunk, _ = build_backbone("resnet18", tmp_path / "tv.pth")
    assert torch.equal(trunk.layer1[0].conv2.weight, full["layer1.0.conv2.weight"])
    # a checkpoint of ours: its backbone.* entries initialise a new trunk
    model = _classifier(seed=5)
    meta = {"backbone": "resnet18", "num_classes": K, "class_names": ["a", "b", "c"], "config": {}}
    save_checkpoint(tmp_path / "cls.pt", model, None, 3, meta)
    trunk2, _ = build_backbone("resnet18", str(tmp_path / "cls.pt"))
    assert torch.equal(trunk2.conv1.weight, model.backbone.conv1.weight)


def test_missing_weights_error_lists_paths(offline, tmp_path):
    with pytest.raises(LiidError) as e:
        build_backbone("resnet18", None)
    msg = str(e.value)
    assert str(offline / "checkpoints" / "resnet18-f37072fd.pth") in msg
    assert "--weights PATH" in msg and "--from-scratch" in msg and "\n" not in msg
    with pytest.raises(LiidError, match=r"nope\.pth: weights file not found.*--from-scratch"):
        build_backbone("resnet18", tmp_path / "nope.pth")
    with pytest.raises(LiidError, match="unknown backbone"):
        build_backbone("vgg16", from_scratch=True)
    with pytest.raises(LiidError, match="exclude each other"):
        build_backbone("resnet18", tmp_path / "x.pth", from_scratch=True)


def test_wrong_shape_state_dict_names_file_and_key(tmp_path):
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(LiidError, match=r"bad\.pth.*'layer2\.0\.conv1\.weight' has shape \[128, 64, 5, 5\]"):
        build_backbone("resnet18", tmp_path / "bad.pth")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(LiidError, match=r"r50\.pth.*'layer1\.0\.conv1\.weight'"):
        build_backbone("resnet18", tmp_path / "r50.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(LiidError, match=r"junk\.pth: truncated or corrupt"):
        build_backbone("resnet18", tmp_path / "junk.pth")


# --- checkpoints ------------------------------------------------------------------------------------


def _meta(k: int = K) -> dict:
    return {
        "backbone": "resnet18",
        "num_classes": k,
        "class_names": [f"c{i}" for i in range(k)],
        "config": {"lr": 5e-4, "out": Path("/tmp/x")},
    }


def test_checkpoint_round_trip(tmp_path):
    model = _mil(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=5e-4, momentum=0.9, weight_decay=1e-4)
    _, _, p = model(torch.randn(1, 3, 64, 64), [torch.tensor([[0.0, 0, 63, 63]])])
    (-torch.log(p[:, 0]).mean()).backward()
    opt.step()  # momentum buffers exist now
    path = save_checkpoint(tmp_path / "mil.pt", model, opt, 4, _meta())
    assert [q.name for q in tmp_path.iterdir()] == ["mil.pt"]  # no temporary file left behind
    fresh = _mil(seed=2)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=1.0, momentum=0.9)
    meta = load_checkpoint(path, fresh, fresh_opt)
    assert meta["epoch"] == 4 and meta["num_classes"] == K and meta["class_names"] == ["c0", "c1", "c2"]
    assert meta["config"] == {"lr": 5e-4, "out": "/tmp/x"} and meta["model"] == "MILNetwork"
    assert fresh_opt.param_groups[0]["lr"] == 5e-4 and len(fresh_opt.state) == len(opt.state)
    images, boxes = torch.randn(2, 3, 64, 64), [torch.tensor([[0.0, 0, 50, 60]]), torch.tensor([[5.0, 5, 30, 30]])]
    model.eval()
    fresh.eval()
    with torch.no_grad():
        for a, b in zip(model(images, boxes), fresh(images, boxes), strict=True):
            assert torch.equal(a, b)


def test_checkpoint_mismatches_and_corruption(tmp_path):
    path = save_checkpoint(tmp_path / "mil.pt", _mil(), None, 1, _meta())
    torch.manual_seed(0)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    with pytest.raises(LiidError, match=r"mil\.pt was trained for K=3 classes, this run has K=5"):
        load_checkpoint(path, MILNetwork(trunk, ch, 5))
    with pytest.raises(LiidError, match="holds a MILNetwork, this run needs a MultiLabelClassifier"):
        load_checkpoint(path, _classifier())
    with pytest.raises(LiidError, match="no optimizer state"):
        m = _mil()
        load_checkpoint(path, m, torch.optim.SGD(m.parameters(), lr=0.1))
    with pytest.raises(LiidError, match=r"missing\.pt: file not found"):
        load_checkpoint(tmp_path / "missing.pt", _mil())
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(LiidError, match=r"cut\.pt: truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt", _mil())
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(LiidError, match=r"other\.pt: not a LIID checkpoint"):
        load_checkpoint(tmp_path / "other.pt", _mil())
    with pytest.raises(LiidError, match="folder does not exist"):
        save_checkpoint(tmp_path / "no" / "x.pt", _mil(), None, 0, _meta())


# --- device -----------------------------------------------------------------------------------------


def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device(None) == torch.device("cpu") and pick_device("auto") == torch.device("cpu")
    with pytest.raises(LiidError, match="--device cuda: CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(LiidError, match="not a device"):
        pick_device("gpu0")
