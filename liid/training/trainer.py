"""One training loop for the image-level trainers, with hooks for what a method adds (detectron2's trainer idea).

Per epoch: the learning rate of the schedule, the dataset's epoch (its augmentation draws), a DataLoader shuffled
by a generator seeded from (seed, epoch), the steps (the method's ``step``: a batch → its loss and the extra
numbers to log), a refusal of a non-finite loss, the step and epoch records, the checkpoint with log.jsonl and
loss.png, the unfinished train.json and one epoch line. Seeds, order of operations and files are what the
trainers wrote by hand before, so a run resumed from any epoch continues bit for bit.

Hooks (``Hook`` subclasses): ``before_epoch`` (e.g. seed the stochastic-depth draws), ``after_epoch`` before the
checkpoint (e.g. save OAA's cumulative maps, which a checkpoint must never be newer than).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from liid.errors import LiidError
from liid.models import save_checkpoint
from liid.progress import progress as progress_bar
from liid.training.distributed import World
from liid.training.log import plot_losses, write_log
from liid.training.loop import set_lr

StepFn = Callable[[Any, int, int], tuple[torch.Tensor, dict[str, float]]]  # (batch, epoch, step) → loss, extras


class Hook:
    """What a method adds to the loop; every method is optional."""

    def before_epoch(self, loop: EpochLoop, epoch: int) -> None:
        """After the epoch's lr and data draws are set, before its loader is made."""

    def after_step(self, loop: EpochLoop, epoch: int, step: int) -> None:
        """After the optimizer's step, before the step's record (e.g. MIL's class centres, eq. 8)."""

    def epoch_numbers(self, loop: EpochLoop, epoch: int) -> dict[str, float]:
        """Numbers added to the epoch's record (e.g. MIL's image mAP)."""
        return {}

    def after_epoch(self, loop: EpochLoop, epoch: int) -> None:
        """After the epoch's records, before its checkpoint."""

    def after_log(self, loop: EpochLoop, epoch: int) -> None:
        """After the epoch's checkpoint and log.jsonl, before its curve and train.json (e.g. DSRG's seed growth:
        a run stopped during it resumes by growing again from the checkpoint)."""

    def after_checkpoint(self, loop: EpochLoop, epoch: int) -> None:
        """After the epoch's checkpoint, record and line (e.g. DeepLab's evaluation of that epoch)."""


