"""``liid extract DATASET --proposals P --mil DIR --out STORE``: the feature store for ``liid build-graph``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import numpy as np

from liid.atomic import check_parent
from liid.commands.options import device_option, images_option
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.graph.feature_store import write_feature_store
from liid.models import pick_device
from liid.models.checkpoint import checkpoint_file
from liid.stage import up_to_date
from liid.training.distributed import init_world
from liid.training.extract import extract_features, load_mil
from liid.training.extract_tasks import extract_on_cluster
from liid.training.mil_data import read_proposal_set


@click.command("extract")
@click.argument("dataset")
@click.option("--proposals", required=True, type=click.Path(path_type=Path), help="Proposal store.")
@click.option("--mil", "mil", required=True, type=click.Path(path_type=Path),
              help="The trained MIL network: a `liid train-mil` folder or its checkpoint.pt.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Feature store directory to write.")
@click.option("--split", default=None, help="VOC roots: the image set.")
@images_option
@click.option("--top", default=None, type=click.IntRange(1),
              help="First N proposals per image. Default: the number the network was trained with (all if it "
              "used all).")
@click.option("--size", default=None, type=click.IntRange(32, 4096),
              help="Square input size. Default: the training size.")
@click.option("--float32", "float32", is_flag=True, help="Store features as float32 (default float16: half the disk).")
@click.option("--batch-images", default=4, show_default=True, type=click.IntRange(1), help="Images per forward pass.")
@device_option
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Data loader processes.")
@click.option("--backend", default="serial", show_default=True, type=click.Choice(["serial", "ray"]),
              help="ray: parts of --images-per-task images, one Ray task each (on --ray-address, or a local Ray "
                   "of this machine's CPUs), each part saved in OUT.partial/ as it finishes (resumable; on a "
                   "cluster OUT's folder must be one every node sees). On a GPU cluster add --device cuda.")
@click.option("--ray-address", default=None, help="Address of an existing Ray cluster (with --backend ray).")
@click.option("--images-per-task", default=64, show_default=True, type=click.IntRange(1),
              help="--backend ray: images per task (each task loads the network once per worker).")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature store (and discard OUT.partial).")
def command(dataset: str, proposals: Path, mil: Path, out: Path, split: str | None, images_dir: Path | None,
            top: int | None, size: int | None, float32: bool, batch_images: int, device: str | None, workers: int,
            backend: str, ray_address: str | None, images_per_task: int, overwrite: bool) -> None:
    """Run the MIL network over every image of DATASET and write, per proposal, its feature f and its
    probabilities p (K+1), with the image labels: the feature store `liid build-graph` reads.

    Skipped when OUT already holds a store made from the same inputs and settings. Under `torchrun
    --nproc-per-node W liid extract ...` the images are split over the W processes and rank 0 writes the store
    (the rows pass through OUT's folder: on several nodes it must be one they share). With --backend ray the
    images go in parts of --images-per-task to the tasks of a Ray cluster; each finished part is kept in
    OUT.partial/, and a rerun after an interruption reuses them.
    """
    check_parent(out)
    if ray_address is not None and backend != "ray":
        raise LiidError("--ray-address needs --backend ray")
    ds = open_dataset(dataset, split=split, images=images_dir)
    world, dev = init_world(pick_device(device))
    if backend == "ray" and world.distributed:
        raise LiidError("--backend ray under torchrun: choose one way of spreading the images")
    model, meta = load_mil(mil, ds, dev)
    top = top if top is not None else meta.get("top")
    size = size if size is not None else int(meta.get("size") or 448)
    ckpt = checkpoint_file(mil)
    expected = {"checkpoint": fingerprint(ckpt), "proposals": fingerprint(proposals) if proposals.is_dir() else None,
                "dataset": ds.describe(), "top": top, "size": size, "float32": float32}
    if up_to_date(out, "store.json", "inputs", expected, overwrite):
        return
    pset = read_proposal_set(ds, proposals, top, progress=world.is_main)
    if backend == "ray":
        store, stats = extract_on_cluster(ckpt, ds, pset, size, model.channels, model.num_classes + 1, expected,
                                          out.with_name(out.name + ".partial"), images_per_task, batch_images,
                                          "float32" if float32 else "float16", device, ray_address,
                                          os.cpu_count() or 1, overwrite, echo=click.echo)
        _write(out, store, stats, expected, ckpt, proposals, overwrite)
        return
    parts = out.resolve().parent / f".{out.name}.extract-parts"
    if world.distributed:
        world.on_main(lambda: parts.mkdir(exist_ok=True))
    try:
        store, stats = extract_features(model, ds, pset, size, dev, batch_images=batch_images,
                                        feature_dtype=np.float32 if float32 else np.float16, workers=workers,
                                        world=world, parts=parts)
        world.barrier()  # rank 0 has read every part
    finally:
        if world.is_main:
            shutil.rmtree(parts, ignore_errors=True)
    if store is None:  # not rank 0
        return
    _write(out, store, stats, expected, ckpt, proposals, overwrite)


def _write(out: Path, store, stats: dict, expected: dict, ckpt: Path, proposals: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise LiidError(f"{out}: output exists; pass --overwrite to replace it")
    write_feature_store(out, store, overwrite=overwrite,
                        extra={"inputs": expected, "source": {"mil": str(ckpt), "proposals": str(proposals)},
                               "extract": stats})
    click.echo(f"{out}: {store.num_proposals} proposals of {len(store.images)} images, {store.features.shape[1]}-d "
               f"{store.features.dtype} features; {stats['images_per_second']:.1f} images/s, "
               f"{stats['proposals_per_second']:.0f} proposals/s on {stats['device']}")
