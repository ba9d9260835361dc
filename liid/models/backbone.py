"""ResNet trunks (conv1 … layer4, output stride 32) with offline-only weight loading.

Weights come from, in this order of precedence:

- ``weights=PATH``: a torchvision-style state dict of the full ResNet (``fc.*`` is ignored), a trunk-only
  state dict, or one of our checkpoints (its ``backbone.*`` entries are used);
- ``weights="imagenet"`` (or ``None``): torchvision's ImageNet file in the torch hub cache,
  ``torch.hub.get_dir()/checkpoints/<file name of the official URL>`` (``resnet50-0676ba61.pth``,
  ``resnet18-f37072fd.pth``), i.e. where ``torchvision`` itself would have saved it, so a machine that
  copied the file there works offline;
- ``from_scratch=True``: torchvision's default random init (the caller seeds torch for determinism).

Nothing here downloads: the hub file is read with ``torch.load(weights_only=True)``, never through
``WeightsEnum.get_state_dict`` (which fetches the URL when the file is missing).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import torch
import torchvision
from torch import nn

from liid.errors import LiidError
from liid.models.checkpoint import FORMAT, load_state_dict_checked, read_weights_file

# name -> (torchvision constructor, ImageNet weights enum entry, channels of layer4)
_RESNETS = {
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1, 2048),
}
BACKBONES = tuple(_RESNETS)
# Normalisation the ImageNet weights expect (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without ``avgpool``/``fc``: images [B,3,H,W] → features [B,C,H/32,W/32].

    Submodule names equal torchvision's, so its state dicts (minus ``fc``) load as they are.
    ``freeze_bn=True`` keeps BatchNorm layers in eval mode with frozen affine parameters (one-image
    batches, as in the LIID training recipe, give useless batch statistics).
    """

    stride = 32

    def __init__(self, resnet: torchvision.models.ResNet, name: str, out_channels: int, freeze_bn: bool = False):
        super().__init__()
        self.name = name
        self.out_channels = out_channels
        self.freeze_bn = freeze_bn
        for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, part, getattr(resnet, part))
        if freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNetTrunk:
        super().train(mode)
        if self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def imagenet_url(name: str) -> str:
    """The download address of torchvision's ImageNet weights of ResNet ``name`` (printed in hints, never fetched)."""
    return _RESNETS[name][1].url


def hub_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``name``: the hub dir's ``checkpoints/<url file name>``."""
    url = imagenet_url(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def _trunk_state(obj: object, source: Path) -> dict:
    """The trunk's entries of a weights file: torchvision ResNet, trunk-only, or one of our checkpoints."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("model"), dict):
        state = {k[len("backbone.") :]: v for k, v in obj["model"].items() if k.startswith("backbone.")}
        if not state:
            raise LiidError(f"{source}: checkpoint has no 'backbone.*' weights")
        return state
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise LiidError(f"{source}: not a state dict (found {type(obj).__name__})")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}
    return {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}


def build_backbone(
    name: str = "resnet50",
    weights: str | os.PathLike | None = "imagenet",
    from_scratch: bool = False,
    freeze_bn: bool = False,
) -> tuple[ResNetTrunk, int]:
    """Build a ResNet trunk (output stride 32) and return it with its output channels (2048 | 512).

    ``weights``: ``"imagenet"``/``None`` (hub cache), or a file path; ``from_scratch=True`` → random init.
    Missing weights are a LiidError naming the paths tried and the two ways out (``--weights PATH``,
    ``--from-scratch``); a file that does not fit names itself and the first mismatching key.
    """
    if name not in _RESNETS:
        raise LiidError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    ctor, imagenet, channels = _RESNETS[name]
    named_file = weights is not None and str(weights) != "imagenet"
    if from_scratch and named_file:
        raise LiidError(f"--weights {weights} and --from-scratch exclude each other")
    trunk = ResNetTrunk(ctor(weights=None), name, channels, freeze_bn=freeze_bn)
    if from_scratch:
        return trunk, channels
    if named_file:
        path = Path(weights)
        if not path.is_file():
            raise LiidError(f"{path}: weights file not found (--weights PATH, or --from-scratch for random init)")
    else:
        path = hub_weights_path(name)
        if not path.is_file():
            raise LiidError(
                f"no ImageNet weights for {name}: tried {path} (torch hub cache, {imagenet.url}); "
                f"copy that file there, pass --weights PATH, or --from-scratch for random init"
            )
    load_state_dict_checked(trunk, _trunk_state(read_weights_file(path), path), path, what=f"{name} trunk")
    return trunk, channels
