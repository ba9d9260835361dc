"""DSRG's retraining round (paper 004, Table 2 "+Retrain"): the trained DSRG network labels every training
image, and a fresh segmentation network is trained on those masks, fully supervised, for another round.

The paper: "we first apply the trained +DSRG segmentation model to all training images; the predicted
segmentation masks are then used as supervision to train a segmentation network in a fully supervised way for
another round" (57.6 → 59.0 mIoU on VOC val). Here the masks are ``dsrg_semantic``'s (argmax over background
and the image's labels, the dense CRF by default, as at DSRG's test time) and the round is ``liid
train-deeplab``'s trainer with the DSRG run's network, learning rate, crop, batch and seed. Inside the
train-dsrg folder::

    DIR/retrain_masks/<id>.png    the DSRG network's masks (VOC palette) and masks.json (what made them)
    DIR/retrain/                  a train-deeplab folder (checkpoint.pt, train.json, log.jsonl, ...)

``load_dsrg`` (``liid label --method dsrg``) uses ``DIR/retrain`` once its training has finished; the DSRG
network itself stays at ``DIR/checkpoint.pt``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from liid.atomic import read_json, write_json
from liid.datasets.base import Dataset
from liid.detection.deeplab import TrainDeepLabConfig, evaluate_deeplab, train_deeplab
from liid.errors import LiidError
from liid.models import pick_device
from liid.training.attention import file_sha256
from liid.training.dsrg import CHECKPOINT, RECORD, RETRAIN, RETRAIN_MASKS, dsrg_semantic, load_dsrg

MASKS_META = "masks.json"
MASKS_FORMAT = "liid-dsrg-retrain-masks"


def retrain_finished(dsrg_dir: str | os.PathLike) -> bool:
    """Whether ``dsrg_dir/retrain`` holds a finished retraining round."""
    record = Path(dsrg_dir) / RETRAIN / "train.json"
    return record.is_file() and bool(read_json(record).get("finished"))


def write_retrain_masks(dsrg_dir: str | os.PathLike, dataset: Dataset, crf: bool = True,
                        device: str | None = None, progress: bool = True,
                        echo: Callable[[str], None] = print) -> dict:
    """The DSRG network of ``dsrg_dir`` labels every image of ``dataset`` into ``dsrg_dir/retrain_masks``
    (replaced atomically as a whole); returns masks.json. Masks made by the same checkpoint with the same
    ``crf`` are kept as they are (a resumed round does not predict again)."""
    dsrg_dir = Path(dsrg_dir)
    folder = dsrg_dir / RETRAIN_MASKS
    sha = file_sha256(dsrg_dir / CHECKPOINT)
    meta_file = folder / MASKS_META
    if meta_file.is_file():
        meta = read_json(meta_file)
        if meta.get("format") == MASKS_FORMAT and meta.get("checkpoint_sha256") == sha and meta.get("crf") == crf:
            return meta
    if crf:
        from liid.detection.crf import require_pydensecrf

        require_pydensecrf()
    dev = pick_device(device)
    model = load_dsrg(dsrg_dir / CHECKPOINT, dataset, dev)

    def predict(image_id: str, image: np.ndarray) -> np.ndarray:
        return dsrg_semantic(model, image, dataset.labels(image_id), dev, crf=crf)

    with torch.no_grad():
        ev = evaluate_deeplab(model, dataset, folder, dev, progress=progress, predict=predict)
    meta = {"format": MASKS_FORMAT, "checkpoint_sha256": sha, "crf": crf, "images": len(dataset.images),
            "scored_images": ev["images"], "miou": ev["miou"]}
    write_json(meta_file, meta)  # last: masks without it are made again
    if meta["miou"] is not None:
        echo(f"retrain masks: mIoU {meta['miou']:.4f} against the ground truth of {ev['images']} images")
    return meta


def retrain_dsrg(dataset: Dataset, dsrg_dir: str | os.PathLike, epochs: int, crf: bool = True,
                 device: str | None = None, workers: int = 0, progress: bool = True,
                 echo: Callable[[str], None] = print) -> dict:
    """Run (or resume) the retraining round of the finished DSRG run ``dsrg_dir`` for ``epochs`` epochs:
    masks from its network (``write_retrain_masks``), then a fully supervised DeepLab with the run's settings
    into ``dsrg_dir/retrain``; returns that folder's train.json record plus the masks' record."""
    dsrg_dir = Path(dsrg_dir)
    if epochs < 1:
        raise LiidError(f"--retrain-epochs {epochs}: at least 1")
    record_file = dsrg_dir / RECORD
    if not record_file.is_file() or not read_json(record_file).get("finished"):
        raise LiidError(f"{dsrg_dir}: not a finished train-dsrg run; the retraining round needs its final network")
    s = read_json(record_file)["settings"]
    masks = write_retrain_masks(dsrg_dir, dataset, crf, device, progress, echo)
    config = TrainDeepLabConfig(backbone=s["backbone"], weights=s["weights"], from_scratch=s["from_scratch"],
                                epochs=epochs, lr=s["lr"], batch_size=s["batch_size"], crop=s["crop"],
                                seed=s["seed"], eval_every=epochs, device=device, workers=workers)
    out = dsrg_dir / RETRAIN
    rec = train_deeplab(dataset, dsrg_dir / RETRAIN_MASKS, out, config, resume=out.exists(), progress=progress,
                        echo=echo)
    return {**rec, "retrain_masks": masks}
