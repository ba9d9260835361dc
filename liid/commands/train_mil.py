"""``liid train-mil DATASET --proposals P --cams CLS --out DIR``: train the MIL network (LIID section 4).

A thin command over ``liid.training.train_mil.train_mil``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.options import backbone_options, images_option, training_options
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.training.attention import POOLINGS
from liid.training.train_mil import TrainMilConfig, train_mil

_D = TrainMilConfig()


@click.command("train-mil")
@click.argument("dataset")
@click.option("--proposals", required=True, type=click.Path(path_type=Path),
              help="Proposal store of the dataset's images (`liid proposals`, usually filtered to --top 20-40).")
@click.option("--cams", "cams", default=None, type=click.Path(path_type=Path),
              help="The CAM classifier for L_Att: a `liid train-cls` folder or its checkpoint.pt (needed unless "
              "--alpha 0).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set (e.g. train, train_aug).")
@images_option
@click.option("--top", default=None, type=click.IntRange(1),
              help="Use the first N proposals of each image (the store is score-ordered). Default: all.")
@backbone_options
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=_D.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="SGD learning rate of the first half of the epochs; a tenth of it after.")
@click.option("--size", default=_D.size, show_default=True, type=click.IntRange(32, 4096),
              help="Square input size (448 as in the reference code); boxes are scaled with the image.")
@click.option("--alpha", default=_D.alpha, show_default=True, type=click.FloatRange(0), help="Weight of L_Att (eq. 4).")
@click.option("--beta", default=_D.beta, show_default=True, type=click.FloatRange(0), help="Weight of L_MIL (eq. 6).")
@click.option("--gamma", default=_D.gamma, show_default=True, type=click.FloatRange(0),
              help="Weight of L_Cent (eq. 7).")
@click.option("--eta", default=None, type=click.FloatRange(0, 2),
              help="eq. 3: a proposal is background when every R_k (mean + max of its CAM, in [0, 2]; the soft IoU "
                   "for --att-pooling soft-iou, in [0, 1]) is below eta. Default: 0.75 (the paper) for box and "
                   "mask, 0.3 for soft-iou.")
@click.option("--r", "r", default=_D.r, show_default=True, type=click.FloatRange(0, min_open=True),
              help="eq. 5: LSE pooling sharpness (large: max, small: mean).")
@click.option("--theta", default=_D.theta, show_default=True, type=click.FloatRange(0, 1),
              help="eq. 8: centre update rate.")
@click.option("--att-pooling", default=_D.att_pooling, show_default=True, type=click.Choice(POOLINGS),
              help="eq. 3's R over the proposal's box (paper) or its mask (ablation); soft-iou: R = the soft IoU "
                   "of the proposal mask with the CAM region of one instance (liid.losses.cam_soft_iou, in [0, 1]: "
                   "use --eta 0.3), which tells an object from its parts and its surroundings.")
@click.option("--no-flip", is_flag=True, help="No horizontal-flip augmentation.")
@training_options
def command(dataset: str, proposals: Path, cams: Path | None, out: Path, split: str | None,
            images_dir: Path | None, top: int | None, backbone: str, weights: Path | None, from_scratch: bool,
            backbone_lr_mult: float | None, epochs: int, lr: float, size: int, alpha: float, beta: float,
            gamma: float, eta: float | None, r: float,
            theta: float, att_pooling: str, no_flip: bool, seed: int, device: str | None, workers: int,
            resume: bool, overwrite: bool) -> None:
    """Train the MIL network (ResNet + RoIPool 7x7 + GAP + FC(K+1)) on DATASET's proposals with
    L = alpha*L_Att + beta*L_MIL + gamma*L_Cent (eq. 9); write DIR/checkpoint.pt, log.jsonl, loss.png, train.json.

    One image per SGD step (momentum 0.9, weight decay 1e-4), --lr divided by 10 after half the epochs, the
    class centres moved by eq. 8. A checkpoint after every epoch (--resume continues); deterministic on CPU
    for a given --seed. Then `liid extract` writes the features for `liid build-graph`.
    """
    if weights is not None and from_scratch:
        raise LiidError("--weights and --from-scratch exclude each other")
    ds = open_dataset(dataset, split=split, images=images_dir)
    config = TrainMilConfig(backbone=backbone, weights=str(weights) if weights else None, from_scratch=from_scratch,
                            backbone_lr_mult=backbone_lr_mult, epochs=epochs, lr=lr, size=size, top=top, alpha=alpha,
                            beta=beta, gamma=gamma, eta=eta,
                            r=r, theta=theta, att_pooling=att_pooling, flip=not no_flip, seed=seed, device=device,
                            workers=workers)
    rec = train_mil(ds, proposals, out, config, cam_classifier=cams, resume=resume, overwrite=overwrite,
                    echo=click.echo)
    f = rec["final"]
    click.echo(f"{out}: {rec['images']} images, {rec['proposals_used']} proposals, {epochs} epochs, final loss "
               f"{f['loss']:.4f}, image mAP (LSE) {f['image_map']:.3f}, {f['seconds_per_image']:.3f} s/image")
