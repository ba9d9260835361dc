"""Training of the multi-class-token ViT of the ``vit-sm`` labeler (paper 002, MCTformer-V2): ``liid train-vit``.

Loss ``L_cls + L_pat`` (eq. 11): multi-label soft-margin on the class-token scores (eqs. 7-8) plus the same on
the global-average-pooled Original-CAM (eqs. 9-10). AdamW as DeiT/MCTformer train it: weight decay 0.05 (not
on biases, norms, class tokens and position embeddings), a linear warm-up from 1e-6 over ``warmup_epochs``,
then a cosine decay to ``min_lr``, stochastic depth 0.1. The paper's run: DeiT-S from ImageNet, 224 px,
batch 64, 60 epochs, lr 5e-4 — which the DeiT/MCTformer code scales by batch/512, so the default ``lr`` here
is the scaled value 6.25e-5 and ``--lr`` is used as given. Augmentation (``augment``): ``"deit"`` (default) is
what MCTformer trains with, timm's DeiT training transform (random-resized crop with area 0.08-1, flip, colour
jitter 0.4, RandAugment rand-m9-mstd0.5-inc1, bicubic, random erasing 0.25 per pixel; ``DeitData``);
``"flip"`` is the project's plain square resize with a horizontal flip (``ClassificationData``). Output folder::

    DIR/checkpoint.pt   model + optimizer after the last finished epoch (atomic, every epoch)
    DIR/log.jsonl       one {"type": "step"} record per batch (loss, loss_cls, loss_pat) and one per epoch
    DIR/loss.png        the loss curve
    DIR/train.json      settings, dataset, per-epoch seconds and the final numbers (train mAP, accuracy)

Deterministic on CPU for a given seed: the init comes from ``torch.manual_seed(seed)``, the epoch's order
from a loader generator seeded with (seed, epoch), the flips from (seed, epoch, index), and the stochastic
depth draws from the global generator reseeded with (seed, epoch) at each epoch's start, so ``resume`` from
an epoch boundary reproduces the uninterrupted run's losses exactly. The DeiT transform draws from Python's,
numpy's and torch's global generators; ``DeitData`` seeds them with (seed, epoch, index) around each item and
restores them afterwards.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from liid.atomic import read_json, write_json
from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.losses import multilabel_loss
from liid.models import load_checkpoint, pick_device, read_checkpoint
from liid.models.checkpoint import checkpoint_file
from liid.models.vit import DEIT_S, MultiClassTokenViT, load_deit_weights
from liid.progress import progress as progress_bar
from liid.training.data import ClassificationData
from liid.training.loop import finish_run, finished_record, prepare_out, resume_from
from liid.training.train_cls import average_precision
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-vit"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD = "checkpoint.pt", "log.jsonl", "loss.png", "train.json"
_OURS = {CHECKPOINT, LOG, PLOT, RECORD}
WARMUP_LR = 1e-6  # DeiT's warm-up start
AUGMENTS = ("deit", "flip")
# timm's DeiT training transform as MCTformer's main.py passes it (DeiT's defaults), with RandAugment's magnitude
# capped at 9 (mmax9): at 10 timm's PosterizeIncreasing keeps 0 bits, which the Pillow of MCTformer's time turned
# into a black image and Pillow 11+ refuses with a ValueError.
DEIT_AUGMENT = {"color_jitter": 0.4, "auto_augment": "rand-m9-mstd0.5-inc1-mmax9", "interpolation": "bicubic",
                "re_prob": 0.25, "re_mode": "pixel", "re_count": 1}


class DeitData(ClassificationData):
    """``ClassificationData`` whose training items go through timm's DeiT transform (``DEIT_AUGMENT``).

    timm's transforms draw from the global ``random``, numpy and torch generators; each item seeds all three from
    (seed, epoch, index) and restores them afterwards, so the augmentation is reproducible (and a resumed run
    sees the same crops) without disturbing the training loop's own draws. Evaluation items (``train`` False)
    are the plain square resize.
    """

    def __init__(self, dataset: Dataset, size: int, train: bool = True, seed: int = 0):
        super().__init__(dataset, size, train=train, seed=seed)
        from timm.data import create_transform  # timm is the vit extra; the model needs it too

        self.transform = create_transform(input_size=size, is_training=True, **DEIT_AUGMENT)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not self.train:
            return super().__getitem__(index)
        from PIL import Image

        image = Image.fromarray(self.dataset.load_image(self.ids[index]))
        item_seed = int(self.rng(index).integers(2**31))
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(item_seed)
            np.random.seed(item_seed)  # RandAugment picks its operations with numpy
            torch.manual_seed(item_seed)
            x = self.transform(image)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
        return x, self.targets[index], index


@dataclass(frozen=True)
class TrainVitConfig:
    """Settings of a run; all but ``device`` and ``workers`` must match to resume. DeiT-S sizes by default."""

    embed_dim: int = DEIT_S["embed_dim"]
    depth: int = DEIT_S["depth"]
    num_heads: int = DEIT_S["num_heads"]
    patch_size: int = DEIT_S["patch_size"]
    head_kernel: int = 1  # the Original-CAM convolution (eq. 1); MCTformer-V2 uses 3
    size: int = 224
    weights: str | None = None  # a DeiT state dict file; None = the DeiT-S ImageNet file in the torch hub cache
    from_scratch: bool = False
    epochs: int = 60
    lr: float = 6.25e-5  # the paper's 5e-4 scaled by batch 64 / 512, as DeiT's and MCTformer's code do
    min_lr: float = 1e-5
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    drop_path: float = 0.1
    batch_size: int = 64
    augment: str = "deit"  # AUGMENTS: timm's DeiT transform (MCTformer's) or a plain flip
    seed: int = 0
    device: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise LiidError(f"--augment {self.augment!r}: choose one of {', '.join(AUGMENTS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.workers < 0:
            raise LiidError(f"bad settings: epochs {self.epochs}, batch size {self.batch_size}, "
                            f"workers {self.workers}")
        if min(self.embed_dim, self.depth, self.num_heads, self.patch_size) < 1 or self.embed_dim % self.num_heads:
            raise LiidError(f"--embed-dim {self.embed_dim}, --heads {self.num_heads}: the head count must divide "
                            "the embedding size (and every size be positive)")
        if self.size < 32 or self.size % self.patch_size:
            raise LiidError(f"--size {self.size}: at least 32 and a multiple of --patch {self.patch_size}")
        if self.head_kernel < 1 or self.head_kernel % 2 == 0:
            raise LiidError(f"head kernel {self.head_kernel}: must be odd")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")
        if not (math.isfinite(self.min_lr) and 0 <= self.min_lr <= self.lr):
            raise LiidError(f"--min-lr {self.min_lr}: must lie in [0, --lr {self.lr}]")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise LiidError(f"--warmup-epochs {self.warmup_epochs}: must be below --epochs {self.epochs} "
                            "(pass --warmup-epochs 0 for short runs)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise LiidError(f"--weight-decay {self.weight_decay}: must be >= 0")
        if not 0 <= self.drop_path < 1:
            raise LiidError(f"--drop-path {self.drop_path}: must lie in [0, 1)")
        if self.weights is not None and self.from_scratch:
            raise LiidError("--weights and --from-scratch exclude each other")

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers")}


def epoch_lr(config: TrainVitConfig, epoch: int) -> float:
    """lr of 0-based ``epoch``: linear warm-up from 1e-6 over ``warmup_epochs``, then cosine from ``lr`` to
    ``min_lr`` over the remaining epochs (per epoch, as timm's scheduler in DeiT/MCTformer)."""
    w = config.warmup_epochs
    if epoch < w:
        return WARMUP_LR + (config.lr - WARMUP_LR) * epoch / w
    t, span = epoch - w, config.epochs - w
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * t / span))


