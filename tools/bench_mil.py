"""The MIL experiment of BENCHMARKS.md: MIL argmax against build-graph + solve-cut, on the synthetic set.

    python tools/bench_mil.py [--out bench_mil_out] [--images 200] [--top 20] [--delta 5 1 0.5 0.2]

Runs the commands a user types (make-synthetic → proposals → filter-proposals --top N → train-cls →
train-mil → extract → label --method mil-argmax → build-graph → solve-cut → export → evaluate), small
models trained from scratch (resnet18), then measures why the graph helps or not:

- per proposal, its oracle label (class of the ground-truth instance it overlaps with IoU > 0.5, else
  background) — the ceiling the proposals allow;
- precision/recall of the foreground labels given by MIL argmax and by the cut;
- the kNN graph's neighbourhoods: the fraction of a proposal's k nearest neighbours with the same oracle
  label, and with the same image; the cosine of those neighbours;
- the size of the largest connected component.

Everything lands in OUT/results.json; the last stdout line is a JSON summary. Stages whose output is
already there are skipped (the commands' own rules), so a rerun with other --delta values is quick.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_liid import oracle_labels  # tools/ is the script's folder (sys.path[0])

from liid.datasets import open_dataset
from liid.graph.feature_store import read_feature_store


def liid() -> list[str]:
    script = Path(sys.executable).parent / "liid"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "liid.cli"]


def run(args: list[str], log: Path) -> str:
    """Run a command, tee its stdout to ``log``, stop the benchmark if it fails; return stdout."""
    print(f"$ {shlex.join(args)}", flush=True)
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {shlex.join(args)}\n{p.stdout}{p.stderr}\n({time.perf_counter() - t0:.1f} s)\n")
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {shlex.join(args)}\n{p.stderr[-2000:]}")
    return p.stdout


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def label_quality(pred: np.ndarray, oracle: np.ndarray) -> dict:
    fg_pred, fg_true = pred > 0, oracle > 0
    hit = (pred == oracle) & fg_true
    return {"accuracy": float((pred == oracle).mean()),
            "fg_precision": float(hit.sum() / max(fg_pred.sum(), 1)),
            "fg_recall": float(hit.sum() / max(fg_true.sum(), 1)),
            "fg_fraction": float(fg_pred.mean())}


def neighbourhoods(store, oracle: np.ndarray, k: int = 3) -> dict:
    """Exact cosine kNN (the graph's neighbours) and how pure they are."""
    f = np.asarray(store.features, dtype=np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    img = np.asarray(store.proposal_image)
    same_label, same_image, cos = [], [], []
    for s in range(0, len(f), 2048):
        sim = f[s:s + 2048] @ f.T
        sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        nn = np.argpartition(-sim, k, axis=1)[:, :k]
        rows = np.arange(s, s + len(sim))[:, None]
        same_label.append(oracle[nn] == oracle[rows])
        same_image.append(img[nn] == img[rows])
        cos.append(np.take_along_axis(sim, nn, axis=1))
    same_label, same_image, cos = (np.concatenate(a) for a in (same_label, same_image, cos))
    fg = oracle > 0
    return {"knn_same_oracle_label": float(same_label.mean()),
            "knn_same_oracle_label_fg": float(same_label[fg].mean()) if fg.any() else None,
            "knn_same_image": float(same_image.mean()),
            "knn_cosine_median": float(np.median(cos)),
            "zero_features": int((np.linalg.norm(np.asarray(store.features, np.float32), axis=1) == 0).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_mil_out"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--top", type=int, default=20, help="proposals per image")
    ap.add_argument("--cls-epochs", type=int, default=10)
    ap.add_argument("--cls-size", type=int, default=160)
    ap.add_argument("--mil-epochs", type=int, default=6)
    ap.add_argument("--mil-size", type=int, default=256)
    ap.add_argument("--mil-lr", type=float, default=5e-4)
    ap.add_argument("--mil-args", default="", help="extra train-mil arguments, e.g. '--alpha 0'")
    ap.add_argument("--mil-name", default="mil", help="folder name of this MIL run (compare settings)")
    ap.add_argument("--delta", type=float, nargs="+", default=[5.0, 1.0, 0.5, 0.2])
    ap.add_argument("--graph-args", default="", help="extra build-graph arguments, e.g. '--same-label-pairs'")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbone", default="resnet18", help="backbone of train-cls and train-mil")
    ap.add_argument("--pretrained", action="store_true",
                    help="start train-cls and train-mil from the backbone's ImageNet weights (else from scratch; "
                         "MIL then starts from the classifier)")
    ap.add_argument("--cls-name", default="cls", help="folder name of the classifier run")
    a = ap.parse_args(argv)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    t0 = time.perf_counter()
    data, props, top = out / "synthetic", out / "proposals", out / f"proposals_top{a.top}"
    cls, mil = out / a.cls_name, out / a.mil_name
    store = out / f"{a.mil_name}_store"
    L = liid()
    run([*L, "make-synthetic", "--out", str(data), "--images", str(a.images), "--seed", "0"], log)
    if not (props / "index.json").exists():
        run([*L, "proposals", str(data), "--out", str(props), "--workers", str(a.workers)], log)
    if not (top / "index.json").exists():
        run([*L, "filter-proposals", str(props), "--out", str(top), "--top", str(a.top)], log)
    seconds = {}
    t = time.perf_counter()
    init = [] if a.pretrained else ["--from-scratch"]
    run([*L, "train-cls", str(data), "--out", str(cls), "--backbone", a.backbone, *init, "--size",
         str(a.cls_size), "--epochs", str(a.cls_epochs), "--resume"], log)
    seconds["train_cls"] = time.perf_counter() - t
    t = time.perf_counter()
    mil_init = [] if a.pretrained else ["--weights", str(cls / "checkpoint.pt")]
    run([*L, "train-mil", str(data), "--proposals", str(top), "--cams", str(cls), "--out", str(mil), "--backbone",
         a.backbone, *mil_init, "--size", str(a.mil_size), "--epochs",
         str(a.mil_epochs), "--lr", str(a.mil_lr), *shlex.split(a.mil_args), "--resume"], log)
    seconds["train_mil"] = time.perf_counter() - t
    run([*L, "extract", str(data), "--proposals", str(top), "--mil", str(mil), "--out", str(store)], log)
    argmax_dir = out / f"{a.mil_name}_argmax"
    run([*L, "label", "--method", "mil-argmax", "--features", str(store), "--proposals", str(top), "--out",
         str(argmax_dir), "--overwrite"], log)
    ev = last_json(run([*L, "evaluate", str(data), str(argmax_dir / "instances.json")], log))
    dataset = open_dataset(str(data))
    fs = read_feature_store(store)
    oracle = oracle_labels(dataset, fs, top)
    from liid.labelers import mil_argmax_labels
    results = {"settings": vars(a) | {"out": str(out)}, "oracle_fg_fraction": float((oracle > 0).mean()),
               "mil_argmax": {"ap50": ev["ap50"], "ap75": ev["ap75"], "abo": ev["abo"],
                              **label_quality(mil_argmax_labels(fs), oracle)},
               "neighbourhoods": neighbourhoods(fs, oracle), "graph": {}}
    for delta in a.delta:
        g, c, x = (out / f"{a.mil_name}_{name}_d{delta:g}" for name in ("graph", "cut", "liid"))
        run([*L, "build-graph", str(store), "--out", str(g), "--delta", str(delta), *shlex.split(a.graph_args),
             "--overwrite"], log)
        run([*L, "solve-cut", "--graph", str(g), "--out", str(c), "--quiet", "--overwrite"], log)
        run([*L, "export", str(c), "--proposals", str(top), "--out", str(x), "--overwrite"], log)
        ev = last_json(run([*L, "evaluate", str(data), str(x / "instances.json")], log))
        gstats = json.loads((g / "graph.json").read_text()).get("stats", {})
        cut = np.load(c / "labels.npy")[:fs.num_proposals]
        results["graph"][f"{delta:g}"] = {"ap50": ev["ap50"], "ap75": ev["ap75"], "abo": ev["abo"],
                                          "largest_component": gstats.get("largest_component"),
                                          **label_quality(cut, oracle)}
    results["seconds"] = {**seconds, "total": time.perf_counter() - t0}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({"mil_argmax_ap50": results["mil_argmax"]["ap50"],
                      **{f"liid_ap50_delta{d}": r["ap50"] for d, r in results["graph"].items()},
                      "oracle_fg_fraction": results["oracle_fg_fraction"], **results["neighbourhoods"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
