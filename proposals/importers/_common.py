"""Shared pieces of the proposal importers: argument checks, RLE construction and the final ImageProposals.

Every importer builds canonical COCO RLEs (the same ``counts`` string ``pycocotools.mask.encode`` gives
for the dense mask), so an imported store is byte-identical to one written from dense masks.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.store import ImageProposals, rles_to_proposals, validate_image_proposals


def check_image_size(height: int, width: int, where: str) -> tuple[int, int]:
    """The image size as two positive ints (a caller's bug otherwise, still reported as a LiidError)."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise LiidError(f"{where}: image {name} must be a positive integer, got {v!r}")
    return int(height), int(width)


def check_max_proposals(max_proposals: int | None) -> int | None:
    """``None`` (all) or a positive int."""
    if max_proposals is None:
        return None
    if isinstance(max_proposals, bool) or not isinstance(max_proposals, (int, np.integer)) or max_proposals < 1:
        raise LiidError(f"max_proposals must be a positive integer, got {max_proposals!r}")
    return int(max_proposals)


def rank_scores(n: int) -> np.ndarray:
    """Scores for formats that store none: ``1 - j/n`` by file order (descending, in (0, 1])."""
    return (1.0 - np.arange(n, dtype=np.float64) / max(n, 1)).astype(np.float32)


def runs_to_rles(runs: list[tuple[np.ndarray, np.ndarray]], height: int, width: int) -> list[dict]:
    """Canonical COCO RLEs (``counts`` bytes) from column-major runs of ones.

    Each item is ``(starts, ends)``: sorted, disjoint, non-adjacent half-open runs ``[start, end)`` of
    foreground pixels in the column-major (Fortran) flattening of the ``height x width`` mask.
    """
    total = height * width
    objs = []
    for starts, ends in runs:
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        k = starts.shape[0]
        if k == 0:
            counts = np.array([total], dtype=np.int64)
        else:
            counts = np.empty(2 * k + 1, dtype=np.int64)
            counts[0] = starts[0]
            counts[2:-1:2] = starts[1:] - ends[:-1]
            counts[1::2] = ends - starts
            counts[-1] = total - ends[-1]
            if counts[-1] == 0:
                counts = counts[:-1]
        objs.append({"size": [height, width], "counts": counts})
    return mask_util.frPyObjects(objs, height, width) if objs else []


def label_rles(labels: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """One canonical RLE per distinct value of an integer label image, without decoding a mask per label.

    Returns ``(values, rles)`` with ``values`` sorted ascending and ``rles[i]`` the mask ``labels ==
    values[i]``: the column-major runs of the label image are grouped by label (one sort), so the cost is
    O(H*W + runs log runs) whatever the number of labels.
    """
    h, w = labels.shape
    flat = labels.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.shape[0]]])
    run_labels = flat[starts]
    order = np.argsort(run_labels, kind="stable")  # stable: each label's runs stay in position order
    run_labels, starts, ends = run_labels[order], starts[order], ends[order]
    values, first = np.unique(run_labels, return_index=True)
    bounds = np.concatenate([first, [run_labels.shape[0]]])
    runs = [(starts[a:b], ends[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return values, runs_to_rles(runs, h, w)


def rle_counts_from_string(counts: str | bytes) -> np.ndarray | None:
    """Decode a compressed COCO ``counts`` string to the run lengths (int64), or ``None`` if malformed.

    The inverse of pycocotools' ``rleToString`` (6-bit chars from '0', 5 data bits + continuation bit,
    sign bit on the last char, counts after the third stored as a delta to the one two before), in
    numpy. pycocotools itself never checks a string, and decoding one whose runs add up to more than
    ``H*W`` writes past the mask buffer, so foreign RLEs are checked with this first.
    """
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            return None
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        return None
    more = (c & 0x20) != 0
    if more[-1]:
        return None
    last = np.flatnonzero(~more)  # the last char of each number
    first = np.concatenate([[0], last[:-1] + 1])
    lengths = last - first + 1
    if lengths.max() > 7:  # 35 bits: more than any uint32 count needs
        return None
    k = np.arange(c.shape[0]) - np.repeat(first, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), first)
    negative = (c[last] & 0x10) != 0
    x = np.where(negative, x - (np.int64(1) << (5 * lengths)), x)
    x[1::2] = np.cumsum(x[1::2])
    if x.shape[0] > 2:
        x[2::2] = np.cumsum(x[2::2])
    return x


def check_rle_counts(counts: np.ndarray | None, height: int, width: int) -> str | None:
    """Why run lengths are not a valid ``height x width`` RLE (``None`` if they are)."""
    if counts is None:
        return "malformed compressed RLE string"
    if counts.shape[0] and (counts.min() < 0 or counts.max() > 0xFFFFFFFF):
        return "RLE run length out of range"
    total = int(counts.sum())
    if total != height * width:
        return f"RLE runs cover {total} pixels, the mask has {height}x{width} = {height * width}"
    return None


def finish(rles: list[dict], scores: np.ndarray, height: int, width: int, where: str) -> ImageProposals:
    """ImageProposals from pycocotools RLEs (``counts`` bytes): boxes from ``toBbox`` (x2/y2 exclusive)."""
    props = rles_to_proposals(rles, scores, height, width)
    validate_image_proposals(props, where)
    return props