@dataclass
class EpochLoop:
    """The loop of one training folder ``out``: ``name`` (train-cls ...) names its progress and its curve."""

    name: str
    out: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    data: Any  # an EpochData: ``set_epoch`` and a torch Dataset
    step: StepFn
    lr_at: Callable[[int, int], float]  # (epoch, step), 0-based → learning rate
    epochs: int
    batch_size: int
    seed: int
    workers: int
    device: torch.device
    meta: dict  # the checkpoint's
    record: dict  # train.json's settings part
    write_record: Callable[[Path, dict], None]  # writes train.json (the trainer's own writer: its tests stop there)
    hooks: Sequence[Hook] = ()
    progress: bool = True
    echo: Callable[[str], None] = print
    records: list[dict] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    collate: Callable | None = None  # the DataLoader's collate_fn (MIL: images of their own size with their boxes)
    unit: str = "batch"
    averaged: Sequence[str] | None = ("loss",)  # the step numbers averaged into the epoch record (None: all)
    title: str | None = None  # of loss.png (default: name)
    epoch_line: Callable[[dict], str] | None = None  # the epoch's line from its record (default: loss, lr, time)
    lr_per_step: bool = False  # False: the lr of (epoch, 0) for the whole epoch; True: set before every step (poly)
    drop_last: bool = False  # the DataLoader's (DeepLab: equal batches for the image-pooling BatchNorm)
    weighted: bool = True  # the epoch's means weighted by batch size (False: the mean over steps)
    step_prefix: Callable[[int, int], dict] | None = None  # (epoch, step) → fields before the loss in a step record
    world: World = World()  # torchrun's processes (liid.training.distributed): batch_size is the global batch
    real_items: int = 0  # the last step's items on this rank (0: a padding item of a short last batch)

    def _loader(self, epoch: int) -> tuple[torch.utils.data.DataLoader, list[tuple[int, int]] | None]:
        """The epoch's loader and, under several processes, each step's (real items here, global batch size)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if not self.world.distributed:
            return torch.utils.data.DataLoader(self.data, batch_size=self.batch_size, shuffle=True, generator=gen,
                                               collate_fn=self.collate, drop_last=self.drop_last,
                                               num_workers=self.workers), None
        batches = self.world.epoch_batches(len(self.data), self.batch_size, gen, self.drop_last)
        # its own generator, so that the workers' base seed is not drawn from the global random state
        loader = torch.utils.data.DataLoader(self.data, batch_sampler=[b for b, _, _ in batches],
                                             collate_fn=self.collate, num_workers=self.workers,
                                             generator=torch.Generator().manual_seed(self.seed))
        return loader, [(n, total) for _, n, total in batches]

    def run(self, start: int) -> None:
        """Epochs ``start`` … ``epochs - 1``: each one trained, recorded and checkpointed."""
        for epoch in range(start, self.epochs):
            self.run_epoch(epoch)

    def run_epoch(self, epoch: int) -> None:
        lr = self.lr_at(epoch, 0)
        set_lr(self.optimizer, lr)
        self.data.set_epoch(epoch)
        for hook in self.hooks:
            hook.before_epoch(self, epoch)
        loader, shares = self._loader(epoch)
        main = self.world.is_main
        t0, count = time.perf_counter(), 0
        sums: dict[str, float] = {}
        bar = progress_bar(loader, desc=f"{self.name} {epoch + 1}/{self.epochs}", unit=self.unit,
                           enabled=self.progress and main, leave=False)
        for step, batch in enumerate(bar):
            if self.lr_per_step:
                lr = self.lr_at(epoch, step)
                set_lr(self.optimizer, lr)
            loss, extras = self.step(batch, epoch, step)
            values = {"loss": float(loss.item()), **extras}
            if shares is not None:  # the global batch's numbers, on every rank
                local, total = shares[step]
                values = self.world.batch_mean(values, local, total)
            if not np.isfinite(values["loss"]):
                raise LiidError(f"loss became {values['loss']} in epoch {epoch + 1}, step {step}; lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            if shares is None:
                loss.backward()
            else:  # DDP averages the ranks' gradients: weigh each by its share of the global batch
                (loss * self.world.share(local, total)).backward()
            self.optimizer.step()
            self.real_items = len(batch[0]) if shares is None else local  # this rank's, for the hooks (0: padding)
            for hook in self.hooks:
                hook.after_step(self, epoch, step)
            n = 1 if not self.weighted else (len(batch[0]) if shares is None else total)
            count += n
            for k, v in values.items():
                if self.averaged is None or k in self.averaged:
                    sums[k] = sums.get(k, 0.0) + v * n
            prefix = self.step_prefix(epoch, step) if self.step_prefix is not None else {}
            self.records.append({"type": "step", "epoch": epoch + 1, "step": step, **prefix, **values, "lr": lr})
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()})
        bar.close()
        self.seconds.append(time.perf_counter() - t0)
        means = {k: v / count for k, v in sums.items()}
        extra: dict[str, float] = {}
        for hook in self.hooks:
            extra.update(hook.epoch_numbers(self, epoch))
        rec = {"type": "epoch", "epoch": epoch + 1, **means, "lr": lr, "seconds": self.seconds[-1], **extra}
        self.records.append(rec)
        for hook in self.hooks:
            hook.after_epoch(self, epoch)
        if main:  # rank 0 writes; the others hold the same model, records and numbers
            save_checkpoint(self.out / "checkpoint.pt", self.model, self.optimizer, epoch + 1, self.meta)
            write_log(self.out / "log.jsonl", self.records)
        for hook in self.hooks:
            hook.after_log(self, epoch)
        if main:
            plot_losses(self.out / "loss.png", self.records, title=self.title or self.name)
            self.write_record(self.out / "train.json", {**self.record, "epochs_done": epoch + 1, "finished": False})
            self.echo(self.epoch_line(rec) if self.epoch_line is not None else
                      f"epoch {epoch + 1}/{self.epochs}: loss {means['loss']:.4f}, lr {lr:g}, "
                      f"{self.seconds[-1]:.1f} s")
        self.world.barrier()
        for hook in self.hooks:
            hook.after_checkpoint(self, epoch)
