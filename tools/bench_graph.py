"""Benchmark of the graph engine at VOC scale: build-graph and solve-cut on a generated feature store.

    python tools/bench_graph.py [--images 10000] [--store DIR] [--workers 2] [--textbook-sample 30]
    python tools/bench_graph.py --preset coco --dim 2048 --store DIR [--pca-dim 256 --nlist 8192 --nprobe 48]

The COCO preset (5e6 proposals = 125,000 images x 40, 80 classes, 2.95 labels per image) generates its store
on disk once (float16, memory-mapped; tools/make_feature_store.py --preset coco) and runs what `liid build-graph`
runs with its defaults (centred cosine, neighbours from other images, delta 0.5), out of core, then the cut:
build and solve seconds, recall@3 on sampled queries against exact search, peak RSS, components,
certification. Its last line is one JSON object too.

Generates (or reuses, with --store) a feature store of images x 20 proposals, 2048-d clustered features,
21 classes, ~1.5 labels per image (liid.synthetic_features), in a separate process so its memory is
not counted. Then, in this process: kNN graph (the default method for this size) with recall@3 measured
on sampled queries against exact search; the multiway cut of every component; k = 2 and the
same-label-pairs rule from the same neighbour lists; the cut without persistency and column generation
(``--no-persistency --no-columns``, the solver before them); and the textbook formulation (all 21 labels for
every node, one HiGHS LP per component) on a sample of components. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from liid.graph import highs_backend
from liid.graph.build import GraphConfig, graph_from_neighbours
from liid.graph.ckr import ckr_lp, textbook_ckr_lp
from liid.graph.feature_store import read_feature_store
from liid.graph.knn import KnnConfig, knn, normalized, recall_at_k
from liid.graph.solve import SolveConfig, solve_graph
from liid.memory import overall_peak_gb, track_phases

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_gb() -> float:
    return overall_peak_gb()


def textbook_comparison(g, records, sample: int, seed: int = 0) -> dict:
    """Time of one all-labels LP per component vs the structured LP (same components)."""
    rng = np.random.default_rng(seed)
    lp_comps = [r.id for r in records if r.nodes > 1]
    pick = rng.choice(lp_comps, size=min(sample, len(lp_comps)), replace=False)
    largest = max(records, key=lambda r: r.nodes).id
    pick = sorted(set(pick.tolist()) | {largest})
    t_text = t_struct = 0.0
    nodes = cols_text = cols_struct = 0
    frac_text = 0
    for cid in pick:
        sel = np.nonzero(g.component == cid)[0]
        remap = np.full(g.num_nodes, -1)
        remap[sel] = np.arange(sel.size)
        em = remap[g.edges[:, 0]] >= 0
        e = remap[g.edges[em]]
        w = g.weights[em]
        t0 = time.perf_counter()
        lp = textbook_ckr_lp(g.terminal[sel], e, w)
        res = highs_backend.solve(lp)
        t_text += time.perf_counter() - t0
        frac_text += int(not lp.is_integral(res.x).all())
        t0 = time.perf_counter()
        lp2 = ckr_lp(g.terminal[sel], g.allowed[sel], e, w)
        highs_backend.solve(lp2)
        t_struct += time.perf_counter() - t0
        nodes += sel.size
        cols_text += lp.A.shape[1]
        cols_struct += lp2.A.shape[1]
    return {"components": len(pick), "nodes": int(nodes), "textbook_seconds": round(t_text, 3),
            "structured_seconds": round(t_struct, 3), "speedup": round(t_text / max(t_struct, 1e-9), 2),
            "textbook_variables": int(cols_text), "structured_variables": int(cols_struct),
            "textbook_fractional_components": frac_text}


def solve_timed(g, workers: int) -> tuple[np.ndarray, list, dict, float, float]:
    """The cut with ``workers`` processes (serial for 1): labels, records, summary, seconds, certified %."""
    t0 = time.perf_counter()
    labels, records, summary = solve_graph(g, SolveConfig(), backend="process" if workers > 1 else "serial",
                                           workers=workers, progress=False)
    cert = 100.0 * summary["certified_optimal_components"] / summary["components"]
    return labels, records, summary, time.perf_counter() - t0, cert


def accuracies(store, labels: np.ndarray, truth: np.ndarray | None) -> dict:
    """The cut's and the masked MIL argmax's share of proposals with the generator's true class."""
    if truth is None:
        return {"label_accuracy": None, "masked_argmax_accuracy": None}
    argmax = np.where(store.allowed_labels(), store.probs, -1).argmax(1)
    return {"label_accuracy": round(float((labels == truth).mean()), 4),
            "masked_argmax_accuracy": round(float((argmax == truth).mean()), 4)}


