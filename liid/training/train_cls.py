"""Training of the multi-label CAM classifier (section 4.2.1): the loop behind ``liid train-cls``.

SGD (momentum 0.9, weight decay 1e-4), learning rate divided by 10 for the second half of the epochs,
multilabel soft-margin loss on the foreground labels. Output folder::

    DIR/checkpoint.pt   model + optimizer after the last finished epoch (atomic, every epoch)
    DIR/log.jsonl       one {"type": "step"} record per batch and one {"type": "epoch"} record per epoch
    DIR/loss.png        the loss curve
    DIR/train.json      settings, dataset, per-epoch seconds and the final numbers (train mAP, accuracy)
    DIR/oaa.npz         with ``oaa``: the OAA cumulative attention maps of every training image (paper 003)

Two variants of paper 003 (``liid.training.oaa``): ``oaa="max"|"average"`` keeps the online accumulated
attention maps while the classifier trains; ``oaa_targets=DIR`` trains OAA+'s integral attention model (the
same network) on another run's maps with the hybrid loss (eqs. 7-9) instead of on the image labels.

Deterministic on CPU for a given seed: the init comes from ``torch.manual_seed(seed)``, the epoch's order
from a loader generator seeded with (seed, epoch), the flips from (seed, epoch, index). Nothing else draws
random numbers (ResNets have no dropout), so ``resume`` from an epoch boundary reproduces the uninterrupted
run's losses exactly. CUDA runs are not bit-reproducible (cuDNN picks algorithms).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from liid.atomic import read_json, write_json
from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.losses import multilabel_loss
from liid.models import MultiLabelClassifier, backbone_norm, build_backbone, pick_device
from liid.progress import progress as progress_bar
from liid.training.data import ClassificationData
from liid.training.distributed import init_world
from liid.training.loop import (
    finish_run,
    finished_record,
    prepare_out,
    resume_from,
    sgd_for,
    step_lr,
    trunk_lr_mult,
)
from liid.training.oaa import MAPS, OaaMaps, attention_from_scores, hybrid_loss, normalised_targets
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-cls"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD = "checkpoint.pt", "log.jsonl", "loss.png", "train.json"
_OURS = {CHECKPOINT, LOG, PLOT, RECORD, MAPS}


@dataclass(frozen=True)
class TrainClsConfig:
    """Settings of a run; all but ``device`` and ``workers`` must match to resume."""

    backbone: str = "efficientnet-lite0"
    weights: str | None = None  # a file; None = the backbone's offline ImageNet file (liid.models.backbone)
    from_scratch: bool = False
    backbone_lr_mult: float | None = None  # trunk lr / new layers' lr; None: 0.1 pretrained, 1 from scratch
    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 8
    size: int = 448
    seed: int = 0
    device: str | None = None
    workers: int = 0
    oaa: str | None = None  # "max" or "average": keep OAA's cumulative maps (paper 003 eqs. 3-5)
    oaa_targets: str | None = None  # OAA+: a folder (or oaa.npz) of cumulative maps to train on (eqs. 7-9)

    def __post_init__(self) -> None:
        if self.oaa is not None and self.oaa not in ("max", "average"):
            raise LiidError(f"--oaa {self.oaa!r}: choose max or average")
        if self.oaa is not None and self.oaa_targets is not None:
            raise LiidError("--oaa and --oaa-targets exclude each other (accumulate maps, or train on them)")
        if self.epochs < 1 or self.batch_size < 1 or self.size < 32 or self.workers < 0:
            raise LiidError(f"bad settings: epochs {self.epochs}, batch size {self.batch_size}, size {self.size}, "
                            f"workers {self.workers}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")

    @property
    def freeze_bn(self) -> bool:
        """BatchNorm is frozen on pretrained trunks (small batches give useless statistics, as in IRNet) and
        trained from scratch (random BN statistics mean nothing)."""
        return not self.from_scratch

    @property
    def trunk_lr_mult(self) -> float:
        return trunk_lr_mult(self.backbone_lr_mult, self.from_scratch)

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers")}


def epoch_lr(config: TrainClsConfig, epoch: int) -> float:
    """lr of 0-based ``epoch``: the base lr for the first half (rounded up), a tenth of it after."""
    return step_lr(config.lr, config.epochs, epoch)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with a positive of the non-interpolated AP (VOC 2010+ style); nan when none has one."""
    aps = []
    for k in range(targets.shape[1]):
        t = targets[:, k] > 0.5
        if not t.any():
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        hits = t[order]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float(precision[hits].mean()))
    return float(np.mean(aps)) if aps else math.nan


