"""MCG proposals saved by MATLAB: segment files (superpixels + labels cells) and box files.

Segment files (``mcg-mat``) hold ``superpixels`` (H x W, 1-based labels), ``labels`` (N x 1 cell: proposal
``j`` is the union of the superpixels listed in ``labels{j}``) and ``scores`` (N x 1). Each superpixel is
encoded to RLE once and a proposal is the RLE merge of its superpixels, so N full masks are never decoded.
Box files (``mcg-boxes``) hold ``boxes`` (N x 4, ``[y1, x1, y2, x2]``, 1-based inclusive) and optionally
``scores``; each becomes a filled-box mask. Proposal indices in messages are 0-based (the store's).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.importers._common import (
    check_image_size,
    check_max_proposals,
    finish,
    label_rles,
    rank_scores,
    runs_to_rles,
)
from liid.proposals.store import ImageProposals


def load_mat(path: str | os.PathLike) -> dict:
    """The variables of a MATLAB v4-v7 .mat file; missing, corrupt and v7.3 files are LiidErrors."""
    path = Path(path)
    if not path.is_file():
        raise LiidError(f"{path}: file not found")
    try:
        mat = scipy.io.loadmat(path, appendmat=False)
    except NotImplementedError:
        raise LiidError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it in MATLAB "
                        f"with save(file, ..., '-v7')") from None
    except Exception as e:  # scipy raises many types (ValueError, OSError, zlib.error...) on a bad file
        raise LiidError(f"{path}: unreadable or corrupt .mat file ({type(e).__name__}: {e})") from None
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    # MCG's im2mcg returns a struct; `save(f, 'candidates')` stores it as one 1x1 struct variable.
    if len(variables) == 1:
        (v,) = variables.values()
        if isinstance(v, np.ndarray) and v.dtype.names and v.size == 1:
            variables = {name: v.reshape(-1)[0][name] for name in v.dtype.names}
    return variables


def _get(variables: dict, names: tuple[str, ...], where: str, required: bool = True) -> np.ndarray | None:
    for name in names:
        if name in variables:
            return variables[name]
    if required:
        found = ", ".join(sorted(variables)) or "none"
        raise LiidError(f"{where}: no variable {names[0]!r} (variables found: {found})")
    return None


def _numeric(value, what: str, where: str) -> np.ndarray:
    """A real numeric array (MATLAB double/intN/logical), else a LiidError."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise LiidError(f"{where}: {what} must be numeric, got MATLAB type {arr.dtype}")
    return arr


def _integral(arr: np.ndarray) -> bool:
    return bool(np.isfinite(arr).all() and (arr == np.round(arr)).all()) if arr.dtype.kind == "f" else True


def _scores(variables: dict, n: int, where: str) -> np.ndarray:
    """The file's ``scores`` (any N-element vector), or ``1 - j/N`` when absent; checked finite."""
    raw = _get(variables, ("scores",), where, required=False)
    if raw is None:
        return rank_scores(n)
    scores = _numeric(raw, "'scores'", where).astype(np.float64).reshape(-1)
    if scores.shape[0] != n:
        raise LiidError(f"{where}: {n} proposals but {scores.shape[0]} scores")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise LiidError(f"{where}: proposal {int(np.argmax(bad))}: score is NaN or inf")
    return scores


def _cells(value, where: str) -> list:
    """The items of an N x 1 (or 1 x N) MATLAB cell array."""
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise LiidError(f"{where}: 'labels' must be an N x 1 cell array, got "
                        f"{getattr(value, 'dtype', type(value).__name__)} {np.shape(value)}")
    if value.ndim > 2 or (value.ndim == 2 and min(value.shape) > 1):
        raise LiidError(f"{where}: 'labels' must be an N x 1 cell array, got shape {value.shape}")
    return list(value.reshape(-1))


def _cell_ids(item, j: int, max_id: int, where: str) -> np.ndarray:
    """The distinct superpixel ids (0-based) of proposal ``j``'s cell, checked in 1..max_id."""
    at = f"{where}: proposal {j} (labels{{{j + 1}}})"
    while isinstance(item, np.ndarray) and item.dtype == object:  # nested 1x1 cells
        if item.size != 1:
            raise LiidError(f"{at}: expected a vector of superpixel ids, got a cell of shape {item.shape}")
        item = item.reshape(-1)[0]
    ids = _numeric(item, "superpixel ids", at).reshape(-1)
    if ids.shape[0] == 0:
        raise LiidError(f"{at}: empty proposal (no superpixel ids)")
    if not _integral(ids):
        raise LiidError(f"{at}: superpixel ids must be integers")
    ids = ids.astype(np.int64)
    bad = (ids < 1) | (ids > max_id)
    if bad.any():
        raise LiidError(f"{at}: superpixel id {int(ids[np.argmax(bad)])} out of range 1..{max_id}")
    return np.unique(ids)


