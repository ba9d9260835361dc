"""Exact cosines of given pairs of rows of a store too large for memory, in column slabs (the out-of-core re-rank).

The IVF search proposes candidates in a PCA projection; their exact cosine in the full dimension needs each
query's and each candidate's full row. At COCO scale (5e6 x 2048 float16, 20 GB) those rows cannot all be held,
and gathering them at random from the file (2e8 pairs x 4 KB) reads the store many times over in 4 KB pieces.
Instead the dimensions are cut into slabs: one sequential pass over the store keeps columns [a, b) of every row
(N x w float32, within the memory budget), and every pair's partial dot product and every row's partial squared
norm over those columns are added up; after the last slab, cos = dot / (|q| |c|). The passes alternate their
direction, so the tail of one pass is still in the page cache at the start of the next.

FAISS computes each slab's products (``fvec_inner_products_by_idx``); no library streams the slabs of a store
too large for memory, hence these lines. Each slab's products are float32 and their sum float64, so the
cosines agree with the in-memory re-rank (float32 rows, one product) to float32 rounding, not to the bit.
"""

from __future__ import annotations

import faiss
import numpy as np

from liid.graph.mapped import read_rows
from liid.progress import progress as progress_bar

READ_ROWS = 65536  # rows per sequential read of the store (and query rows per FAISS call)


def slab_width(n: int, d: int, memory_bytes: float) -> int:
    """Columns per slab: as many float32 columns of all ``n`` rows as ``memory_bytes`` holds (a multiple of 16
    when above 16, at least 1)."""
    w = int(memory_bytes // max(1, 4 * n))
    if w >= d:
        return d
    return max(1, w - w % 16 if w >= 16 else w)


def slab_cosines(features: np.ndarray, cand: np.ndarray, centre: np.ndarray | None = None,
                 memory_bytes: float = 4 * 2**30, progress: bool = True) -> np.ndarray:
    """Cosine [N, c] (float32) of row i of ``features`` [N, D] minus ``centre`` with each row ``cand[i, j]``
    (-inf where ``cand`` < 0); a zero row has cosine 0 with everything (as ``faiss.normalize_L2`` leaves it).

    ``features`` is read a slab of columns at a time (``memory_bytes`` bounds the float32 slab), sequentially,
    without its memory map's pages staying resident (``mapped.read_rows``). Each slab's products come from
    ``faiss.fvec_inner_products_by_idx`` (row i against its listed rows, SIMD and OpenMP), summed in float64."""
    n, d = features.shape
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    c = cand.shape[1]
    dots = np.zeros((n, c), dtype=np.float64)
    sq = np.zeros(n, dtype=np.float64)
    mu = np.zeros(d, dtype=np.float32) if centre is None else np.asarray(centre, dtype=np.float32)
    w = slab_width(n, d, memory_bytes)
    starts = list(range(0, d, w))
    chunks = list(range(0, n, READ_ROWS))
    bar = progress_bar(total=2 * len(starts) * len(chunks), desc="exact re-rank", unit="step", enabled=progress,
                       leave=False)
    buf = np.empty(n * min(w, d), dtype=np.float32)  # every slab's rows, contiguous (FAISS reads them flat)
    part = np.empty((min(n, READ_ROWS), c), dtype=np.float32)
    for p, a in enumerate(starts):
        b = min(d, a + w)
        slab = buf[:n * (b - a)].reshape(n, b - a)  # a narrower last slab reuses the buffer too
        for r0 in (chunks if p % 2 == 0 else chunks[::-1]):  # serpentine: the page cache keeps the turn
            rows = slab[r0:r0 + READ_ROWS]
            rows[:] = read_rows(features, r0, r0 + READ_ROWS)[:, a:b]
            rows -= mu[a:b]
            sq[r0:r0 + READ_ROWS] += np.einsum("nd,nd->n", rows, rows, dtype=np.float64)
            bar.update(1)
        for r0 in chunks:
            r1 = min(n, r0 + READ_ROWS)
            faiss.fvec_inner_products_by_idx(faiss.swig_ptr(part), faiss.swig_ptr(slab[r0:r1]),
                                             faiss.swig_ptr(slab), faiss.swig_ptr(cand[r0:r1]), b - a, r1 - r0, c)
            dots[r0:r1] += part[:r1 - r0]
            bar.update(1)
        del slab
    bar.close()
    del buf  # before the cosines: the slab is the largest array here
    norm = np.sqrt(sq)
    out = np.empty((n, c), dtype=np.float32)
    for r0 in chunks:  # chunk by chunk: whole-array temporaries would be several N x c float64 arrays
        r1 = min(n, r0 + READ_ROWS)
        i = cand[r0:r1]
        den = norm[r0:r1, None] * norm[np.where(i >= 0, i, 0)]
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.where(den > 0, dots[r0:r1] / den, 0.0)
        out[r0:r1] = np.where(i >= 0, cos, -np.inf)
    return out
