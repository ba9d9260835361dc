"""What every training command shares: the output-folder rule, the step learning rate, the resume check, the
finished record (the epoch loop itself is liid/training/trainer.py)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from liid.errors import LiidError
from liid.models import load_checkpoint
from liid.training.log import read_log


def step_lr(lr: float, epochs: int, epoch: int) -> float:
    """lr of 0-based ``epoch``: ``lr`` for the first half of ``epochs`` (rounded up), a tenth of it after.

    The papers' schedule (LIID: 5e-4, ÷10 after epoch 5 of 10).
    """
    return lr if epoch < math.ceil(epochs / 2) else lr / 10


def sgd_for(model: torch.nn.Module, lr: float, backbone_lr_mult: float = 1.0) -> torch.optim.SGD:
    """SGD (momentum 0.9, weight decay 1e-4) over the trainable parameters, the ``backbone`` at ``backbone_lr_mult``
    times the lr of the new layers (IRNet's recipe: new layers at 10× a pretrained trunk's lr). Each group keeps its
    ``lr_mult`` (saved and resumed with the optimizer); ``set_lr`` applies it."""
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in model.backbone.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": trunk, "lr_mult": float(backbone_lr_mult)}, {"params": head, "lr_mult": 1.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=1e-4)


def trunk_lr_mult(given: float | None, from_scratch: bool) -> float:
    """The trunk's lr multiplier: as given, else 0.1 on a pretrained trunk (measured: at 1, lr 0.01 wrecks the
    EfficientNet-Lite ImageNet features within an epoch; BENCHMARKS.md) and 1 from scratch."""
    if given is not None:
        return float(given)
    return 1.0 if from_scratch else 0.1


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's lr to ``lr`` times its ``lr_mult`` (1 where a group has none)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)


def prepare_out(out: Path, resume: bool, overwrite: bool, ours: set[str], what: str) -> bool:
    """Check/clear the training folder ``out``; True when a checkpoint is there to resume from.

    A folder with files is refused unless ``--resume`` (continue) or ``--overwrite`` (delete it, but only
    when every entry is one of ``ours``: a folder the user made for something else is never deleted).
    """
    if resume and overwrite:
        raise LiidError("--resume and --overwrite exclude each other")
    if not out.parent.is_dir():
        raise LiidError(f"{out.parent}: folder does not exist")
    if out.exists() and not out.is_dir():
        raise LiidError(f"{out}: exists and is not a folder")
    if not out.exists():
        return False
    entries = [p.name for p in out.iterdir()]
    if resume:
        return (out / "checkpoint.pt").is_file()
    if not entries:
        return False
    if not overwrite:
        raise LiidError(f"{out}: output exists; pass --resume to continue it or --overwrite to replace it")
    foreign = [n for n in entries if n not in ours and ".tmp-" not in n]
    if foreign:
        raise LiidError(f"{out}: not a {what} folder (holds {foreign[0]!r}); refusing to delete it")
    shutil.rmtree(out)
    return False


def check_same_settings(checkpoint: Path, recorded: dict, wanted: dict) -> None:
    """Resuming needs the settings the checkpoint was made with; name the first that differs."""
    diff = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if diff:
        k = diff[0]
        raise LiidError(f"{checkpoint}: made with other settings ({k}: {recorded.get(k)!r} there, "
                        f"{wanted[k]!r} now); use the same settings to resume, or --overwrite")


def resume_from(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: dict,
                echo: Callable[[str], None], inputs: dict[str, tuple[object, str]] | None = None,
                checkpoint: str = "checkpoint.pt", log: str = "log.jsonl") -> tuple[int, list[dict]]:
    """Load ``out``'s checkpoint into ``model``/``optimizer`` to continue a run: ``(epochs done, log records so far)``.

    Refused with one line: other settings (``settings`` vs the checkpoint's ``config``), or an input that changed
    since the run started: ``inputs`` maps a meta key to ``(value now, "the ... X")``.
    """
    file = out / checkpoint
    meta = load_checkpoint(file, model, optimizer)  # class count, backbone, optimizer checked
    check_same_settings(file, meta.get("config", {}), settings)
    for key, (value, what) in (inputs or {}).items():
        if meta.get(key) not in (None, value):
            raise LiidError(f"{file}: {what} changed since this run started; resume with the same input, "
                            "or --overwrite")
    start = int(meta["epoch"])
    echo(f"{out}: resuming after epoch {start}/{settings.get('epochs', '?')}")
    return start, [r for r in read_log(out / log) if r.get("epoch", 0) <= start]


def finished_record(out: Path, start: int, epochs: int, record: dict, echo: Callable[[str], None]) -> dict | None:
    """The train.json of a finished run when nothing is left to train and it was written for the same record
    (settings and inputs): its final numbers stand, so a rerun (``liid run``) does not evaluate again."""
    import json

    if start < epochs or not (out / "train.json").is_file():
        return None
    try:
        old = json.loads((out / "train.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = all(old.get(k) == v for k, v in json.loads(json.dumps(record)).items())
    if not (same and old.get("finished") and old.get("final") and old.get("epochs_done") == epochs):
        return None
    echo(f"{out}: already trained for {epochs} epochs (its final numbers are in train.json)")
    return old


def finish_run(out: Path, records: list[dict], seconds: list[float], record: dict, final: dict, start: int,
               epochs: int, title: str, echo: Callable[[str], None]) -> dict:
    """An image-level trainer's finished train.json: ``final`` (its evaluation) with the last epoch's loss and
    the mean seconds per epoch; a run that had nothing left to train says so and redraws its curve."""
    import numpy as np

    from liid.atomic import write_json
    from liid.training.log import plot_losses

    if not (out / "checkpoint.pt").exists():
        raise LiidError(f"{out}: no checkpoint written")  # cannot happen: epochs >= 1
    if start >= epochs:
        echo(f"{out}: already trained for {epochs} epochs; recomputing the final numbers")
        plot_losses(out / "loss.png", records, title=title)
    epoch_losses = [r["loss"] for r in records if r.get("type") == "epoch"]
    final = {**final, "loss": epoch_losses[-1] if epoch_losses else None,
             "seconds_per_epoch": float(np.mean(seconds)) if seconds else None}
    record = {**record, "epochs_done": epochs, "finished": True, "epoch_seconds": seconds, "final": final}
    write_json(out / "train.json", record)
    return record
