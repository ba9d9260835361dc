"""What FAISS offers for the graph's kNN, measured on one store: time and recall@3 of each search.

    python tools/bench_knn.py STORE [--limit 1000000] [--pca-dim 128] [--nlist 4096] [--nprobe 32]

Each method gets the same unit rows (centred, as `liid build-graph` makes them), projected on the same PCA
axes, and returns ``--candidates`` per query (cross-image neighbours need k + the largest image's proposals),
re-ranked by exact cosine in the full dimension; recall@3 is against exact cross-image search on sampled
queries. Methods: IVF-Flat with FAISS's big-batch search (what build-graph does), IVF-Flat with its plain
search, IVF-PQ (codes of --pq-m bytes) with the same re-rank, HNSW (--hnsw-m, efSearch --hnsw-ef), and the
IVF sharded over 2 local processes (graph/shards.py). One JSON line per method, then a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from liid.graph.feature_store import read_feature_store
from liid.graph.knn import UnitRows, _rerank, drop_same_group, feature_mean, pca_fit, recall_at_k
from liid.graph.shards import sharded_search
from liid.parallel import Backend


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="first N proposals only (whole images)")
    ap.add_argument("--pca-dim", type=int, default=128)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--pq-m", type=int, default=32)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-ef", type=int, default=128)
    ap.add_argument("--recall-sample", type=int, default=500)
    ap.add_argument("--methods", default="ivf-bigbatch,ivf-search,ivfpq,hnsw,ivf-sharded")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    store = read_feature_store(a.store)
    n = a.limit or store.num_proposals
    groups = np.asarray(store.proposal_image[:n])
    features = store.features[:n]
    x = np.asarray(UnitRows(features, centre=feature_mean(features)))
    mu, proj = pca_fit(x, a.pca_dim, seed=a.seed)
    y = (x - mu) @ proj
    faiss.normalize_L2(y)
    k = 3
    cand = k + int(np.bincount(groups).max()) + 1
    rng = np.random.default_rng(a.seed)
    train = y[np.sort(rng.choice(n, size=min(n, 40 * a.nlist), replace=False))]
    print(f"{a.store}: {n:,} proposals x {x.shape[1]} -> PCA {a.pca_dim}, {cand} candidates per query", flush=True)

    def ivf_flat() -> faiss.Index:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(a.pca_dim), a.pca_dim, a.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = a.seed
        index.train(train)
        return index

    def bigbatch():
        from faiss.contrib.big_batch_search import big_batch_search

        index = ivf_flat()
        index.add(y)
        index.nprobe = a.nprobe
        with contextlib.redirect_stdout(io.StringIO()):
            return big_batch_search(index, y, cand, method="knn_function", verbose=0, threaded=1)[1]

    def plain():
        index = ivf_flat()
        index.add(y)
        index.nprobe = a.nprobe
        return index.search(y, cand)[1]

    def ivfpq():
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(a.pca_dim), a.pca_dim, a.nlist, a.pq_m, 8,
                                 faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = a.seed
        index.train(train)
        index.add(y)
        index.nprobe = a.nprobe
        return index.search(y, cand)[1]

    def hnsw():
        index = faiss.IndexHNSWFlat(a.pca_dim, a.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(a.hnsw_ef, cand)
        index.add(y)
        return index.search(y, cand)[1]

    def sharded():
        import tempfile

        with tempfile.TemporaryDirectory(prefix="liid-bench-knn-") as tmp:
            return sharded_search(y, cand, 2, tmp, lambda fn, tasks: Backend("process", 2, progress=False).map(
                fn, tasks), method="ivf", trained=ivf_flat(), nprobe=a.nprobe)[0]

    methods = {"ivf-bigbatch": bigbatch, "ivf-search": plain, "ivfpq": ivfpq, "hnsw": hnsw, "ivf-sharded": sharded}
    rows = []
    for name in a.methods.split(","):
        t0 = time.perf_counter()
        c = methods[name]()
        t_search = time.perf_counter() - t0
        t1 = time.perf_counter()
        idx, sim = _rerank(x, c, cand - 1)
        idx, sim = drop_same_group(idx, sim, groups, k)
        t_rerank = time.perf_counter() - t1
        rec = recall_at_k(x, idx, a.recall_sample, k, seed=a.seed, groups=groups)
        row = {"method": name, "proposals": n, "pca_dim": a.pca_dim, "nlist": a.nlist, "nprobe": a.nprobe,
               "search_seconds": round(t_search, 1), "rerank_seconds": round(t_rerank, 1),
               "recall_at_3": round(rec, 4), "peak_rss_gb": round(rss_gb(), 2)}
        if name == "ivfpq":
            row["pq_m"] = a.pq_m
        if name == "hnsw":
            row.update(hnsw_m=a.hnsw_m, hnsw_ef=max(a.hnsw_ef, cand))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("| method | search s | re-rank s | recall@3 |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['search_seconds']} | {r['rerank_seconds']} | {r['recall_at_3']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
