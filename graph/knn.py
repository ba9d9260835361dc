"""k most similar *other* proposals by cosine similarity, with FAISS (LIID section 5.3: k = 3).

exact : IndexFlatIP (BLAS all-pairs), on every GPU when faiss-gpu sees one.
ivf   : candidates from a PCA projection (``pca_dim``) indexed by an IVF (IndexIVFFlat) and searched list
        by list with FAISS's big-batch search (queries grouped per inverted list, one BLAS product per
        list), then re-ranked by exact float32 cosine in the full dimension. Recall is measured, never
        assumed (``recall_at_k``).
hnsw  : IndexHNSWFlat (graph index), for comparison.
auto  : exact up to ``exact_max`` proposals (or on a GPU), ivf above.

``shards`` > 1 (exact and ivf): the database is split into that many row ranges searched by independent tasks
(``liid.graph.shards``) on a backend (serial, processes, a Ray cluster) and the top-k merged; the result
depends on the number of shards, never on the backend.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from liid.graph.mapped import gather_rows, read_rows
from liid.memory import peak_gb, reset_peak

METHODS = ("auto", "exact", "ivf", "hnsw")
RERANKS = ("full", "pca")
ROW_CHUNK = 1 << 16  # rows per step of the row-wise selections (bounds their temporaries)


@dataclass(frozen=True)
class KnnConfig:
    k: int = 3
    method: str = "auto"
    exact_max: int = 30_000  # auto: exact search up to this many proposals on a CPU
    nlist: int = 0  # IVF lists; 0 = 2.3 * sqrt(N), within [16, 65536]
    nprobe: int = 0  # IVF lists probed per query; 0 = 3 * nlist / 64 (measured, see BENCHMARKS.md)
    candidates: int = 16  # approximate candidates per query, re-ranked exactly (>= k + 1)
    pca_dim: int = 384  # ivf: search in this many principal components (0: full dimension)
    hnsw_m: int = 32
    hnsw_ef: int = 128
    seed: int = 0
    shards: int = 1  # exact / ivf: database row ranges searched as separate tasks, then merged
    rerank: str = "full"  # ivf: "full" (exact cosine in the full dimension) | "pca" (the search's own cosines)

    def to_json(self) -> dict:
        return asdict(self)


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def feature_mean(features: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """The mean feature [D] (float64 accumulation, chunk by chunk: memory-mapped stores stay on disk)."""
    total = np.zeros(features.shape[1], dtype=np.float64)
    for s in range(0, features.shape[0], chunk):
        total += read_rows(features, s, s + chunk).astype(np.float64).sum(axis=0)
    return total / max(features.shape[0], 1)


def normalized(features: np.ndarray, chunk: int = 65536, centre: np.ndarray | None = None) -> np.ndarray:
    """float32 copy with unit L2 rows (zero rows stay zero), converted chunk by chunk; ``centre`` [D] is
    subtracted first (cosine around the dataset mean instead of around 0)."""
    x = np.empty(features.shape, dtype=np.float32)
    mu = None if centre is None else np.asarray(centre, dtype=np.float32)
    for s in range(0, features.shape[0], chunk):
        x[s:s + chunk] = read_rows(features, s, s + chunk)
        if mu is not None:
            x[s:s + chunk] -= mu
    faiss.normalize_L2(x)
    return x


class UnitRows:
    """The unit float32 rows of ``features`` [N, D] (a memory map, say) minus ``centre``, made on demand, a
    slice or a gather at a time, never all at once: what ``normalized`` would give, row for row, bit for bit.

    With ``mean`` and ``proj`` [D, d]: the unit rows of ``(row - mean) @ proj`` (a PCA projection). Slicing
    (``rows[a:b]``) and integer arrays of any shape (``rows[idx]`` → ``idx.shape + (d,)``) are supported;
    ``np.asarray(rows)`` makes the whole float32 matrix (for the methods that need it: exact, hnsw).
    ``memory_bytes``: what the exact re-rank of candidates may hold at once (``slab_cosines``).
    """

    def __init__(self, features: np.ndarray, centre: np.ndarray | None = None, mean: np.ndarray | None = None,
                 proj: np.ndarray | None = None, chunk: int = 65536, unit: bool = False,
                 memory_bytes: float = 4 * 2**30):
        self.features = features
        self.unit = unit  # the rows are unit already (and centred as wanted): only the projection is applied
        self.centre = None if centre is None else np.asarray(centre, dtype=np.float32)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.proj, self.chunk = proj, chunk
        self.memory_bytes = memory_bytes
        self.shape = (features.shape[0], features.shape[1] if proj is None else proj.shape[1])
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def projected(self, mean: np.ndarray, proj: np.ndarray) -> UnitRows:
        return UnitRows(self.features, self.centre, mean, proj, self.chunk, self.unit,
                        self.memory_bytes)

    def _make(self, raw: np.ndarray) -> np.ndarray:
        y = np.array(raw, dtype=np.float32, order="C")
        if not self.unit:
            if self.centre is not None:
                y -= self.centre
            faiss.normalize_L2(y)
        if self.proj is not None:
            y -= self.mean  # in place: a gather of many rows holds one float32 copy, not two
            y = np.ascontiguousarray(y @ self.proj, dtype=np.float32)
            faiss.normalize_L2(y)
        return y

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            a, b, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("UnitRows: slices with a step are not supported")
            if b - a <= self.chunk:
                return self._make(read_rows(self.features, a, b))
            return np.concatenate([self._make(read_rows(self.features, s, min(b, s + self.chunk)))
                                   for s in range(a, b, self.chunk)])
        idx = np.asarray(key)
        flat = idx.reshape(-1)
        uniq, inverse = np.unique(flat, return_inverse=True)  # a sorted gather reads a memory map in order
        # ``chunk`` rows at a time: a gather of 3·10^5 rows of 2048-d (IVF training) made all at once held
        # its float16, float32 and centred float32 copies together (7.95 GB measured at COCO scale)
        made = np.empty((uniq.size, self.shape[1]), dtype=np.float32)
        for s in range(0, uniq.size, self.chunk):
            made[s:s + self.chunk] = self._make(gather_rows(self.features, uniq[s:s + self.chunk]))
        return made[inverse].reshape(*idx.shape, self.shape[1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for s in range(0, self.shape[0], self.chunk):
            out[s:s + self.chunk] = self[s:s + self.chunk]
        return out if dtype is None else out.astype(dtype)


def _first_good(idx: np.ndarray, sim: np.ndarray, bad: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first ``k`` entries not marked ``bad``, in their original order (-1 / -inf pad)."""
    if idx.shape[0] > ROW_CHUNK:  # chunk by chunk: the sort's temporaries are a few N x c arrays
        parts = [_first_good(idx[a:a + ROW_CHUNK], sim[a:a + ROW_CHUNK], bad[a:a + ROW_CHUNK], k)
                 for a in range(0, idx.shape[0], ROW_CHUNK)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    order = np.argsort(bad, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)[:, :k].copy()
    sim = np.take_along_axis(sim, order, axis=1)[:, :k].copy()
    b = np.take_along_axis(bad, order, axis=1)[:, :k]
    idx[b] = -1
    sim[b] = -np.inf
    return idx, sim


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own id from its result row and keep the first k others (-1 pads)."""
    own = (np.arange(start, start + idx.shape[0])[:, None] == idx) | (idx < 0)
    return _first_good(idx, sim, own, k)


def _rerank(x: np.ndarray, idx: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine of each candidate in the full dimension; keep the k best other proposals.

    Rows in memory: float32 products, chunk by chunk. Rows made on demand from a store on disk (``UnitRows``):
    ``slab_cosines``, a few sequential passes over the store instead of a random read per candidate."""
    whole = None
    if isinstance(x, UnitRows) and x.proj is None:
        from liid.graph.slab_cosines import slab_cosines  # noqa: PLC0415

        whole = slab_cosines(x.features, idx, None if x.unit else x.centre, memory_bytes=x.memory_bytes)
    n, c = idx.shape
    out_i = np.empty((n, k), dtype=np.int64)
    out_s = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        cand = idx[s:e]
        if whole is None:
            sim = np.matmul(x[np.where(cand < 0, 0, cand)], x[s:e][:, :, None])[:, :, 0]
        else:
            sim = whole[s:e].copy()
        sim[(cand < 0) | (cand == np.arange(s, e)[:, None])] = -np.inf
        # duplicates in a candidate row (possible after merging) count once
        srt = np.sort(cand, axis=1)
        if (srt[:, 1:] == srt[:, :-1]).any():
            for r in np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]:
                _, first = np.unique(cand[r], return_index=True)
                dup = np.ones(c, dtype=bool)
                dup[first] = False
                sim[r, dup] = -np.inf
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out_i[s:e] = np.take_along_axis(cand, order, axis=1)
        out_s[s:e] = np.take_along_axis(sim, order, axis=1)
    bad = ~np.isfinite(out_s)
    out_i[bad] = -1
    return out_i, out_s


