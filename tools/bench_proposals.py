"""Benchmark of segment proposals: the built-in mask generator against a boxes-only baseline.

For each dataset (coco-mini val, and the synthetic set's val split), every image is processed by
  * ``builtin``: ``proposals.selective_search`` (default settings) + the default filter (mask proposals);
  * ``cv-boxes``: OpenCV's selective search (``switchToSelectiveSearchFast``, its own ranking), each box used as
    a box-shaped mask;
  * ``cv-boxes→mask``: the same boxes, each replaced by the built-in proposal (before filtering) whose box fits
    it best (highest box IoU) — the best a boxes-only method can do when masks must come from elsewhere.
ABO and recall at IoU 0.5 / 0.7 for the top 20 / 40 / all, and seconds per image (one core, the proposal
step only, image decoding excluded) are printed as a Markdown table and written as JSON.

    python tools/bench_proposals.py --out bench_proposals.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from liid.datasets import open_dataset  # noqa: E402
from liid.proposals.evaluate import ProposalScores  # noqa: E402
from liid.proposals.filtering import FilterConfig, filter_proposals  # noqa: E402
from liid.proposals.selective_search import SelectiveSearchConfig, selective_search  # noqa: E402

TOPS = (20, 40, None)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of XYXY (exclusive) boxes a [A, 4] with b [B, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _box_rles(boxes: np.ndarray, h: int, w: int) -> list[dict]:
    from pycocotools import mask as mask_util
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    return list(mask_util.frPyObjects(np.ascontiguousarray(xywh), h, w)) if len(xywh) else []


_OPEN: dict = {}  # datasets opened in this worker process


def _one_image(args: tuple) -> dict:
    """All three methods on one image; returns what the evaluator needs."""
    source, split, image_id = args
    import cv2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    cv2.setNumThreads(1)
    if (source, split) not in _OPEN:
        _OPEN[(source, split)] = open_dataset(source, split=split) if split else open_dataset(source)
    ds = _OPEN[(source, split)]
    rgb = ds.load_image(image_id)
    h, w = rgb.shape[:2]
    t = time.perf_counter()
    raw = selective_search(rgb, SelectiveSearchConfig(), image_key=image_id)
    props = filter_proposals(raw, FilterConfig())
    t_builtin = time.perf_counter() - t

    t = time.perf_counter()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(rgb[..., ::-1]))
    ss.switchToSelectiveSearchFast()
    rects = ss.process()  # x, y, w, h in OpenCV's ranking
    t_cv = time.perf_counter() - t
    boxes = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    box_rles = _box_rles(boxes, h, w)
    best = _box_iou(boxes, raw.boxes.astype(np.float64)).argmax(axis=1) if len(raw) else np.zeros(0, int)
    fitted = [raw.rles[int(j)] for j in best]
    gt = ds.instances(image_id)
    return {"id": image_id, "gt": gt, "builtin": (props.rles, props.scores), "t_builtin": t_builtin,
            "t_cv": t_cv, "cv_boxes": box_rles, "cv_fitted": fitted, "raw_count": len(raw)}


def bench_dataset(name: str, source: str, split: str | None, workers: int, limit: int | None) -> dict:
    ds = open_dataset(source, split=split) if split else open_dataset(source)
    ids = [im.id for im in ds.images][:limit]
    scores = {m: ProposalScores(tops=TOPS) for m in ("builtin", "cv-boxes", "cv-boxes→mask")}
    times = {"builtin": [], "cv-boxes": []}
    raw_counts = []
    with ProcessPoolExecutor(workers) as ex:
        for r in ex.map(_one_image, [(source, split, i) for i in ids]):
            gt = r["gt"]
            if gt is None:
                continue
            rles, sc = r["builtin"]
            scores["builtin"].add(rles, sc, gt.masks, gt.classes, gt.iscrowd)
            n = len(r["cv_boxes"])
            order_scores = np.arange(n, 0, -1, dtype=np.float64)  # OpenCV's order
            scores["cv-boxes"].add(r["cv_boxes"], order_scores, gt.masks, gt.classes, gt.iscrowd)
            scores["cv-boxes→mask"].add(r["cv_fitted"], order_scores, gt.masks, gt.classes, gt.iscrowd)
            times["builtin"].append(r["t_builtin"])
            times["cv-boxes"].append(r["t_cv"])
            raw_counts.append(r["raw_count"])
    out = {"dataset": name, "source": source, "split": split, "images": len(ids), "methods": {}}
    for m, s in scores.items():
        summ = s.summary(ds.classes)
        summ.pop("per_class")
        t = times["builtin"] if m == "builtin" else times["cv-boxes"]
        if m == "cv-boxes→mask":  # needs the built-in proposals as well
            t = [a + b for a, b in zip(times["builtin"], times["cv-boxes"], strict=True)]
        summ["seconds_per_image"] = float(np.mean(t))
        out["methods"][m] = summ
    out["builtin_raw_proposals_per_image"] = float(np.mean(raw_counts))
    return out


def markdown(results: list[dict]) -> str:
    head = ("| dataset | method | proposals/img | ABO@20 | ABO@40 | ABO@all | R50@20 | R50@40 | R50@all | "
            "R70@40 | R70@all | s/img |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        for m, s in r["methods"].items():
            lines.append(f"| {r['dataset']} ({s['images']} img, {s['instances']} inst) | {m} | "
                         f"{s['proposals_per_image']:.0f} | {s['abo_top20']:.3f} | {s['abo_top40']:.3f} | "
                         f"{s['abo_all']:.3f} | {s['recall50_top20']:.3f} | {s['recall50_top40']:.3f} | "
                         f"{s['recall50_all']:.3f} | {s['recall70_top40']:.3f} | {s['recall70_all']:.3f} | "
                         f"{s['seconds_per_image']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coco", default=str(ROOT.parent / "shared/data/coco-mini/annotations/instances_val2017.json"))
    ap.add_argument("--synthetic", default=None,
                    help="synthetic dataset root (default: made with `liid make-synthetic --images 500 --seed 0`)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="first N images of each dataset")
    ap.add_argument("--out", default="bench_proposals.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        syn = args.synthetic
        if syn is None:
            syn = os.path.join(tmp, "synthetic")
            subprocess.run([sys.executable, "-m", "liid.cli", "make-synthetic", "--out", syn, "--images", "500",
                            "--seed", "0"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if Path(args.coco).exists():
            results.append(bench_dataset("coco-mini val", args.coco, None, args.workers, args.limit))
        else:
            print(f"skipping coco-mini: {args.coco} not found", file=sys.stderr)
        results.append(bench_dataset("synthetic val", syn, "val", args.workers, args.limit))
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": " ".join(["python", "tools/bench_proposals.py", *sys.argv[1:]]), "results": results}
    Path(args.out).write_text(json.dumps(meta, indent=1))
    print(markdown(results))
    print(json.dumps({r["dataset"]: {m: {k: round(v, 4) for k, v in s.items() if isinstance(v, float)}
                                     for m, s in r["methods"].items()} for r in results}))


if __name__ == "__main__":
    main()
