"""``liid train-vit DATASET --out DIR``: train the multi-class-token ViT whose refined CAMs the ``vit-sm``
labeler uses (paper 002).

A thin command over ``liid.training.train_vit.train_vit``.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.options import images_option, training_options
from liid.datasets import open_dataset
from liid.models.vit import DEIT_S_FILE
from liid.training.train_vit import AUGMENTS, TrainVitConfig, train_vit

_D = TrainVitConfig()


@click.command("train-vit")
@click.argument("dataset")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Training folder to write.")
@click.option("--split", default=None, help="VOC roots: the image set (e.g. train, train_aug).")
@images_option
@click.option("--weights", default=None, type=click.Path(path_type=Path),
              help="DeiT weights file (a timm/DeiT ViT state dict with one class token). Default: the DeiT-S "
              f"ImageNet file in the torch hub cache (<torch hub dir>/checkpoints/{DEIT_S_FILE}).")
@click.option("--from-scratch", is_flag=True,
              help="Random init instead of DeiT weights (needed for sizes other than DeiT-S's).")
@click.option("--embed-dim", default=_D.embed_dim, show_default=True, type=click.IntRange(1),
              help="Token size (DeiT-S: 384).")
@click.option("--depth", default=_D.depth, show_default=True, type=click.IntRange(1),
              help="Transformer blocks (DeiT-S: 12).")
@click.option("--heads", "num_heads", default=_D.num_heads, show_default=True, type=click.IntRange(1),
              help="Attention heads; must divide --embed-dim (DeiT-S: 6).")
@click.option("--patch", "patch_size", default=_D.patch_size, show_default=True, type=click.IntRange(1),
              help="Patch side in pixels (DeiT-S: 16).")
@click.option("--size", default=_D.size, show_default=True, type=click.IntRange(32, 4096),
              help="Square input size in pixels, a multiple of --patch (224 as in the paper; 64 with --patch 8 "
              "is enough for quick CPU runs on small images).")
@click.option("--epochs", default=_D.epochs, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=_D.lr, show_default=True, type=click.FloatRange(0, min_open=True),
              help="AdamW peak learning rate, used as given (the default is the paper's 5e-4 scaled by "
              "batch 64/512, as the DeiT/MCTformer code does).")
@click.option("--min-lr", default=_D.min_lr, show_default=True, type=click.FloatRange(0),
              help="Learning rate at the end of the cosine decay.")
@click.option("--warmup-epochs", default=_D.warmup_epochs, show_default=True, type=click.IntRange(0),
              help="Epochs of linear warm-up from 1e-6 before the cosine decay (below --epochs).")
@click.option("--weight-decay", default=_D.weight_decay, show_default=True, type=click.FloatRange(0))
@click.option("--drop-path", default=_D.drop_path, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Stochastic depth rate of the last block (rising linearly from 0).")
@click.option("--batch-size", default=_D.batch_size, show_default=True, type=click.IntRange(1))
@click.option("--augment", default=_D.augment, show_default=True, type=click.Choice(AUGMENTS),
              help="deit: timm's DeiT training transform, as MCTformer trains (random-resized crop, flip, colour "
              "jitter, RandAugment, random erasing); flip: square resize and a horizontal flip only.")
@training_options
def command(dataset: str, out: Path, split: str | None, images_dir: Path | None, weights: Path | None,
            from_scratch: bool, embed_dim: int, depth: int, num_heads: int, patch_size: int, size: int, epochs: int,
            lr: float, min_lr: float, warmup_epochs: int, weight_decay: float, drop_path: float, batch_size: int,
            augment: str, seed: int, device: str | None, workers: int, resume: bool, overwrite: bool) -> None:
    """Train the multi-class-token ViT (MCTformer-V2 style, paper 002) on DATASET's image labels; write
    DIR/checkpoint.pt, log.jsonl, loss.png and train.json.

    One class token per class plus the patch tokens; loss L_cls (class-token scores) + L_pat (pooled patch
    CAMs). AdamW with warm-up and cosine decay; a checkpoint after every epoch, so an interrupted run
    continues with --resume. Deterministic on CPU for a given --seed. The vit-sm labeler then refines the
    patch CAMs with the class-to-patch and patch-to-patch attention (semantic modulation).
    """
    config = TrainVitConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch_size, size=size,
                            weights=str(weights) if weights else None, from_scratch=from_scratch, epochs=epochs,
                            lr=lr, min_lr=min_lr, warmup_epochs=warmup_epochs, weight_decay=weight_decay,
                            drop_path=drop_path, batch_size=batch_size, augment=augment, seed=seed, device=device,
                            workers=workers)
    ds = open_dataset(dataset, split=split, images=images_dir)
    rec = train_vit(ds, out, config, resume=resume, overwrite=overwrite, echo=click.echo)
    f = rec["final"]
    spe = f["seconds_per_epoch"]
    click.echo(f"{out}: {rec['images']} images, {epochs} epochs, final loss {f['loss']:.4f}, train mAP "
               f"{f['train_map']:.3f} (class tokens), {f['train_map_patch']:.3f} (patch CAMs)"
               + (f", {spe:.1f} s/epoch" if spe is not None else ""))
