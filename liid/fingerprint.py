"""Cheap fingerprints of input folders, recorded by each stage so a rerun can skip or refuse.

A folder's fingerprint hashes, per file (sorted by name): the name, the size, and the first and last
MiB of content. It changes when a file is added, removed, resized, or rewritten at either end. The folder's
own output record (``.liid.json``: sizes and a write time) is left out: rewriting the same data keeps it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def fingerprint(path: str | os.PathLike) -> str:
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != ".liid.json") if path.is_dir() \
        else [path]
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_CHUNK))
            if size > 2 * _CHUNK:
                fh.seek(size - _CHUNK)
                h.update(fh.read(_CHUNK))
    return h.hexdigest()[:16]
