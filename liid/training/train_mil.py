"""Training of the MIL network on segment proposals (LIID section 4): the loop behind ``liid train-mil``.

Per image (one image per SGD step, as in the paper): forward the resized image and its top-N proposal
boxes through ``MILNetwork``, take eq. 9's ``L = α·L_Att + β·L_MIL + γ·L_Cent`` (``liid.losses``; ỹ of
L_Att from the frozen CAM classifier, see ``attention.py``), step SGD (lr 5e-4, ÷10 after half the epochs,
momentum 0.9, weight decay 1e-4), then move the class centres by eq. 8 with the step's features.
Output folder::

    DIR/checkpoint.pt            model (with the centres) + optimizer after the last finished epoch
    DIR/attention_labels.json    ỹ of every proposal (the cache of eq. 3), when α > 0
    DIR/log.jsonl, DIR/loss.png  per-step losses (total and each part), per-epoch means, the curve
    DIR/train.json               settings, inputs, per-epoch seconds and the final numbers

Deterministic on CPU for a given seed (init, order and flips as in ``train_cls``; the centres are part
of the model state), so ``--resume`` reproduces the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from liid.atomic import write_json
from liid.datasets.base import Dataset
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.losses import LossWeights, lse_pool, mil_total_loss, update_centres
from liid.models import MILNetwork, backbone_norm, build_backbone, pick_device
from liid.training.attention import POOLINGS, SOFT_IOU_ETA, attention_labels
from liid.training.distributed import init_world
from liid.training.loop import prepare_out, resume_from, sgd_for, step_lr, trunk_lr_mult
from liid.training.mil_data import MILData, ProposalSet, collate, read_proposal_set
from liid.training.train_cls import average_precision
from liid.training.trainer import EpochLoop, Hook

FORMAT = "liid-train-mil"
VERSION = 1
CHECKPOINT, LOG, PLOT, RECORD, ATT = "checkpoint.pt", "log.jsonl", "loss.png", "train.json", "attention_labels.json"
_OURS = {CHECKPOINT, LOG, PLOT, RECORD, ATT}


@dataclass(frozen=True)
class TrainMilConfig:
    """Settings of a run (the paper's values by default); all but ``device``/``workers`` must match to resume."""

    backbone: str = "efficientnet-lite0"
    weights: str | None = None  # a file (torchvision ResNet or a LIID checkpoint); None = ImageNet in the hub cache
    from_scratch: bool = False
    backbone_lr_mult: float | None = None  # trunk lr / new layers' lr; None: 0.1 pretrained, 1 from scratch
    epochs: int = 10
    lr: float = 5e-4
    size: int = 448
    top: int | None = None  # proposals per image (first N of the store); None = all
    alpha: float = 0.5
    beta: float = 0.5
    gamma: float = 0.1
    eta: float | None = None  # None: 0.75 (the paper's, Table 5) for box/mask pooling, 0.3 for soft-iou
    r: float = 5.0
    theta: float = 0.01
    att_pooling: str = "box"
    flip: bool = True
    seed: int = 0
    device: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.eta is None:
            object.__setattr__(self, "eta", SOFT_IOU_ETA if self.att_pooling == "soft-iou" else 0.75)
        if self.epochs < 1 or self.size < 32 or self.workers < 0 or (self.top is not None and self.top < 1):
            raise LiidError(f"bad settings: epochs {self.epochs}, size {self.size}, top {self.top}, "
                            f"workers {self.workers}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise LiidError(f"--lr {self.lr}: must be a positive number")
        if not (self.r > 0 and math.isfinite(self.r)):
            raise LiidError(f"--r {self.r}: must be a positive number")
        if not 0 <= self.theta <= 1 or not 0 <= self.eta <= 2:
            raise LiidError(f"--theta {self.theta} must lie in [0, 1] and --eta {self.eta} in [0, 2] "
                            "(R = mean + max of a map in [0, 1])")
        if self.att_pooling not in POOLINGS:
            raise LiidError(f"--att-pooling {self.att_pooling!r}: choose one of {', '.join(POOLINGS)}")
        try:
            LossWeights(self.alpha, self.beta, self.gamma)
        except ValueError as e:
            raise LiidError(str(e)) from None

    @property
    def weights_(self) -> LossWeights:
        return LossWeights(self.alpha, self.beta, self.gamma)

    @property
    def freeze_bn(self) -> bool:
        """As in train-cls: frozen on pretrained trunks (one image per step gives useless batch statistics)."""
        return not self.from_scratch

    @property
    def trunk_lr_mult(self) -> float:
        return trunk_lr_mult(self.backbone_lr_mult, self.from_scratch)

    def resumable(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("device", "workers")}


def build_mil_model(config: TrainMilConfig, num_classes: int) -> MILNetwork:
    trunk, channels = build_backbone(config.backbone, weights=config.weights or "imagenet",
                                     from_scratch=config.from_scratch, freeze_bn=config.freeze_bn)
    return MILNetwork(trunk, channels, num_classes)


def train_mil(dataset: Dataset, proposals: str | Path | ProposalSet, out: str | Path, config: TrainMilConfig,
              cam_classifier: str | Path | None = None, resume: bool = False, overwrite: bool = False,
              progress: bool = True, echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) the MIL network on ``dataset`` with the proposal store ``proposals``; returns train.json.

    ``cam_classifier``: a ``train-cls`` folder or checkpoint, required when ``config.alpha > 0``. All inputs
    are checked (labels, proposals, weights, classifier, resume checkpoint) before anything is written.

    Under ``torchrun`` with W processes a step takes W images, one per process (the recipe's one image per
    step, W times); eq. 8 moves the centres by the step's images in rank order, the same on every process.
    """
    out = Path(out)
    world, device = init_world(pick_device(config.device))
    if not world.is_main:
        echo, progress = (lambda _: None), False
    if config.alpha > 0 and cam_classifier is None:
        raise LiidError("L_Att (alpha > 0) needs the CAM classifier: pass --cams DIR (a `liid train-cls` folder), "
                        "or --alpha 0 to train without it")
    pset = proposals if isinstance(proposals, ProposalSet) else read_proposal_set(
        dataset, proposals, config.top, progress=progress)
    data = MILData(dataset, pset, config.size, train=config.flip, seed=config.seed,
                   norm=backbone_norm(config.backbone))
    torch.manual_seed(config.seed)
    model = build_mil_model(config, dataset.num_classes)
    optimizer = sgd_for(model, config.lr, config.trunk_lr_mult)
    if cam_classifier is not None and config.alpha > 0:  # check the classifier before touching the folder
        from liid.training.attention import load_classifier
        load_classifier(cam_classifier, dataset, torch.device("cpu"))
    has_ckpt = world.on_main(lambda: prepare_out(out, resume, overwrite, _OURS, "train-mil"))
    start, records, seconds = 0, [], []
    if has_ckpt:
        start, records = resume_from(out, model, optimizer, config.resumable(), echo, inputs={
            "proposals_fingerprint": (fingerprint(pset.store), f"the proposal store {pset.store}")})
        seconds = [r["seconds"] for r in records if r.get("type") == "epoch"]
    elif resume:
        echo(f"{out}: no checkpoint to resume from; starting from scratch")
    if world.is_main:
        out.mkdir(exist_ok=True)
    y_tilde: list[np.ndarray] | None = None
    att_summary = None
    if config.alpha > 0:  # made (and cached) once, by rank 0
        y_tilde, att_summary = world.on_main(lambda: attention_labels(
            cam_classifier, dataset, pset, config.eta, config.att_pooling, device, cache=out / ATT,
            progress=progress))
        echo(f"CAM pseudo labels (eq. 3, eta {config.eta}): {att_summary['proposals']} proposals, "
             f"{100 * att_summary['background_fraction']:.1f}% background")
    model.to(device)
    model.train()
    net = world.replica(model)
    weights = config.weights_
    meta = {"backbone": config.backbone, "num_classes": dataset.num_classes, "class_names": dataset.classes,
            "config": config.resumable(), "dataset": dataset.describe(), "size": config.size,
            "top": config.top, "proposals": str(pset.store), "proposals_fingerprint": fingerprint(pset.store)}
    record = {"format": FORMAT, "version": VERSION, "settings": asdict(config), "freeze_bn": config.freeze_bn,
              "dataset": dataset.describe(), "proposals": str(pset.store), "device": str(device),
              "images": len(pset), "proposals_used": pset.num_proposals,
              "cam_classifier": str(cam_classifier) if cam_classifier is not None else None,
              "attention_labels": att_summary, "processes": world.size}
    targets = pset.labels[:, 1:].astype(np.float32)
    image_scores = np.zeros_like(targets)
    def step(batch: tuple, epoch: int, step: int) -> tuple[torch.Tensor, dict]:
        x, boxes, idx = batch
        i = idx[0]
        f, _, p = net(x.to(device), [boxes[0].to(device)])
        labels = np.flatnonzero(pset.labels[i]).tolist()
        yt = torch.from_numpy(y_tilde[i]).to(device) if y_tilde is not None else None
        loss, parts = mil_total_loss(p, labels, y_tilde=yt, f=f, centres=model.centres, weights=weights, r=config.r)
        if not torch.isfinite(loss):
            raise LiidError(f"loss became {loss.item()} in epoch {epoch + 1}, image {pset.ids[i]!r}; lower --lr")
        current.update(i=i, f=f, p=p)
        return loss, {k: float(v.item()) for k, v in parts.items()}

    class CentresAndImageScores(Hook):
        """Eq. 8's centre update after each step (not by gradient), and the image's LSE scores for the epoch's
        image mAP."""

        def after_step(self, loop: EpochLoop, epoch: int, step: int) -> None:
            mine = [(current["i"], current["f"].detach().cpu(), current["p"].detach().cpu())] if loop.real_items else []
            for images in world.all_gather(mine):  # the step's images in rank order (one in one process)
                for i, f, p in images:  # eq. 8
                    model.centres.copy_(update_centres(model.centres, f.to(device), p.to(device), config.theta))
                    image_scores[i] = lse_pool(p, config.r)[1:].numpy()

        def epoch_numbers(self, loop: EpochLoop, epoch: int) -> dict[str, float]:
            return {"image_map": average_precision(image_scores, targets)}

    def epoch_line(rec: dict) -> str:
        parts_txt = ", ".join(f"{k} {rec[k]:.4f}" for k in ("att", "mil", "cent") if k in rec)
        return (f"epoch {rec['epoch']}/{config.epochs}: loss {rec['loss']:.4f} ({parts_txt}), image mAP (LSE) "
                f"{rec['image_map']:.3f}, lr {rec['lr']:g}, {rec['seconds']:.1f} s")

    current: dict = {}
    EpochLoop("train-mil", out, model, optimizer, data, step, lambda e, _: step_lr(config.lr, config.epochs, e),
              config.epochs, world.size, config.seed, config.workers, device, meta, record,
              lambda file, rec: write_json(file, rec), [CentresAndImageScores()], progress, echo, records, seconds,
              collate=collate, unit="img", averaged=None, title="train-mil (eq. 9)", epoch_line=epoch_line,
              world=world).run(start)
    if start >= config.epochs:
        echo(f"{out}: already trained for {config.epochs} epochs")
    epochs = [r for r in records if r.get("type") == "epoch"]
    final = {k: epochs[-1].get(k) for k in ("loss", "att", "mil", "cent", "image_map")} if epochs else {}
    final["seconds_per_epoch"] = float(np.mean(seconds)) if seconds else None
    final["seconds_per_image"] = float(np.sum(seconds) / (len(seconds) * len(pset))) if seconds else None
    record = {**record, "epochs_done": config.epochs, "finished": True, "epoch_seconds": seconds, "final": final}
    if world.is_main:
        write_json(out / RECORD, record)
    world.barrier()
    return record

