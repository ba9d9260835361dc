"""`make demo`: the whole pipeline end to end on the embedded synthetic dataset (liid.pipeline.demo).

    python tools/demo.py [--out demo_out] [--images 200] [--workers 2] [--mil-epochs 6] ...

Runs the commands a user types, in order, each skipping what is already up to date (so an interrupted
demo continues where it stopped):

  make-synthetic → proposals → filter-proposals → train-cls → train-mil → extract →
  label --method mil-argmax → build-graph → solve-cut → export → label --method oracle →
  evaluate (MIL argmax, LIID, oracle) → train-maskrcnn (evaluated on the val split) → report

and ends with a results table, OUT/report.html (pictures: proposals, MIL labels, graph-cut labels and
ground truth side by side; Mask R-CNN predictions; the component sizes of the graph; training curves) and
OUT/metrics.json. Exit status: 0, or the failing stage's status with its name.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from liid.errors import LiidError
from liid.pipeline.demo import DemoConfig, DemoPaths, results_table, run_demo
from liid.pipeline.report import write_report


def report(config: DemoConfig, out: Path, metrics: dict) -> Path:
    p = DemoPaths(out)
    return write_report(out, metrics, p.data, p.top,
                        {"MIL argmax": p.argmax / "instances.json", "LIID": p.liid / "instances.json"},
                        p.graph, p.maskrcnn,
                        {"train-cls (multi-label classifier)": p.cls / "loss.png",
                         "train-mil (eq. 9)": p.mil / "loss.png", "train-maskrcnn": p.maskrcnn / "loss.png"},
                        n_images=config.report_images)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="demo folder (default demo_out)")
    for f in fields(DemoConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                            help=f"default: {f.default}")
            continue
        kind = str if f.name in ("maskrcnn_backbone", "device", "backbone", "att_pooling", "neighbours") \
            else type(f.default)
        ap.add_argument(flag, type=kind, default=f.default, help=f"default: {f.default}")
    a = ap.parse_args(argv)
    config = DemoConfig(**{f.name: getattr(a, f.name) for f in fields(DemoConfig)})
    try:
        metrics = run_demo(config, a.out, report=report)
    except LiidError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    print("\n" + results_table(metrics))
    print(f"\nreport: {metrics['report']}\nmetrics: {a.out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