def build_vit(num_classes: int, config: TrainVitConfig) -> MultiClassTokenViT:
    """The network of ``config`` for ``num_classes`` foreground classes, random init."""
    return MultiClassTokenViT(num_classes, img_size=config.size, patch_size=config.patch_size,
                              embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
                              head_kernel=config.head_kernel, drop_path=config.drop_path)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as timm's ``param_groups_weight_decay``: no decay on 1-D tensors, class tokens, positions."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name in ("cls_token", "pos_embed") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def vit_loss(out, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """eq. 11: ``(L_cls + L_pat, L_cls, L_pat)``, both multi-label soft-margin losses (eqs. 8 and 10)."""
    l_cls = multilabel_loss(out.cls_logits, targets)
    l_pat = multilabel_loss(out.patch_logits, targets)
    return l_cls + l_pat, l_cls, l_pat


@torch.no_grad()
def evaluate(model: MultiClassTokenViT, data: ClassificationData, device: torch.device, batch_size: int,
             progress: bool = True) -> dict:
    """Train-set numbers in eval mode, unflipped: mAP of the class-token and of the patch scores, per-label
    accuracy of the class-token scores at p = 0.5."""
    was_train, data.train = data.train, False
    model.eval()
    try:
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
        bar = progress_bar(loader, desc="train-vit evaluate", unit="batch", enabled=progress, leave=False)
        outs = [model(x.to(device)) for x, _, _ in bar]
    finally:
        data.train = was_train
        model.train()
    cls = torch.sigmoid(torch.cat([o.cls_logits for o in outs])).cpu().numpy()
    pat = torch.sigmoid(torch.cat([o.patch_logits for o in outs])).cpu().numpy()
    targets = data.targets.numpy()
    return {"train_map": average_precision(cls, targets), "train_map_patch": average_precision(pat, targets),
            "train_label_accuracy": float(((cls > 0.5) == (targets > 0.5)).mean())}


