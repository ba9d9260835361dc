"""Click options that several commands share, written once so their names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

images_option = click.option(
    "--images", "images_dir", default=None, type=click.Path(path_type=Path),
    help="COCO JSONs: the images folder (default: found beside the JSON).")
device_option = click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")


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