@torch.no_grad()
def evaluate(model: MultiLabelClassifier, data: ClassificationData, device: torch.device,
             batch_size: int, progress: bool = True) -> dict:
    """Train-set numbers in eval mode, unflipped: mAP over classes and per-label accuracy at p = 0.5."""
    was_train, data.train = data.train, False
    model.eval()
    try:
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
        bar = progress_bar(loader, desc="train-cls evaluate", unit="batch", enabled=progress, leave=False)
        scores = torch.cat([torch.sigmoid(model(x.to(device))).cpu() for x, _, _ in bar]).numpy()
    finally:
        data.train = was_train
        model.train()
    targets = data.targets.numpy()
    return {"train_map": average_precision(scores, targets),
            "train_label_accuracy": float(((scores > 0.5) == (targets > 0.5)).mean()),
            "train_exact_match": float(((scores > 0.5) == (targets > 0.5)).all(axis=1).mean())}


def load_oaa_targets(path: str | Path, data: ClassificationData, num_classes: int) -> OaaMaps:
    """The cumulative maps OAA+ trains on, checked against the training images (same ids, same classes)."""
    path = Path(path)
    maps = OaaMaps.load(path / MAPS if path.is_dir() else path)
    if maps.num_classes != num_classes:
        raise LiidError(f"{path}: OAA maps of {maps.num_classes} classes, but the dataset has {num_classes}")
    known = {iid: i for i, iid in enumerate(maps.ids)}
    missing = [iid for iid in data.ids if iid not in known]
    if missing:
        raise LiidError(f"{path}: no OAA maps for {len(missing)} training images, e.g. {missing[0]!r}")
    order = [known[iid] for iid in data.ids]
    return OaaMaps(list(data.ids), maps.num_classes, maps.fusion, [maps.present[i] for i in order],
                   [maps.maps[i] for i in order], [maps.counts[i] for i in order], maps.epochs)


def _oaa_update(maps: OaaMaps | None, fusion: str, data: ClassificationData, dataset: Dataset, raw: torch.Tensor,
                logits: torch.Tensor, indices: list[int]) -> OaaMaps:
    """Fuse the batch's attention maps (eq. 2, un-flipped) into the OAA maps (created on the first batch, at the
    score maps' resolution)."""
    att = attention_from_scores(raw).cpu().numpy()
    if maps is None:
        present = [dataset.labels(iid) for iid in data.ids]
        maps = OaaMaps.empty(data.ids, present, dataset.num_classes, tuple(att.shape[2:]), fusion=fusion)
    scores = logits.detach().float().cpu().numpy()
    for b, i in enumerate(indices):
        a = att[b][:, :, ::-1] if data.flipped(i) else att[b]
        maps.update(i, scores[b], a)
    return maps


