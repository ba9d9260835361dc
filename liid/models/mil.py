"""The LIID MIL network on segment proposals (paper section 4).

images → backbone (stride 32) → RoIPool 7×7 on each proposal box → global average pool → ``f``
([M, channels], 2048-d for ResNet50) → FC(channels, K+1) → softmax ``p`` over background + K classes.
``f`` and ``p`` are what ``liid extract`` stores for the knowledge graph.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_pool

from liid.models.backbone import IMAGENET_NORM, Normalization

Boxes = torch.Tensor | list[torch.Tensor]


class MILNetwork(nn.Module):
    """Proposal classifier over ``num_classes`` foreground classes plus background (output K+1, index 0).

    Boxes are XYXY in pixels of the input image tensor (scale them if images were resized), given either
    as a list with one [M_i,4] tensor per image or as one [M,5] tensor whose first column is the batch
    index; outputs are in the order of the boxes (list: image by image).
    """

    def __init__(
        self, backbone: nn.Module, channels: int, num_classes: int, pool_size: int = 7, stride: int | None = None
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        stride = stride if stride is not None else getattr(backbone, "stride", None)
        if not isinstance(stride, int) or stride < 1:
            raise ValueError("backbone has no integer 'stride' attribute; pass stride=")
        self.backbone = backbone
        self.channels = channels
        self.num_classes = num_classes
        self.pool_size = pool_size
        self.stride = stride
        self.backbone_name = getattr(backbone, "name", type(backbone).__name__)
        self.fc = nn.Linear(channels, num_classes + 1)
        # eq. 7-8's class centres c_k [K+1, channels]: state of the model (saved and resumed with it), moved
        # only by liid.losses.update_centres, never by the gradient. An all-zero row = not yet seen.
        self.register_buffer("centres", torch.zeros(num_classes + 1, channels))

    @property
    def norm(self) -> Normalization:
        """The input normalisation of the backbone (its ImageNet weights' convention), recorded in checkpoints."""
        return getattr(self.backbone, "norm", None) or IMAGENET_NORM

    @property
    def spatial_scale(self) -> float:
        """Feature-map cells per image pixel (1/32 for a ResNet trunk), as RoIPool needs it."""
        return 1.0 / self.stride

    def _check_boxes(self, images: torch.Tensor, boxes: Boxes) -> Boxes:
        if images.dim() != 4:
            raise ValueError(f"images must be [B,C,H,W], got shape {list(images.shape)}")
        if isinstance(boxes, torch.Tensor):
            if boxes.dim() != 2 or boxes.shape[1] != 5:
                raise ValueError(f"a boxes tensor must be [M,5] (batch index, x1, y1, x2, y2), got {list(boxes.shape)}")
            return boxes
        if len(boxes) != images.shape[0]:
            raise ValueError(f"{len(boxes)} box tensors for {images.shape[0]} images")
        for b in boxes:
            if b.dim() != 2 or b.shape[1] != 4:
                raise ValueError(f"per-image boxes must be [M,4] XYXY, got {list(b.shape)}")
        return boxes

    def pool(self, features: torch.Tensor, boxes: Boxes) -> torch.Tensor:
        """RoIPool (max, ``pool_size``²) on the feature map, then the average over the bins: [M, channels]."""
        if isinstance(boxes, torch.Tensor):
            rois = boxes.to(device=features.device, dtype=features.dtype)
        else:
            rois = [b.to(device=features.device, dtype=features.dtype) for b in boxes]
        pooled = roi_pool(features, rois, output_size=self.pool_size, spatial_scale=self.spatial_scale)
        return pooled.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(f [M,channels], logits [M,K+1], p [M,K+1])``; use ``logits`` for numerically safe logs."""
        boxes = self._check_boxes(images, boxes)
        f = self.pool(self.backbone(images), boxes)
        logits = self.fc(f)
        return f, logits, torch.softmax(logits, dim=1)

    def extract(
        self, images: torch.Tensor, boxes: Boxes, feature_dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (``feature_dtype``, e.g. float16 for storage) and float32 probabilities, on CPU.

        Runs in eval mode without gradients and restores the previous mode afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                f, _, p = self(images, boxes)
        finally:
            self.train(was_training)
        return f.to("cpu", feature_dtype), p.to("cpu", torch.float32)