def exact_cosines(x: np.ndarray, idx: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The cosines of each row with its listed rows (-inf where -1), summed in float64 by numpy's own loop: the
    same bits wherever it runs (BLAS sums depend on its thread count, so shard tasks on other machines differ
    in the last bit)."""
    out = np.full(idx.shape, -np.inf, dtype=np.float32)
    for s in range(0, idx.shape[0], chunk):
        i = idx[s:s + chunk]
        v = np.einsum("nkd,nd->nk", x[np.where(i < 0, 0, i)].astype(np.float64), x[s:s + chunk].astype(np.float64))
        out[s:s + chunk] = np.where(i >= 0, v, -np.inf)
    return out


def exact_search(x, queries: np.ndarray, k: int, query_ids: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k other rows of ``x`` for each query (``query_ids``: their rows in x, to exclude). ``x`` a
    ``UnitRows``: searched chunk by chunk, the chunks' lists merged (never the whole float32 matrix)."""
    if isinstance(x, UnitRows):
        from liid.graph.shards import merge_topk  # noqa: PLC0415

        best = None
        for s in range(0, x.shape[0], x.chunk):
            db = x[s:s + x.chunk]
            sim, idx = faiss.knn(queries, db, min(k + 1, db.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
            part = (np.where(idx >= 0, idx + s, -1), sim)
            best = part if best is None else merge_topk([best, part], k + 1)
        idx, sim = best
    elif gpu_available():  # pragma: no cover - no GPU in CI
        index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(x.shape[1]))
        index.add(x)
        sim, idx = index.search(queries, k + 1)
    else:  # blocked BLAS products over x in place (an index would copy x)
        sim, idx = faiss.knn(queries, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    if query_ids is None:
        return _drop_self(idx, sim, k)
    own = (idx == np.asarray(query_ids)[:, None]) | (idx < 0)
    order = np.argsort(own, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)[:, :k]
    sim = np.take_along_axis(sim, order, axis=1)[:, :k]
    return idx, sim


def pca_fit(x, dim: int, sample: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and top ``dim`` principal axes [D, dim] (float32) of a seeded sample of the rows of ``x``.

    numpy's eigh on the D x D covariance of a sample: 2 s at D = 2048 here, where faiss.PCAMatrix.train
    took 19 s on the same sample (measured, this machine).
    """
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    s = x[np.sort(rng.choice(n, size=min(n, sample), replace=False))].astype(np.float64)
    mu = s.mean(axis=0)
    s -= mu
    _, vecs = np.linalg.eigh(s.T @ s)
    return mu.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)


QUERY_BLOCK = 1 << 20  # queries per big-batch search: bounds the query copy (1M x 384 float32 = 1.5 GB)


def _ivf_search(x, cfg: KnnConfig, nlist: int, nprobe: int, candidates: int, sharded=None,
                peaks: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates [N, c] and their cosines in the searched space (the PCA projection, or x itself).

    Out of core: the projection is fitted on a sample and made chunk by chunk as the index is filled; the
    queries are read back from the index (its direct map) block by block, so no copy of all projected rows
    exists beside the index."""
    from faiss.contrib.big_batch_search import big_batch_search  # noqa: PLC0415

    rows = x if isinstance(x, UnitRows) else UnitRows(x, unit=True)
    y = rows.projected(*pca_fit(rows, cfg.pca_dim, seed=cfg.seed)) if 0 < cfg.pca_dim < x.shape[1] else rows
    n, d = y.shape
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(cfg.seed)
    index.cp.seed = cfg.seed
    index.train(y[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))])
    if sharded is not None:
        return sharded(y, candidates, "ivf", trained=index, nprobe=nprobe)
    for a in range(0, n, y.chunk):
        index.add(y[a:a + y.chunk])
    index.nprobe = nprobe
    index.make_direct_map()
    if peaks is not None:  # the PCA fit, the projection streamed into the index: this phase's peak RSS
        peaks["index"] = peak_gb()
        reset_peak()
    idx = np.empty((n, candidates), dtype=np.int64)
    sim = np.empty((n, candidates), dtype=np.float32)
    for a in range(0, n, QUERY_BLOCK):
        b = min(n, a + QUERY_BLOCK)
        with contextlib.redirect_stdout(io.StringIO()):
            sim[a:b], idx[a:b] = big_batch_search(index, index.reconstruct_n(a, b - a), candidates,
                                                  method="knn_function", verbose=0, threaded=1)
    return idx, sim


def _mask_groups(cand: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """``cand`` with the candidates of each row's own group set to -1 (none when ``groups`` is None); in place,
    chunk by chunk."""
    if groups is None:
        return cand
    for a in range(0, cand.shape[0], ROW_CHUNK):
        c = cand[a:a + ROW_CHUNK]
        c[(c >= 0) & (groups[np.where(c < 0, 0, c)] == groups[a:a + ROW_CHUNK, None])] = -1
    return cand


def drop_same_group(idx: np.ndarray, sim: np.ndarray, groups: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Keep, per row (in order), the first ``k`` neighbours from another group than the row's own (-1 pads)."""
    groups = np.asarray(groups)
    parts = []
    for a in range(0, idx.shape[0], ROW_CHUNK):  # chunk by chunk: no N x c temporaries
        i, g = idx[a:a + ROW_CHUNK], groups[a:a + ROW_CHUNK]
        parts.append(_first_good(i, sim[a:a + ROW_CHUNK], (i < 0) | (groups[np.where(i < 0, 0, i)] == g[:, None]),
                                 k))
    if not parts:
        return idx[:, :k].copy(), sim[:, :k].copy()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def knn(x: np.ndarray, cfg: KnnConfig = KnnConfig(), groups: np.ndarray | None = None, backend=None,
        scratch: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """For unit rows ``x``: indices [N, k] (-1 = none) and cosine similarities of the k most similar
    other rows, plus a dict saying which method and parameters were used.

    ``groups`` [N] (e.g. each proposal's image): neighbours are taken from other groups only. The search then
    asks for ``k`` + the largest group's size candidates, so that k others remain after the filter.
    ``backend`` (a ``liid.parallel.Backend``) runs the shard tasks of ``cfg.shards`` > 1, which share
    the rows through files in ``scratch`` (default: a temporary folder; on a cluster, one every node sees)."""
    if cfg.shards > 1:
        if backend is None:
            from liid.parallel import Backend  # noqa: PLC0415

            backend = Backend()
        own = scratch is None
        scratch = Path(tempfile.mkdtemp(prefix="liid-knn-")) if own else Path(scratch)
        try:
            idx, sim, info = _knn(x, cfg, groups, backend, scratch)
        finally:
            if own:
                shutil.rmtree(scratch, ignore_errors=True)
        info.update(shards=cfg.shards, backend=backend.name)
        return idx, sim, info
    return _knn(x, cfg, groups, None, None)


def _knn(x: np.ndarray, cfg: KnnConfig, groups: np.ndarray | None, backend, scratch: Path | None,
         masked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``knn`` on one machine or over shards; ``masked`` [N] (groups): approximate candidates of the query's own
    group are dropped before the exact re-rank, which then costs nothing for them."""
    sharded = None
    if backend is not None:
        from liid.graph.shards import sharded_search  # noqa: PLC0415

        def sharded(rows, k, method, trained=None, nprobe=1):
            return sharded_search(rows, k, cfg.shards, scratch, lambda fn, tasks: backend.map(
                fn, tasks, desc="kNN shards"), method=method, trained=trained, nprobe=nprobe)

    if groups is not None:
        extra = int(np.bincount(np.asarray(groups)).max())
        wide = replace(cfg, k=cfg.k + extra, candidates=max(cfg.candidates, cfg.k + extra + 1))
        idx, sim, info = _knn(x, wide, None, backend, scratch, masked=np.asarray(groups))
        idx, sim = drop_same_group(idx, sim, groups, cfg.k)
        info.update(k=cfg.k, searched_k=wide.k, other_groups_only=True)
        return idx, sim, info
    n = x.shape[0]
    method = cfg.method
    if method not in METHODS:
        raise ValueError(f"unknown kNN method {method!r}")
    if method == "auto":
        method = "exact" if (n <= cfg.exact_max or gpu_available()) else "ivf"
    info: dict = {"method": method, "k": cfg.k, "gpu": gpu_available()}
    if n <= cfg.k + 1 and method != "exact":
        method = info["method"] = "exact"
    if sharded is not None and method == "hnsw":
        raise ValueError("--shards works with --knn exact and ivf, not hnsw")
    if cfg.rerank not in RERANKS:
        raise ValueError(f"unknown re-rank {cfg.rerank!r}; choose one of {RERANKS}")
    if method == "exact" and sharded is not None:
        idx, _ = _drop_self(*sharded(x, cfg.k + 1, "exact"), cfg.k)
        sim = exact_cosines(x, idx)
    elif method == "exact":
        xa = np.asarray(x)  # exact search of all rows holds them all (auto: up to exact_max)
        idx, sim = exact_search(xa, xa, cfg.k)
    elif method == "ivf":
        nlist = cfg.nlist or int(min(65536, max(16, round(2.3 * math.sqrt(n)))))
        nlist = min(nlist, max(1, n // 8))
        nprobe = cfg.nprobe or max(1, round(3 * nlist / 64))
        ncand = max(cfg.candidates, cfg.k + 1)
        info.update(nlist=nlist, nprobe=min(nprobe, nlist), pca_dim=cfg.pca_dim, candidates=ncand,
                    rerank=cfg.rerank)
        t0, peaks = time.perf_counter(), info.setdefault("peak_rss_gb", {})
        reset_peak()
        cand, csim = _ivf_search(x, cfg, nlist, min(nprobe, nlist), ncand, sharded, peaks)
        cand = _mask_groups(cand, masked)
        info["search_seconds"], peaks["search"] = round(time.perf_counter() - t0, 1), peak_gb()
        if cfg.rerank == "full":
            del csim  # the re-rank's own cosines replace the search's (at COCO scale: 0.9 GB less held)
            t0 = time.perf_counter()
            reset_peak()
            idx, sim = _rerank(x, cand, cfg.k)
            info["rerank_seconds"], peaks["rerank"] = round(time.perf_counter() - t0, 1), peak_gb()
        else:  # the candidates' cosines in the searched (PCA) space, best first: no full-dimension read
            idx, sim = _drop_self(cand, csim, cfg.k)
    else:  # hnsw
        x = np.asarray(x)
        index = faiss.IndexHNSWFlat(x.shape[1], cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.hnsw_ef
        index.add(x)
        _, cand = index.search(x, max(cfg.candidates, cfg.k + 1))
        idx, sim = _rerank(x, _mask_groups(cand, masked), cfg.k)
        info.update(hnsw_m=cfg.hnsw_m, hnsw_ef=cfg.hnsw_ef)
    return idx.astype(np.int64), sim.astype(np.float32), info


def recall_at_k(x, idx: np.ndarray, sample: int, k: int, seed: int = 0, groups: np.ndarray | None = None) -> float:
    """Share of the exact k nearest other neighbours found, over ``sample`` random queries. With ``groups``
    (neighbours from other groups only, ``--neighbours cross-image``) the exact ones are of other groups too."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = x[q]
    if groups is None:
        ex, _ = exact_search(x, queries, k, query_ids=q)
    else:
        groups = np.asarray(groups)
        extra = int(np.bincount(groups).max())
        ex, es = exact_search(x, queries, k + extra, query_ids=q)
        bad = (ex < 0) | (groups[np.where(ex < 0, 0, ex)] == groups[q][:, None])
        ex, _ = _first_good(ex, es, bad, k)
    hits = [np.intersect1d(ex[i][ex[i] >= 0], idx[j][idx[j] >= 0]).size for i, j in enumerate(q)]
    total = int((ex >= 0).sum())
    return float(sum(hits) / max(total, 1))
