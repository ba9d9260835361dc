"""``liid train-cls DATASET --out DIR``: train the multi-label classifier whose CAMs give L_Att's pseudo labels.

A thin command over ``liid.training.train_cls.train_classifier``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.options import backbone_options, images_option, training_options
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.training.train_cls import TrainClsConfig, train_classifier

_D = TrainClsConfig()


@click.command("train-cls")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set (e.g. train, train_aug).")
@images_option
@backbone_options
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=_D.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="SGD learning rate of the first half of the epochs; a tenth of it after.")
@click.option("--batch-size", default=_D.batch_size, show_default=True, type=click.IntRange(1))
@click.option("--size", default=_D.size, show_default=True, type=click.IntRange(32, 4096),
              help="Square input size in pixels (448 as in the reference code; 128-224 are enough for quick CPU "
              "runs on small images).")
@click.option("--oaa", type=click.Choice(["max", "average"]), default=None,
              help="OAA (paper 003): keep each training image's cumulative attention maps, fused by element-wise "
                   "max (the paper's choice) or running average, into DIR/oaa.npz; `liid label --method oaa` "
                   "reads them.")
@click.option("--oaa-targets", type=click.Path(path_type=Path), default=None,
              help="OAA+ (paper 003): train the integral attention model on this `train-cls --oaa` folder's "
                   "cumulative maps with the hybrid loss (eqs. 7-9) instead of on the image labels; "
                   "`liid label --method oaa+` reads the result.")
@training_options
def command(dataset: str, out: Path, split: str | None, images_dir: Path | None, backbone: str,
            weights: Path | None, from_scratch: bool, backbone_lr_mult: float | None, epochs: int, lr: float,
            batch_size: int, size: int,
            oaa: str | None, oaa_targets: Path | None, seed: int, device: str | None, workers: int, resume: bool,
            overwrite: bool) -> None:
    """Train the multi-label CAM classifier on DATASET's image labels; write DIR/checkpoint.pt, log.jsonl,
    loss.png and train.json.

    SGD (momentum 0.9, weight decay 1e-4), --lr divided by 10 after half the epochs; a checkpoint after
    every epoch, so an interrupted run continues with --resume. Deterministic on CPU for a given --seed.
    """
    if weights is not None and from_scratch:
        raise LiidError("--weights and --from-scratch exclude each other")
    ds = open_dataset(dataset, split=split, images=images_dir)
    config = TrainClsConfig(backbone=backbone, weights=str(weights) if weights else None, from_scratch=from_scratch,
                            backbone_lr_mult=backbone_lr_mult, epochs=epochs, lr=lr, batch_size=batch_size, size=size,
                            seed=seed, device=device,
                            workers=workers, oaa=oaa, oaa_targets=None if oaa_targets is None else str(oaa_targets))
    rec = train_classifier(ds, out, config, resume=resume, overwrite=overwrite, echo=click.echo)
    f = rec["final"]
    spe = f["seconds_per_epoch"]
    click.echo(f"{out}: {rec['images']} images, {epochs} epochs, final loss {f['loss']:.4f}, train mAP "
               f"{f['train_map']:.3f}, label accuracy {f['train_label_accuracy']:.3f}"
               + (f", {spe:.1f} s/epoch" if spe is not None else ""))
