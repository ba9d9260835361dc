"""Recall@3 of build-graph's IVF search against its probes and PCA width, at full scale, on sampled queries.

    python tools/bench_nprobe.py STORE [--pca-dim 256] [--nlist 8192] [--nprobes 12,24,48,96] [--recall-sample 500]

A whole build-graph at COCO scale takes ~50 minutes here, so trying other search settings that way costs an hour
each. This builds the index once, as `liid build-graph --knn ivf` does out of core (centred unit rows, PCA
fitted on a seeded sample, the IVF trained on 40 rows per list and filled chunk by chunk), then searches only
the sampled queries (the ones build-graph's recall uses: same seed) at each ``--nprobes`` value, drops each
query's own-image candidates, re-ranks by exact cosine in the full dimension and scores recall@3 against exact
cross-image search (computed once). The search seconds are those of ``--time-sample`` other random queries
(FAISS's plain search); the whole search's time is projected from them (labelled so), never measured here.
One JSON line per setting, then a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from liid.graph.feature_store import read_feature_store
from liid.graph.knn import (
    UnitRows,
    _first_good,
    exact_search,
    feature_mean,
    pca_fit,
)
from liid.memory import overall_peak_gb, track_phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("--pca-dim", type=int, default=256)
    ap.add_argument("--nlist", type=int, default=8192)
    ap.add_argument("--nprobes", default="12,24,48,96", help="comma-separated probe counts to score")
    ap.add_argument("--recall-sample", type=int, default=500)
    ap.add_argument("--time-sample", type=int, default=20000, help="queries timed per setting (projection base)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    nprobes = [int(v) for v in a.nprobes.split(",") if v]
    track_phases()

    t0 = time.perf_counter()
    store = read_feature_store(a.store)
    groups = np.asarray(store.proposal_image)
    n, k = store.num_proposals, a.k
    extra = int(np.bincount(groups).max())
    cand = max(16, k + extra + 1)  # the candidates build-graph asks for cross-image neighbours
    x = UnitRows(store.features, centre=feature_mean(store.features))
    y = x.projected(*pca_fit(x, a.pca_dim, seed=a.seed)) if 0 < a.pca_dim < x.shape[1] else x
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(y.shape[1]), y.shape[1], a.nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = a.seed
    rng = np.random.default_rng(a.seed)
    index.train(y[np.sort(rng.choice(n, size=min(n, 40 * a.nlist), replace=False))])
    for s in range(0, n, y.chunk):
        index.add(y[s:s + y.chunk])
    t_index = time.perf_counter() - t0
    print(f"{a.store}: {n:,} x {x.shape[1]} -> PCA {a.pca_dim}, IVF {a.nlist} lists, {cand} candidates; "
          f"index built in {t_index:.0f} s", flush=True)

    # the queries of knn.recall_at_k (same seed), their exact cross-image neighbours, once
    q = np.sort(np.random.default_rng(a.seed).choice(n, size=min(a.recall_sample, n), replace=False))
    t1 = time.perf_counter()
    ex, es = exact_search(x, x[q], k + extra, query_ids=q)
    ex, _ = _first_good(ex, es, (ex < 0) | (groups[np.where(ex < 0, 0, ex)] == groups[q][:, None]), k)
    print(f"exact cross-image neighbours of {q.size} queries: {time.perf_counter() - t1:.0f} s", flush=True)

    rows = []
    yq = y[q]
    yt = y[np.sort(np.random.default_rng(a.seed + 1).choice(n, size=min(a.time_sample, n), replace=False))]
    for nprobe in nprobes:
        index.nprobe = nprobe
        t2 = time.perf_counter()
        index.search(yt, cand)
        t_search = time.perf_counter() - t2
        _, c = index.search(yq, cand)
        c[(c >= 0) & (groups[np.where(c < 0, 0, c)] == groups[q][:, None])] = -1  # the query's own image
        # exact cosines in the full dimension: the queries' rows and their candidates' (a small gather)
        cos = np.matmul(x[np.where(c < 0, 0, c)], x[q][:, :, None])[:, :, 0]
        cos[c < 0] = -np.inf
        idx = _top(c, cos, k)
        hits = sum(np.intersect1d(ex[i][ex[i] >= 0], idx[i][idx[i] >= 0]).size for i in range(q.size))
        recall = hits / max(int((ex >= 0).sum()), 1)
        row = {"pca_dim": a.pca_dim, "nlist": a.nlist, "nprobe": nprobe, "queries": int(q.size),
               "recall_at_3": round(recall, 4), "timed_queries": int(yt.shape[0]),
               "search_seconds": round(t_search, 2), "projected_search_seconds_all": round(t_search * n / yt.shape[0]),
               "peak_rss_gb": round(overall_peak_gb(), 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("| PCA | nlist | nprobe | recall@3 | search s, timed queries | all queries s (projection) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['pca_dim']} | {r['nlist']} | {r['nprobe']} | {r['recall_at_3']} | "
              f"{r['search_seconds']} | {r['projected_search_seconds_all']} |")
    return 0


def _top(c: np.ndarray, cos: np.ndarray, k: int) -> np.ndarray:
    """Per row, the ``k`` candidates of highest cosine (-1 where fewer are left)."""
    order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(c, order, axis=1)
    idx[~np.isfinite(np.take_along_axis(cos, order, axis=1))] = -1
    return idx


if __name__ == "__main__":
    sys.exit(main())
