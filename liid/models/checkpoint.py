"""Checkpoints and weight files: atomic saves, loads that fail with one line naming the file.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``, so reading one never
runs pickled code)::

    {"format": "liid-checkpoint", "version": 1,
     "model": <state dict>, "optimizer": <state dict or None>,
     "meta": {"model": "MILNetwork", "backbone": "resnet50", "num_classes": K,
              "class_names": [...], "epoch": e, "config": {...},
              "normalization": {"mean": [...], "std": [...]}, ...}}

``normalization`` (the input normalisation of the network's backbone, added by ``save_checkpoint`` when the model
has a ``norm``) is checked by every loader: ``load_checkpoint`` refuses one that is not the network's.

``meta`` is stored as JSON-compatible values (paths become strings) so it can be printed and diffed.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liid.atomic import write_bytes
from liid.errors import LiidError

FORMAT = "liid-checkpoint"
VERSION = 1
REQUIRED_META = ("backbone", "num_classes", "class_names", "config")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def read_weights_file(path: str | os.PathLike) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; a missing or unreadable file is a LiidError naming it."""
    path = Path(path)
    if not path.is_file():
        raise LiidError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zipfile, pickle, EOF, RuntimeError: all mean "not a readable weights file"
        raise LiidError(f"{path}: truncated or corrupt weights file ({_one_line(e)})") from None


def first_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, Any]) -> str | None:
    """Describe the first key where ``found`` does not fit ``expected`` (missing, wrong shape, unexpected).

    ``num_batches_tracked`` may be absent from ``found`` (older torchvision files lack it).
    """
    for key, value in expected.items():
        if key not in found:
            if key.endswith("num_batches_tracked"):
                continue
            return f"key {key!r} missing from the file"
        other = found[key]
        if not isinstance(other, torch.Tensor):
            return f"key {key!r} is not a tensor in the file"
        if tuple(other.shape) != tuple(value.shape):
            return f"key {key!r} has shape {list(other.shape)} in the file, {list(value.shape)} in the model"
    for key in found:
        if key not in expected:
            return f"unexpected key {key!r} in the file"
    return None


def load_state_dict_checked(
    module: nn.Module, state: Mapping[str, Any], source: str | os.PathLike, what: str | None = None
) -> None:
    """Load ``state`` into ``module`` exactly; any key/shape mismatch is a LiidError naming ``source``."""
    expected = module.state_dict()
    problem = first_mismatch(expected, state)
    if problem is not None:
        raise LiidError(f"{source}: weights do not fit the {what or type(module).__name__}: {problem}")
    full = dict(state)
    for key, value in expected.items():  # fill tolerated gaps (num_batches_tracked) with the module's own
        full.setdefault(key, value)
    module.load_state_dict(full, strict=True)


def _json_meta(meta: Mapping[str, Any]) -> dict:
    """``meta`` as JSON-compatible values (Path and other objects become strings)."""
    try:
        return json.loads(json.dumps(dict(meta), default=str))
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint meta is not JSON-serialisable: {e}") from None


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    meta: Mapping[str, Any],
) -> Path:
    """Write model (+ optimizer) state and ``meta`` atomically: a temporary sibling, then ``os.replace``.

    ``meta`` must hold ``backbone``, ``num_classes``, ``class_names`` and ``config``; ``epoch`` and the model's
    class name are added. An existing checkpoint at ``path`` is replaced (training saves every epoch).
    """
    path = Path(path)
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {missing}")
    if not path.parent.is_dir():
        raise LiidError(f"{path.parent}: folder does not exist")
    model = unwrap(model)
    norm = getattr(model, "norm", None)
    if norm is not None and hasattr(norm, "as_dict"):  # the input normalisation travels with the weights
        meta = {**meta, "normalization": norm.as_dict()}
    full_meta = _json_meta({**meta, "epoch": int(epoch), "model": type(model).__name__})
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "meta": full_meta,
    }
    buf = io.BytesIO()  # serialised in memory: torch's zip writer reports a full disk as a bare RuntimeError
    torch.save(payload, buf)
    write_bytes(path, buf.getbuffer())  # explicit, checked writes: a full disk is an OSError naming the file
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file and check its format; returns the raw dict (``model``, ``optimizer``, ``meta``)."""
    path = Path(path)
    ckpt = read_weights_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or not isinstance(ckpt.get("meta"), dict):
        raise LiidError(f"{path}: not a LIID checkpoint (no {FORMAT!r} format tag)")
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise LiidError(f"{path}: checkpoint version {version!r} is not one this toolkit reads (<= {VERSION})")
    return ckpt


def _same_numbers(a: Mapping, b: Mapping, tol: float = 1e-6) -> bool:
    """Two {"mean": [...], "std": [...]} records hold the same values."""
    try:
        return all(len(a[k]) == len(b[k])
                   and all(abs(float(x) - float(y)) <= tol for x, y in zip(a[k], b[k], strict=True))
                   for k in ("mean", "std"))
    except (KeyError, TypeError, ValueError):
        return False


def load_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Load a checkpoint into ``model`` (and ``optimizer``, to resume) and return its ``meta``.

    Checks the model kind, ``meta["num_classes"]`` and ``meta["backbone"]`` against ``model`` before touching
    any weights, so a checkpoint from another run fails with a sentence, not a state-dict traceback.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    model = unwrap(model)
    kind = meta.get("model")
    if kind is not None and kind != type(model).__name__:
        raise LiidError(f"checkpoint {path} holds a {kind}, this run needs a {type(model).__name__}")
    k_model = getattr(model, "num_classes", None)
    if k_model is not None and meta.get("num_classes") != k_model:
        raise LiidError(
            f"checkpoint {path} was trained for K={meta.get('num_classes')} classes, this run has K={k_model}"
        )
    b_model = getattr(model, "backbone_name", None)
    if b_model is not None and meta.get("backbone") != b_model:
        raise LiidError(f"checkpoint {path} uses backbone {meta.get('backbone')!r}, this run uses {b_model!r}")
    norm, recorded = getattr(model, "norm", None), meta.get("normalization")
    if recorded is not None and hasattr(norm, "as_dict") and not _same_numbers(norm.as_dict(), recorded):
        raise LiidError(f"checkpoint {path} was trained on inputs normalised with {recorded}, this network "
                        f"normalises with {norm.as_dict()}")
    load_state_dict_checked(model, ckpt["model"], path)
    if optimizer is not None:
        if ckpt.get("optimizer") is None:
            raise LiidError(f"checkpoint {path} has no optimizer state; cannot resume training from it")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise LiidError(f"checkpoint {path}: optimizer state does not fit ({_one_line(e)})") from None
    return meta


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint a path stands for: a training folder's checkpoint.pt, or the file given (the one rule of every
    `--model`, `--cams`, `--mil` and `--weights` that takes either)."""
    path = Path(path)
    return path / "checkpoint.pt" if path.is_dir() else path