def read_mcg_mat(path: str | os.PathLike, height: int, width: int,
                 max_proposals: int | None = None) -> ImageProposals:
    """Import an MCG segment-proposal .mat file (``superpixels``, ``labels``, ``scores``) in file order.

    ``max_proposals`` keeps the first n (MCG files are sorted by score). ``scores`` may be absent (then
    ``1 - j/N``). Superpixel value 0 (unused by MCG) belongs to no proposal.
    """
    where = str(path)
    height, width = check_image_size(height, width, where)
    max_proposals = check_max_proposals(max_proposals)
    variables = load_mat(path)
    sp = _numeric(_get(variables, ("superpixels",), where), "'superpixels'", where)
    if sp.shape != (height, width):
        raise LiidError(f"{where}: superpixels are {'x'.join(map(str, sp.shape))} but the image is "
                        f"{height}x{width}")
    if not _integral(sp) or (sp.size and sp.min() < 0):
        raise LiidError(f"{where}: superpixels must be non-negative integer labels")
    sp = sp.astype(np.int64)
    max_id = int(sp.max())
    cells = _cells(_get(variables, ("labels",), where), where)
    n = len(cells)
    if n == 0:
        raise LiidError(f"{where}: no proposals")
    if max_id < 1:
        raise LiidError(f"{where}: superpixels hold no label >= 1")
    scores = _scores(variables, n, where)
    keep = n if max_proposals is None else min(n, max_proposals)

    values, sp_rles = label_rles(sp)
    slot = np.full(max_id + 1, -1, dtype=np.int64)  # superpixel id -> index into sp_rles (-1: absent)
    slot[values] = np.arange(values.shape[0])
    rles = []
    for j in range(keep):
        ids = _cell_ids(cells[j], j, max_id, where)
        parts = [sp_rles[s] for s in slot[ids] if s >= 0]
        if not parts:
            raise LiidError(f"{where}: proposal {j} (labels{{{j + 1}}}): its superpixels cover no pixels")
        rles.append(mask_util.merge(parts, intersect=0))
    return finish(rles, scores[:keep], height, width, where)


def read_mcg_boxes(path: str | os.PathLike, height: int, width: int,
                   max_proposals: int | None = None) -> ImageProposals:
    """Import an MCG box file: ``boxes`` (or ``bboxes``) N x 4 ``[y1, x1, y2, x2]``, 1-based inclusive.

    Box ``[y1, x1, y2, x2]`` becomes our ``[x1 - 1, y1 - 1, x2, y2]`` (0-based, x2/y2 exclusive) and the
    filled-box mask rows ``y1-1 .. y2-1``, columns ``x1-1 .. x2-1``. ``scores`` default to ``1 - j/N``.
    """
    where = str(path)
    height, width = check_image_size(height, width, where)
    max_proposals = check_max_proposals(max_proposals)
    variables = load_mat(path)
    raw = _numeric(_get(variables, ("boxes", "bboxes"), where), "'boxes'", where)
    if raw.size == 0:
        raise LiidError(f"{where}: no proposals")
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise LiidError(f"{where}: 'boxes' must be N x 4 [y1, x1, y2, x2], got shape {raw.shape}")
    n = raw.shape[0]
    scores = _scores(variables, n, where)
    keep = n if max_proposals is None else min(n, max_proposals)
    raw = raw[:keep]
    if not _integral(raw):
        bad = ~np.all(np.isfinite(raw) & (raw == np.round(raw)), axis=1)
        raise LiidError(f"{where}: proposal {int(np.argmax(bad))}: box {raw[np.argmax(bad)].tolist()} "
                        f"is not integer pixels")
    b = raw.astype(np.int64)
    y1, x1, y2, x2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    bad = (y1 < 1) | (x1 < 1) | (y2 > height) | (x2 > width) | (y1 > y2) | (x1 > x2)
    if bad.any():
        j = int(np.argmax(bad))
        raise LiidError(f"{where}: proposal {j}: box [y1, x1, y2, x2] = {b[j].tolist()} is not inside the "
                        f"{height}x{width} image (1-based inclusive, y1 <= y2, x1 <= x2)")
    runs = []
    for r0, c0, r1, c1 in zip(y1 - 1, x1 - 1, y2, x2, strict=True):  # 0-based, r1/c1 exclusive
        if r1 - r0 == height:  # full-height box: one run (keeps the RLE canonical)
            runs.append((np.array([c0 * height]), np.array([c1 * height])))
        else:
            cols = np.arange(c0, c1) * height
            runs.append((cols + r0, cols + r1))
    return finish(runs_to_rles(runs, height, width), scores[:keep], height, width, where)
