"""Loading a trained network of a training folder for inference (CAMs, feature extraction)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from liid.errors import LiidError
from liid.models.backbone import build_backbone, checkpoint_norm
from liid.models.checkpoint import checkpoint_file, load_checkpoint, read_checkpoint


def load_trained(path: str | os.PathLike, model_cls: type[nn.Module], classes: list[str], device: torch.device,
                 what: str, hint: str) -> tuple[nn.Module, dict]:
    """``model_cls(trunk, channels, K)`` with the weights of a training folder (or its checkpoint.pt), in eval mode
    on ``device``, and the checkpoint's meta.

    One-line errors before any weight is touched: another kind of network (``what``/``hint`` name the one
    wanted and where it comes from), other class names; ``load_checkpoint`` refuses another class count.
    """
    path = Path(path)
    file = checkpoint_file(path)
    meta = read_checkpoint(file)["meta"]
    if meta.get("model") not in (None, model_cls.__name__):
        raise LiidError(f"checkpoint {file} holds a {meta.get('model')}, not a {what} ({hint})")
    names = meta.get("class_names")
    if meta.get("num_classes") == len(classes) - 1 and names is not None and list(names) != list(classes):
        raise LiidError(f"checkpoint {file} was trained on classes {names[1:]}, the dataset has {list(classes)[1:]}")
    norm = checkpoint_norm(meta, file)  # refuses a recorded normalisation that is not the backbone's
    trunk, channels = build_backbone(str(meta.get("backbone")), from_scratch=True, freeze_bn=True)
    trunk.norm = norm
    model = model_cls(trunk, channels, len(classes) - 1)
    load_checkpoint(file, model)
    return model.to(device).eval(), meta
