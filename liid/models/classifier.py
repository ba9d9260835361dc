"""Multi-label image classifier whose class activation maps feed the MIL attention loss (L_Att).

backbone → 1×1 conv (K filters, no bias) → global average pool → K logits (sigmoid per class).
Because the classifier is a bias-free linear map applied at every position, averaging after it equals
averaging before it, and the map before averaging is exactly the CAM ``A^k = W_k · F`` (Zhou et al. 2016);
IRNet and most weakly supervised segmentation code use the same layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from liid.models.backbone import IMAGENET_NORM, Normalization


class MultiLabelClassifier(nn.Module):
    """Image-level multi-label classifier over ``num_classes`` foreground classes (no background)."""

    def __init__(self, backbone: nn.Module, channels: int, num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.channels = channels
        self.num_classes = num_classes
        self.backbone_name = getattr(backbone, "name", type(backbone).__name__)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1, bias=False)

    @property
    def norm(self) -> Normalization:
        """The input normalisation of the backbone (its ImageNet weights' convention), recorded in checkpoints."""
        return getattr(self.backbone, "norm", None) or IMAGENET_NORM

    def raw_cams(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised class maps ``W_k · F`` at backbone resolution: [B,K,h,w]."""
        return self.classifier(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits [B,K]; train with ``binary_cross_entropy_with_logits`` against the image labels."""
        return self.raw_cams(images).mean(dim=(2, 3))

    def cams(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Class activation maps in [0,1]: [B,K,h,w], or [B,K,*size] when ``size`` is given.

        Normalisation, per image and per class: ReLU (negative evidence is no evidence), bilinear
        upsampling to ``size`` if asked, then division by the map's maximum, so every map with any positive
        response peaks at exactly 1; a map with no positive response stays all 0. Runs in the model's
        current mode and grad state: call ``eval()`` and ``torch.no_grad()`` for pseudo-labels.
        """
        cam = F.relu(self.raw_cams(images))
        if size is not None:
            cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)
        peak = cam.amax(dim=(2, 3), keepdim=True)
        return torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
