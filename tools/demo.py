"""`make demo`: the pipeline stages that exist so far, run with the same commands a user types.

    python tools/demo.py [--out demo_out] [--images 200] [--workers 2]

1. liid make-synthetic   the embedded default dataset (textured shapes with exact masks), OUT/synthetic
2. liid proposals        selective-search proposals of its train split, default filter, OUT/proposals
3. liid eval-proposals   ABO / recall of those proposals against the ground truth (table + JSON line),
                         full summary in OUT/proposals_eval.json
4. tools/demo_graph.py   kNN graph + exact multiway cut on a generated feature store, OUT/graph

Step 4 runs on generated features; the MIL stages that make real ones run in tools/bench_mil.py.
Every step skips work whose output is already there from the same inputs (the
evaluation, a one-second report, is redone), so a rerun is quick. A failing step stops the demo with
its exit status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIL_NOTE = ("note: the MIL stages (train-cls, train-mil, extract) run end to end in tools/bench_mil.py; "
            "this graph demo runs on generated features")


def liid() -> list[str]:
    """The `liid` script of this interpreter's environment, else `python -m liid.cli`."""
    script = Path(sys.executable).parent / "liid"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "liid.cli"]


def show(arg: str) -> str:
    """An argument as printed: paths inside the current folder relative to it."""
    if os.path.isabs(arg) and arg.startswith(os.getcwd() + os.sep):
        return os.path.relpath(arg)
    return arg


def run(step: str, args: list[str]) -> None:
    print(f"\n== {step}\n$ {shlex.join(show(a) for a in args)}", flush=True)
    rc = subprocess.run(args).returncode
    if rc != 0:
        print(f"demo: FAILED at {step!r} (exit status {rc}): {shlex.join(args)}", file=sys.stderr, flush=True)
        sys.exit(rc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("demo_out"))
    ap.add_argument("--images", type=int, default=200, help="synthetic images (80%% train)")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    data, props = str(a.out / "synthetic"), str(a.out / "proposals")
    t0 = time.perf_counter()
    run("1/4 synthetic dataset", [*liid(), "make-synthetic", "--out", data, "--images", str(a.images),
                                  "--seed", "0"])
    run("2/4 proposals (train split)", [*liid(), "proposals", data, "--out", props, "--workers", str(a.workers)])
    run("3/4 proposal quality", [*liid(), "eval-proposals", data, props,
                                 "--json", str(a.out / "proposals_eval.json"), "--overwrite"])
    print(f"\n{MIL_NOTE}", flush=True)
    run("4/4 graph + multiway cut", [sys.executable, str(ROOT / "tools/demo_graph.py"), "--out", str(a.out / "graph")])
    print(f"\ndemo done in {time.perf_counter() - t0:.0f} s; outputs in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
