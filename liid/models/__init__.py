"""Networks: ResNet trunks, the CAM classifier (for L_Att), the MIL network, checkpoints, device choice."""

from __future__ import annotations

import torch

from liid.errors import LiidError
from liid.models.backbone import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
    ResNetTrunk,
    backbone_norm,
    backbone_spec,
    build_backbone,
    checkpoint_norm,
    hub_weights_path,
)
from liid.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from liid.models.classifier import MultiLabelClassifier
from liid.models.mil import MILNetwork

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalization",
    "backbone_norm",
    "backbone_spec",
    "checkpoint_norm",
    "MILNetwork",
    "MultiLabelClassifier",
    "ResNetTrunk",
    "build_backbone",
    "hub_weights_path",
    "load_checkpoint",
    "pick_device",
    "read_checkpoint",
    "save_checkpoint",
]


def pick_device(requested: str | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA when available, else CPU; ``"cpu"``; ``"cuda"``/``"cuda:N"`` checked to exist."""
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise LiidError(f"--device {requested}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise LiidError(
            f"--device {requested}: unsupported device type {device.type!r} (use auto, cpu, cuda or cuda:N)"
        )
    if not torch.cuda.is_available():
        raise LiidError(f"--device {requested}: CUDA is not available on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise LiidError(f"--device {requested}: only {count} CUDA device(s) visible")
    return device