def coco_main(a: argparse.Namespace) -> int:
    """The COCO-scale preset: the store on disk, build-graph out of core with the CLI's defaults, the cut."""
    from liid.graph.build import build_graph  # noqa: PLC0415

    if a.store is None:
        raise SystemExit("--preset coco needs --store DIR (about 20 GB at --dim 2048; generated once, then reused)")
    if not a.store.exists():
        t0 = time.perf_counter()
        cmd = [sys.executable, str(ROOT / "tools/make_feature_store.py"), str(a.store), "--preset", "coco",
               "--dim", str(a.dim), "--seed", str(a.seed)] + (["--images", str(a.images)] if a.images else [])
        subprocess.run(cmd, check=True)
        print(f"generated store in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    store = read_feature_store(a.store)
    read_seconds = time.perf_counter() - t0
    n, d = store.features.shape
    print(f"{a.store}: {n:,} proposals x {d}, {len(store.images):,} images, {len(store.classes) - 1} classes "
          f"(read and validated in {read_seconds:.1f} s)", flush=True)
    cfg = GraphConfig(knn=KnnConfig(k=3, method="ivf", nlist=a.nlist, nprobe=a.nprobe, pca_dim=a.pca_dim,
                                    candidates=a.candidates, rerank=a.rerank, seed=a.seed),
                      delta=0.5, neighbours="cross-image", centre=True)
    t0 = time.perf_counter()
    g, stats = build_graph(store, cfg, recall_sample=a.recall_sample, in_memory_gb=a.in_memory_gb)
    build_seconds = time.perf_counter() - t0
    knn_info = stats["knn"]
    build_rss = peak_rss_gb()
    print(f"build-graph: {build_seconds:.1f} s (kNN {knn_info['seconds']:.1f} s, recall@3 "
          f"{knn_info.get('recall_at_k', float('nan')):.4f} in {knn_info.get('recall_seconds', 0):.1f} s), "
          f"{stats['edges']:,} edges, {stats['components']:,} components, peak RSS {build_rss:.2f} GB; by phase: "
          + ", ".join(f"{k} {v:.2f} GB" for k, v in knn_info.get("peak_rss_gb", {}).items() if v is not None),
          flush=True)
    labels, records, summary, solve_seconds, cert = solve_timed(g, a.workers)
    print(f"solve-cut: {solve_seconds:.1f} s, {summary['components']:,} components, {cert:.2f}% certified, "
          f"methods {summary['methods']}", flush=True)
    truth = np.load(a.store / "truth.npy") if (a.store / "truth.npy").exists() else None
    sizes = np.bincount(g.component)
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(), "preset": "coco", "nodes": n, "dim": d,
        "classes": len(store.classes) - 1, "images": len(store.images),
        "labels_per_image": round(float(np.asarray(store.image_labels)[:, 1:].sum(1).mean()), 3),
        "read_seconds": round(read_seconds, 1), "build_seconds": round(build_seconds, 1),
        "knn_seconds": round(knn_info["seconds"], 1), "knn": knn_info,
        "recall_at_3": knn_info.get("recall_at_k"), "recall_sample": a.recall_sample,
        "build_peak_rss_gb": round(build_rss, 2), "edges": stats["edges"], "components": int(sizes.size),
        "largest_component": int(sizes.max()), "solve_seconds": round(solve_seconds, 1), "workers": a.workers,
        "certified_optimal_pct": round(cert, 3), "uncertified": len(summary["uncertified_components"]),
        "methods": summary["methods"], "peak_rss_gb": round(peak_rss_gb(), 2), **accuracies(store, labels, truth),
    }
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    track_phases()  # build-graph's record then holds each phase's own peak RSS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=["voc", "coco"], default="voc")
    ap.add_argument("--dim", type=int, default=2048, help="coco: feature width (2048 ResNet50, 320 EfficientNet-Lite0)")
    ap.add_argument("--nlist", type=int, default=0, help="coco: IVF lists (0: the default rule)")
    ap.add_argument("--pca-dim", type=int, default=384, help="coco: PCA dimension searched")
    ap.add_argument("--candidates", type=int, default=16, help="coco: candidates per query")
    ap.add_argument("--rerank", choices=["full", "pca"], default="full", help="coco: re-rank in the full dimension")
    ap.add_argument("--in-memory-gb", type=float, default=4.0, help="coco: build-graph --in-memory-gb")
    ap.add_argument("--images", type=int, default=None, help="default: 10,000 (voc), 125,000 (coco)")
    ap.add_argument("--store", type=Path, default=None, help="reuse or create the store here")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--knn", default="auto")
    ap.add_argument("--nprobe", type=int, default=0)
    ap.add_argument("--recall-sample", type=int, default=2000)
    ap.add_argument("--textbook-sample", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.preset == "coco":
        return coco_main(a)
    a.images = a.images or 10_000

    tmp = None
    store_dir = a.store
    if store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="liid-bench-")
        store_dir = Path(tmp.name) / "store"
    if not store_dir.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "tools/make_feature_store.py"), str(store_dir),
                        "--images", str(a.images), "--seed", str(a.seed)], check=True)
        print(f"generated store in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = time.perf_counter()
    store = read_feature_store(store_dir)
    truth = np.load(store_dir / "truth.npy") if (store_dir / "truth.npy").exists() else None
    cfg = GraphConfig(knn=KnnConfig(k=3, method=a.knn, nprobe=a.nprobe, seed=a.seed))
    x = normalized(store.features)
    t_knn = time.perf_counter()
    idx, sim, info = knn(x, cfg.knn)
    knn_seconds = time.perf_counter() - t_knn
    g, stats = graph_from_neighbours(store, idx, sim, cfg)
    build_seconds = time.perf_counter() - t0
    print(f"build-graph: {build_seconds:.1f} s (kNN {knn_seconds:.1f} s, {info}), peak RSS "
          f"{peak_rss_gb():.2f} GB", flush=True)
    t_r = time.perf_counter()
    recall = recall_at_k(x, idx, a.recall_sample, 3, seed=a.seed)
    print(f"recall@3 {recall:.4f} on {a.recall_sample} queries ({time.perf_counter() - t_r:.1f} s)", flush=True)
    del x

    labels, records, summary, solve_seconds, cert = solve_timed(g, a.workers)
    print(f"solve-cut: {solve_seconds:.1f} s, {summary['components']} components, {cert:.1f}% certified, "
          f"methods {summary['methods']}", flush=True)
    t0 = time.perf_counter()
    labels_serial, _, summary_serial = solve_graph(g, SolveConfig(), backend="serial", progress=False)
    solve_serial_seconds = time.perf_counter() - t0
    assert np.array_equal(labels, labels_serial), "parallel and serial cuts differ"
    t0 = time.perf_counter()  # the solver before persistency and column generation, same graph, same workers
    _, _, summary_plain = solve_graph(g, SolveConfig(persistency=False, columns=False),
                                      backend="process" if a.workers > 1 else "serial", workers=a.workers,
                                      progress=False)
    solve_plain_seconds = time.perf_counter() - t0
    assert abs(summary_plain["objective"] - summary["objective"]) <= 1e-6 * max(1.0, abs(summary["objective"])), \
        "the cut with and without the reductions differ"
    print(f"solve-cut without persistency and column generation: {solve_plain_seconds:.1f} s, "
          f"methods {summary_plain['methods']}", flush=True)

    sizes = np.bincount(g.component)
    variants = {}
    for name, vcfg in (("k2", replace(cfg, knn=replace(cfg.knn, k=2))),
                       ("same_label_pairs", replace(cfg, same_label_pairs=True))):
        vg, vst = graph_from_neighbours(store, idx, sim, vcfg)
        vl, _, vs = solve_graph(vg, SolveConfig(), backend="process" if a.workers > 1 else "serial",
                                workers=a.workers, progress=False)
        variants[name] = {"edges": vst["edges"], "components": vst["components"],
                          "largest_component": vst["largest_component"],
                          "solve_seconds": round(vs["seconds"], 2),
                          "certified_optimal_pct": round(100.0 * vs["certified_optimal_components"]
                                                         / vs["components"], 2)}
        if truth is not None:
            variants[name]["label_accuracy"] = round(float((vl == truth).mean()), 4)
        print(f"variant {name}: {variants[name]}", flush=True)
    textbook = textbook_comparison(g, records, a.textbook_sample, seed=a.seed)
    print(f"textbook formulation on {textbook['components']} components: {textbook}", flush=True)

    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(), "nodes": g.num_nodes, "edges": int(len(g.edges)),
        "knn": info, "knn_seconds": round(knn_seconds, 2), "build_seconds": round(build_seconds, 2),
        "solve_seconds": round(solve_seconds, 2), "solve_serial_seconds": round(solve_serial_seconds, 2),
        "solve_plain_seconds": round(solve_plain_seconds, 2),
        "workers": a.workers, "peak_rss_gb": round(peak_rss_gb(), 3),
        "recall_at_3": round(recall, 4), "components": int(sizes.size), "largest_component": int(sizes.max()),
        "components_over_1000": int((sizes > 1000).sum()),
        "nodes_in_components_over_1000_pct": round(100.0 * sizes[sizes > 1000].sum() / g.num_nodes, 1),
        "certified_optimal_pct": round(cert, 2), "objective": summary["objective"],
        "lower_bound": summary["lower_bound"], "methods": summary["methods"], **accuracies(store, labels, truth),
        "variants": variants, "textbook": textbook,
    }
    print(json.dumps(result))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