def train_classifier(dataset: Dataset, out: str | Path, config: TrainClsConfig, resume: bool = False,
                     overwrite: bool = False, progress: bool = True,
                     echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) the classifier on ``dataset`` into ``out``; returns the train.json record.

    Everything is validated (labels, weights, device, resume checkpoint) before the folder is touched. Under
    ``torchrun`` each process trains on its slice of every global batch (``liid.training.distributed``); rank 0
    writes the folder and evaluates.
    """
    out = Path(out)
    world, device = init_world(pick_device(config.device))
    if world.distributed and config.oaa is not None:
        raise LiidError("--oaa under torchrun: OAA's cumulative maps are kept by one process; train it with one")
    if not world.is_main:
        echo, progress = (lambda _: None), False
    data = ClassificationData(dataset, config.size, train=True, seed=config.seed,
                              norm=backbone_norm(config.backbone))
    torch.manual_seed(config.seed)
    trunk, channels = build_backbone(config.backbone, weights=config.weights or "imagenet",
                                     from_scratch=config.from_scratch, freeze_bn=config.freeze_bn)
    model = MultiLabelClassifier(trunk, channels, dataset.num_classes)
    optimizer = sgd_for(model, config.lr, config.trunk_lr_mult)
    has_ckpt = world.on_main(lambda: prepare_out(out, resume, overwrite, _OURS, "train-cls"))
    start, records, seconds = 0, [], []
    if has_ckpt:
        start, records = resume_from(out, model, optimizer, config.resumable(), echo)
        seconds = [r["seconds"] for r in records if r.get("type") == "epoch"]
    elif resume:
        echo(f"{out}: no checkpoint to resume from; starting from scratch")
    targets = None if config.oaa_targets is None else load_oaa_targets(config.oaa_targets, data,
                                                                         dataset.num_classes)
    oaa_maps: OaaMaps | None = None
    if config.oaa is not None and start > 0:
        oaa_maps = OaaMaps.load(out / MAPS)
        if oaa_maps.epochs != start or oaa_maps.ids != data.ids:
            raise LiidError(f"{out / MAPS}: OAA maps of {oaa_maps.epochs} epochs do not belong to the checkpoint "
                            f"of epoch {start}; train again with --overwrite")
    if world.is_main:
        out.mkdir(exist_ok=True)
    model.to(device)
    model.train()
    net = world.replica(model)
    meta = {"backbone": config.backbone, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "size": config.size}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "freeze_bn": config.freeze_bn,
              "dataset": dataset.describe(), "device": str(device), "images": len(data), "processes": world.size}
    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        nonlocal oaa_maps
        x, y, idx = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        indices = [int(i) for i in idx]
        raw = net.raw_cams(x)
        logits = raw.mean(dim=(2, 3))  # = model(x)
        if targets is not None:  # OAA+: the integral attention model, eqs. 7-9
            p = normalised_targets(targets, indices, [data.flipped(i) for i in indices], tuple(raw.shape[2:]))
            loss = hybrid_loss(raw, p.to(device))
        else:
            loss = multilabel_loss(logits, y)
        if config.oaa is not None:
            oaa_maps = _oaa_update(oaa_maps, config.oaa, data, dataset, raw, logits, indices)
        return loss, {}

    class SaveOaaMaps(Hook):
        """OAA's cumulative maps, saved before the checkpoint: a checkpoint of epoch t never has older maps."""

        def after_epoch(self, loop: EpochLoop, epoch: int) -> None:
            if oaa_maps is not None:
                oaa_maps.epochs = epoch + 1
                oaa_maps.save(out / MAPS)

    loop = EpochLoop("train-cls", out, model, optimizer, data, step, lambda e, _: epoch_lr(config, e), config.epochs,
                     config.batch_size, config.seed, config.workers, device, meta, record,
                     lambda file, rec: write_json(file, rec), [SaveOaaMaps()],
                     progress, echo, records, seconds, world=world)
    loop.run(start)

    def finish() -> dict:
        done = finished_record(out, start, config.epochs, record, echo)
        if done is not None:
            return done
        final = evaluate(model, data, device, config.batch_size, progress)
        return finish_run(out, records, seconds, record, final, start, config.epochs, "train-cls", echo)

    return world.on_main(finish)


def read_record(out: str | Path) -> dict:
    """A finished or running folder's train.json."""
    return read_json(Path(out) / RECORD)
