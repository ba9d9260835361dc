"""The core experiment of BENCHMARKS.md: MIL argmax, LIID (graph + cut) variants and the oracle, from one feature
store, with the diagnostics that say why the graph helps or not.

    python tools/bench_liid.py DATASET --proposals P --features STORE [--out results.json] [--variants paper|full]
                               [--split S | --images DIR]

DATASET, P and STORE as for ``liid label`` / ``liid build-graph`` (the feature store of ``liid extract`` over the
proposal store P). Every labeling is exported exactly as ``liid export`` does (drop background, NMS 0.4) and scored
by ``liid evaluate``'s COCOeval (segm AP, AP50, AP75, ABO). Per graph variant it also reports:

- ``changed``: proposals whose label differs from MIL argmax, ``right`` of them now equal to the oracle label
  (the class of the GT instance the proposal overlaps with IoU > 0.5, else background), ``wrong`` of them that
  argmax had right;
- ``purity_fg``: share of a foreground proposal's graph neighbours with its oracle label; ``same_image``: share of
  edges inside one image; ``largest``: the largest connected component; ``cos``: median edge cosine.

Runs in-process (no command start-up per variant); the kNN of each (centre, neighbours, k) is computed once.
The last stdout line is one JSON object; ``--out`` holds everything.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from liid.datasets import open_dataset
from liid.detection.evaluate import evaluate_instances
from liid.detection.export import export_pseudo_labels
from liid.graph.build import GraphConfig, graph_from_neighbours
from liid.graph.feature_store import read_feature_store
from liid.graph.knn import KnnConfig, feature_mean, knn, normalized
from liid.graph.solve import SolveConfig, solve_graph
from liid.labelers import mil_argmax_labels
from liid.proposals.store import read_image_proposals, read_proposal_index

# the paper's graph (Table 6's deltas, k 3 and 2, the reference-code pair rule, eq. 10 as written) and ours
PAPER = {"delta": 5.0, "k": 3, "neighbours": "all", "centre": False, "same_label_pairs": False, "labels": "image",
         "mutual": False}


def variant_grid(which: str) -> list[dict]:
    """The graph variants of the experiment: ``paper`` (the issue's grid around the paper's graph) or ``full``
    (that grid for the paper's neighbours and for centred cross-image neighbours)."""
    grid = [{**PAPER, "delta": d} for d in (1.0, 2.0, 3.0, 5.0, 10.0)]
    grid += [{**PAPER, "k": 2}, {**PAPER, "same_label_pairs": True}, {**PAPER, "labels": "all"}]
    if which == "full":
        ours = {**PAPER, "neighbours": "cross-image", "centre": True}
        grid += [{**ours, "delta": d} for d in (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)]
        grid += [{**ours, "delta": 2.0, "k": 2}, {**ours, "delta": 2.0, "same_label_pairs": True},
                 {**ours, "delta": 2.0, "labels": "all"}, {**PAPER, "delta": 2.0, "neighbours": "cross-image"},
                 {**PAPER, "delta": 2.0, "centre": True}]
    return grid


def oracle_labels(dataset, store, proposals: Path) -> np.ndarray:
    """Per feature-store row: the class of the GT instance its mask overlaps with IoU > 0.5, else 0 (Table 7)."""
    index = {e["id"]: e for e in read_proposal_index(proposals)}
    img, pidx = np.asarray(store.proposal_image), np.asarray(store.proposal_index)
    out = np.zeros(store.num_proposals, dtype=np.int64)
    for i, iid in enumerate(store.images):
        rows = np.flatnonzero(img == i)
        inst = dataset.instances(iid)
        keep = ~inst.iscrowd
        if not len(rows) or not keep.any():
            continue
        props = read_image_proposals(proposals, index[iid])
        dt = [{"size": props.rles[j]["size"], "counts": props.rles[j]["counts"].encode()} for j in pidx[rows]]
        gt = mask_util.encode(np.asfortranarray(inst.masks[keep].transpose(1, 2, 0).astype(np.uint8)))
        iou = np.asarray(mask_util.iou(dt, gt, [0] * len(gt))).reshape(len(dt), len(gt))
        out[rows] = np.where(iou.max(1) > 0.5, inst.classes[keep][iou.argmax(1)], 0)
    return out


def score(dataset, store, proposals: Path, labels: np.ndarray) -> dict:
    """``liid export`` then ``liid evaluate`` of one labeling, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        summary = export_pseudo_labels(labels, store, proposals, Path(tmp) / "x", progress=False)
        if not summary["instances"]:
            return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0, "abo": 0.0, "instances": 0}
        r = evaluate_instances(dataset, Path(tmp) / "x" / "instances.json", progress=False)
    return {k: float(r[k]) for k in ("ap", "ap50", "ap75", "abo")} | {"instances": int(summary["instances"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--proposals", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--split", default=None)
    ap.add_argument("--images", default=None)
    ap.add_argument("--variants", choices=("paper", "full"), default="full")
    ap.add_argument("--variant", action="append", default=None, metavar="JSON",
                    help='instead of the grid: one variant, keys of the paper\'s graph overridden, e.g. '
                         '\'{"delta": 1, "neighbours": "cross-image", "centre": true}\' (repeatable)')
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    ds = open_dataset(a.dataset, split=a.split, images=a.images)
    fs = read_feature_store(a.features)
    oracle = oracle_labels(ds, fs, a.proposals)
    argmax = mil_argmax_labels(fs).astype(np.int64)
    rows = {"mil_argmax": score(ds, fs, a.proposals, argmax), "oracle": score(ds, fs, a.proposals, oracle)}
    rows["mil_argmax"]["accuracy"] = float((argmax == oracle).mean())
    print(f"{'labeling':<58} {'AP':>6} {'AP50':>6} {'AP75':>6} {'ABO':>6}  diagnostics", flush=True)
    for name in ("mil_argmax", "oracle"):
        r = rows[name]
        print(f"{name:<58} {r['ap']:6.3f} {r['ap50']:6.3f} {r['ap75']:6.3f} {r['abo']:6.3f}", flush=True)
    mean = feature_mean(fs.features)
    img = np.asarray(fs.proposal_image)
    cache: dict = {}
    variants = []
    grid = [{**PAPER, **json.loads(v)} for v in a.variant] if a.variant else variant_grid(a.variants)
    for v in grid:
        key = (v["centre"], v["neighbours"], v["k"])
        if key not in cache:
            x = normalized(fs.features, centre=mean if v["centre"] else None)
            cache[key] = knn(x, KnnConfig(k=v["k"]), groups=img if v["neighbours"] == "cross-image" else None)[:2]
        idx, sim = cache[key]
        cfg = GraphConfig(knn=KnnConfig(k=v["k"]), delta=v["delta"], same_label_pairs=v["same_label_pairs"],
                          neighbours=v["neighbours"], centre=v["centre"], labels=v["labels"], mutual=v["mutual"])
        g, stats = graph_from_neighbours(fs, idx, sim, cfg)
        with contextlib.redirect_stderr(io.StringIO()):
            labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
        labels = np.asarray(labels, dtype=np.int64)
        exported = np.where(fs.allowed_labels()[np.arange(len(labels)), labels], labels, 0)  # as export does
        valid = idx >= 0
        same = oracle[np.where(valid, idx, 0)] == oracle[:, None]
        fg = valid & (oracle > 0)[:, None]
        changed = exported != argmax
        r = score(ds, fs, a.proposals, labels)
        r.update(accuracy=float((exported == oracle).mean()), changed=int(changed.sum()),
                 right=int((changed & (exported == oracle)).sum()), wrong=int((changed & (argmax == oracle)).sum()),
                 purity_fg=float(same[fg].mean()) if fg.any() else None, same_image=stats["same_image_edges"],
                 largest=stats["largest_component"], components=stats["components"],
                 cos=stats["edge_cosine_median"],
                 certified=int(summary["certified_optimal_components"]), solve_seconds=float(summary["seconds"]))
        name = (f"d{v['delta']:g} k{v['k']} {v['neighbours']}{' centred' if v['centre'] else ''}"
                f"{' same-label-pairs' if v['same_label_pairs'] else ''}{' mutual' if v['mutual'] else ''} "
                f"labels={v['labels']}")
        variants.append({"variant": v, "name": name, **r})
        print(f"{name:<58} {r['ap']:6.3f} {r['ap50']:6.3f} {r['ap75']:6.3f} {r['abo']:6.3f}  "
              f"changed {r['changed']} (right {r['right']}, wrong {r['wrong']}) purity_fg {r['purity_fg']:.3f} "
              f"same-image {r['same_image']:.2f} largest {r['largest']} cos {r['cos']:.3f}", flush=True)
    best = max(variants, key=lambda r: r["ap50"])
    result = {"dataset": a.dataset, "proposals": str(a.proposals), "features": str(a.features),
              "proposals_per_image": fs.num_proposals / max(len(fs.images), 1), **rows, "variants": variants,
              "best": best["name"], "seconds": time.perf_counter() - t0}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"mil_argmax_ap50": rows["mil_argmax"]["ap50"], "oracle_ap50": rows["oracle"]["ap50"],
                      "best": best["name"], "best_ap50": best["ap50"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