def train_vit(dataset: Dataset, out: str | Path, config: TrainVitConfig, resume: bool = False,
              overwrite: bool = False, progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) the multi-class-token ViT on ``dataset`` into ``out``; returns the train.json record.

    Everything is validated (labels, weights, device, resume checkpoint) before the folder is touched.
    """
    out = Path(out)
    device = pick_device(config.device)
    data = (DeitData if config.augment == "deit" else ClassificationData)(dataset, config.size, train=True,
                                                                         seed=config.seed)
    torch.manual_seed(config.seed)
    model = build_vit(dataset.num_classes, config)
    weights = None if config.from_scratch else str(load_deit_weights(model, config.weights))
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    has_ckpt = prepare_out(out, resume, overwrite, _OURS, "train-vit")
    start, records, seconds = 0, [], []
    if has_ckpt:
        start, records = resume_from(out, model, optimizer, config.resumable(), echo)
        seconds = [r["seconds"] for r in records if r.get("type") == "epoch"]
    elif resume:
        echo(f"{out}: no checkpoint to resume from; starting from scratch")
    out.mkdir(exist_ok=True)
    model.to(device)
    model.train()
    meta = {"backbone": model.backbone_name, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "size": config.size, "arch": model.arch(),
            "weights": weights}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "arch": model.arch(),
              "weights": weights, "dataset": dataset.describe(), "device": str(device), "images": len(data)}
    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        x, y, _ = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, l_cls, l_pat = vit_loss(model(x), y)
        return loss, {"loss_cls": float(l_cls.item()), "loss_pat": float(l_pat.item())}

    class StochasticDepthSeed(Hook):
        """The stochastic-depth draws of each epoch from (seed, epoch), so a resumed run draws the same."""

        def before_epoch(self, loop: EpochLoop, epoch: int) -> None:
            torch.manual_seed(config.seed * 1_000_003 + epoch + 500_009)

    EpochLoop("train-vit", out, model, optimizer, data, step, lambda e, _: epoch_lr(config, e), config.epochs,
              config.batch_size, config.seed, config.workers, device, meta, record,
                     lambda file, rec: write_json(file, rec), [StochasticDepthSeed()],
              progress, echo, records, seconds).run(start)
    done = finished_record(out, start, config.epochs, record, echo)
    if done is not None:
        return done
    final = evaluate(model, data, device, config.batch_size, progress)
    return finish_run(out, records, seconds, record, final, start, config.epochs, "train-vit", echo)


def read_record(out: str | Path) -> dict:
    """A finished or running folder's train.json."""
    return read_json(Path(out) / RECORD)


_ARCH_KEYS = ("num_classes", "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "head_kernel")


def load_vit(path: str | Path, dataset: Dataset, device: torch.device) -> tuple[MultiClassTokenViT, int]:
    """The trained ViT of a ``train-vit`` folder (or its checkpoint file), in eval mode on ``device``, and its
    input size.

    One-line errors before any weight is touched: a missing file, another kind of network, other class names
    or count than the dataset's.
    """
    path = Path(path)
    file = checkpoint_file(path)
    if not file.is_file():
        raise LiidError(f"{file}: ViT checkpoint not found (train one with `liid train-vit`)")
    meta = read_checkpoint(file)["meta"]
    if meta.get("model") != MultiClassTokenViT.__name__:
        raise LiidError(f"checkpoint {file} holds a {meta.get('model')}, not a multi-class-token ViT "
                        "(use a train-vit folder)")
    names = meta.get("class_names")
    if meta.get("num_classes") != dataset.num_classes or (names is not None and list(names) != list(dataset.classes)):
        raise LiidError(f"checkpoint {file} was trained on classes {list(names or [])[1:]}, the dataset has "
                        f"{list(dataset.classes)[1:]}")
    arch = meta.get("arch")
    if not isinstance(arch, dict) or any(k not in arch for k in _ARCH_KEYS):
        raise LiidError(f"checkpoint {file}: no ViT architecture in its meta (not written by train-vit)")
    model = MultiClassTokenViT(**{k: arch[k] for k in _ARCH_KEYS})
    load_checkpoint(file, model)
    return model.to(device).eval(), int(meta.get("size") or arch["img_size"])
