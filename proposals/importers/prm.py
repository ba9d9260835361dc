"""PRM/MCG run-length JSON (the PRM demo's ``sampleN.json``): one file per image, no scores.

A JSON list of ``{"data": base64, "shape": [H, W]}``; ``data`` decodes to little-endian uint32 pairs
``(start, length)``, ``start`` a 1-based index into the row-major (C-order) flattened H x W mask, each pair
one run of foreground pixels. Runs are rasterised in chunks into a buffer laid out as the Fortran-order
``[H, W, n]`` array pycocotools encodes, so memory stays bounded and no per-mask copy is made twice.
"""

from __future__ import annotations

import base64
import binascii
import os

import numpy as np
from pycocotools import mask as mask_util

from liid.atomic import read_json
from liid.errors import LiidError
from liid.proposals.importers._common import check_image_size, check_max_proposals, finish, rank_scores
from liid.proposals.store import ImageProposals

CHUNK = 64  # proposals rasterised per pycocotools.encode call


def _runs(entry, j: int, height: int, width: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Proposal ``j``'s runs as 0-based C-order half-open ``(starts, ends)``, validated."""
    at = f"{where}: proposal {j}"
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), str) or "shape" not in entry:
        raise LiidError(f"{at}: expected an object {{'data': base64 string, 'shape': [H, W]}}")
    shape = entry["shape"]
    if not isinstance(shape, list) or shape != [height, width]:
        raise LiidError(f"{at}: shape {shape!r} does not match the image size [{height}, {width}]")
    try:
        raw = base64.b64decode(entry["data"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise LiidError(f"{at}: invalid base64 data ({e})") from None
    if len(raw) % 8:
        raise LiidError(f"{at}: {len(raw)} bytes of run data is not a whole number of (start, length) "
                        f"uint32 pairs")
    pairs = np.frombuffer(raw, dtype="<u4").astype(np.int64).reshape(-1, 2)
    starts = pairs[:, 0] - 1
    ends = starts + pairs[:, 1]
    bad = (starts < 0) | (ends > height * width)
    if bad.any():
        k = int(np.argmax(bad))
        raise LiidError(f"{at}: run {k} (start {int(pairs[k, 0])}, length {int(pairs[k, 1])}) is outside the "
                        f"{height}x{width} = {height * width} pixels (starts are 1-based)")
    if not (ends > starts).any():
        raise LiidError(f"{at}: empty mask (no pixels)")
    return starts, ends


def read_prm_json(path: str | os.PathLike, height: int, width: int,
                  max_proposals: int | None = None) -> ImageProposals:
    """Import a PRM/MCG run-length JSON file; scores are ``1 - j/N`` by file order (N = all in file)."""
    where = str(path)
    height, width = check_image_size(height, width, where)
    max_proposals = check_max_proposals(max_proposals)
    data = read_json(path)
    if not isinstance(data, list):
        raise LiidError(f"{where}: expected a JSON list of {{'data', 'shape'}} objects, got "
                        f"{type(data).__name__}")
    n = len(data)
    if n == 0:
        raise LiidError(f"{where}: no proposals")
    keep = n if max_proposals is None else min(n, max_proposals)
    hw = height * width
    rles: list[dict] = []
    for c0 in range(0, keep, CHUNK):
        c1 = min(keep, c0 + CHUNK)
        # buf[i] is mask i transposed, C-order: buf.transpose(2, 1, 0) is the Fortran [H, W, n] array.
        buf = np.zeros((c1 - c0, width, height), dtype=np.uint8)
        delta = np.zeros(hw + 1, dtype=np.int32)
        for i, j in enumerate(range(c0, c1)):
            starts, ends = _runs(data[j], j, height, width, where)
            delta[:] = 0
            np.add.at(delta, starts, 1)
            np.add.at(delta, ends, -1)
            buf[i] = (np.cumsum(delta[:hw]) > 0).reshape(height, width).T  # union of (overlapping) runs
        rles.extend(mask_util.encode(buf.transpose(2, 1, 0)))
    return finish(rles, rank_scores(n)[:keep], height, width, where)
