"""Sharded kNN: the database split into row ranges, each searched by one task, the top-k merged.

The rows searched (unit rows, or their PCA projection) are saved once to ``scratch/rows.npy``; a task
memory-maps that file, takes its shard ``[start, stop)`` and finds, for every query, its ``k`` most similar rows
of the shard (exact: ``faiss.knn``; ivf: the shard added to a copy of one IVF index trained on a sample of all
rows, so every shard shares one coarse quantizer, as ``faiss.IndexShards`` does). The driver merges the shards'
lists per query by (similarity desc, row id asc). The tasks are independent and their merge is ordered, so the
result does not depend on where or in which order they ran (serial, processes, a Ray cluster): only on the
number of shards. On a cluster, ``scratch`` must be a folder every node sees (a shared filesystem).

FAISS's ``IndexShards`` runs its shards as threads of one process; these tasks can run on other machines.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

ROWS, INDEX = "rows.npy", "trained.faissindex"


@dataclass(frozen=True)
class ShardTask:
    """Search rows ``[start, stop)`` of ``scratch/rows.npy`` for the ``k`` best of each query."""

    scratch: str
    start: int
    stop: int
    k: int
    method: str = "exact"  # "exact" | "ivf" (an IVF of the shard, from scratch/trained.faissindex)
    nprobe: int = 1
    query_chunk: int = 65536


def search_shard(task: ShardTask) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [N, k] int64, similarities [N, k] float32)`` of every row of the file against the shard (-1 /
    -inf where the shard has fewer than k rows)."""
    x = np.load(Path(task.scratch) / ROWS, mmap_mode="r")
    n = x.shape[0]
    db = np.ascontiguousarray(x[task.start:task.stop], dtype=np.float32)
    k = min(task.k, db.shape[0])
    idx = np.full((n, task.k), -1, dtype=np.int64)
    sim = np.full((n, task.k), -np.inf, dtype=np.float32)
    index = None
    if task.method == "ivf":
        index = faiss.read_index(str(Path(task.scratch) / INDEX))
        index.add_with_ids(db, np.arange(task.start, task.stop, dtype=np.int64))
        index.nprobe = task.nprobe
    for a in range(0, n, task.query_chunk):
        q = np.ascontiguousarray(x[a:a + task.query_chunk], dtype=np.float32)
        if index is None:
            s, i = faiss.knn(q, db, k, metric=faiss.METRIC_INNER_PRODUCT)
            i = np.where(i >= 0, i + task.start, -1)
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                s, i = index.search(q, k)
        idx[a:a + q.shape[0], :k] = i
        sim[a:a + q.shape[0], :k] = np.where(i >= 0, s, -np.inf)
    return idx, sim


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best of the shards' lists, by similarity (highest first), ties by the lower id."""
    idx = np.concatenate([p[0] for p in parts], axis=1)
    sim = np.concatenate([p[1] for p in parts], axis=1)
    sim = np.where(idx >= 0, sim, -np.inf)
    order = np.lexsort((np.where(idx >= 0, idx, np.iinfo(np.int64).max), -sim), axis=1)[:, :k]
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(sim, order, axis=1)


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous row ranges of near-equal size covering ``[0, n)`` (no empty one)."""
    cuts = np.linspace(0, n, min(shards, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def sharded_search(rows, k: int, shards: int, scratch: str | Path, run, method: str = "exact",
                   trained: faiss.Index | None = None, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of every row of ``rows`` among all rows, searched in ``shards`` tasks run by
    ``run(fn, tasks) -> results`` (``liid.parallel.Backend.map``). ``trained``: the empty trained IVF
    index for ``method="ivf"``."""
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(scratch / ROWS, mode="w+", dtype=np.float32, shape=tuple(rows.shape))
    for a in range(0, rows.shape[0], 65536):  # chunk by chunk: ``rows`` may be made on demand (knn.UnitRows)
        out[a:a + 65536] = rows[a:a + 65536]
    out.flush()
    del out
    if method == "ivf":
        faiss.write_index(trained, str(scratch / INDEX))
    tasks = [ShardTask(str(scratch), a, b, k, method, nprobe) for a, b in shard_bounds(rows.shape[0], shards)]
    return merge_topk(run(search_shard, tasks), k)
