"""Atomic outputs: write to a temporary sibling, rename on success, remove on failure.

A crash or a bad input never leaves a half-written output under the final name, and an existing
output is only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from liid.errors import LiidError


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; call before any work starts."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise LiidError(f"{path}: output exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise LiidError(f"{path.parent}: folder does not exist")
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``path`` when the block succeeds."""
    path = check_output(path, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(path.name + f".old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False, mode: str = "w") -> Iterator:
    """Yield an open temporary file that becomes ``path`` when the block succeeds."""
    path = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, overwrite: bool = True, compact: bool = False) -> None:
    """Write JSON atomically (inside an atomic directory ``overwrite`` is harmless); ``compact`` for bulk data."""
    with atomic_file(path, overwrite=overwrite) as f:
        if compact:
            json.dump(obj, f, separators=(",", ":"))
        else:
            json.dump(obj, f, indent=1)
            f.write("\n")


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a missing or corrupt file is a LiidError naming it."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise LiidError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LiidError(f"{path}: corrupt JSON ({e})") from None


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Load a .npy array; a missing, truncated or corrupt file is a LiidError naming it."""
    path = Path(path)
    if not path.exists():
        raise LiidError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise LiidError(f"{path}: corrupt .npy file (no NumPy header)")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LiidError(f"{path}: truncated or corrupt .npy file ({e})") from None


def read_header(folder: Path, name: str, fmt: str, version: int, what: str) -> dict:
    """Read ``folder/name`` (a stage's JSON header) and check its ``format`` and ``version``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LiidError(f"{folder}: {what} directory not found")
    meta = read_json(folder / name)
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise LiidError(f"{folder}/{name}: not a {what} (format {found!r})")
    v = meta.get("version", 0)
    if not isinstance(v, int) or v > version:
        raise LiidError(f"{folder}/{name}: version {v!r} is not one this toolkit reads (<= {version})")
    return meta
