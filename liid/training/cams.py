"""CAMs of a trained classifier at each image's own size: the attention maps of L_Att (eqs. 3-4)."""

from __future__ import annotations

import numpy as np
import torch

from liid.datasets.base import Dataset
from liid.models.classifier import MultiLabelClassifier
from liid.training.data import to_input


@torch.no_grad()
def compute_cams(model: MultiLabelClassifier, dataset: Dataset, ids: list[str], size: int) -> dict[str, np.ndarray]:
    """``{id: float16 [K, H, W] in [0, 1]}`` at each image's original H×W.

    The image is resized to ``size``×``size`` (as in training), the stride-32 maps are upsampled bilinearly
    straight to H×W and normalised per class by their maximum (``MultiLabelClassifier.cams``). Runs in eval
    mode on the model's device; the model's train/eval mode is restored afterwards.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: dict[str, np.ndarray] = {}
    try:
        for iid in ids:
            info = dataset.info(iid)
            x = to_input(dataset.load_image(iid), size, model.norm)[None].to(device)
            cam = model.cams(x, size=(info.height, info.width))[0]
            out[iid] = cam.clamp_(0, 1).to(torch.float16).cpu().numpy()
    finally:
        model.train(was_training)
    return out
