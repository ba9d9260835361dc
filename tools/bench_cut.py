"""The exact multiway cut on standard instances: our solver, the textbook integer program, alpha-expansion.

    python tools/make_mwc_instances.py mwc --nodes 160 320 480 640 --terminals 20 40 60 80 --seeds 0 1 2 3 4
    python tools/bench_cut.py mwc --json mwc_results.json

Per instance (every ``*.gr`` DIMACS2 file of the folder, converted as ``tools/dimacs2graph.py`` does):
  ours      ``graph.solve.solve_graph`` with its defaults (persistency, pieces, column generation, one thread)
  textbook  the CKR program of the whole instance with every label at every node as one HiGHS MIP
            (``graph.ckr.textbook_ckr_lp``, binary x, one thread), no decomposition
  alpha     alpha-expansion alone (``graph.maxflow_moves.alpha_expansion`` from the unary argmin), no bound
Each gets ``--time-limit`` seconds (ours: per component, as ``liid solve-cut --time-limit``). The table gives
seconds, certified (objective = proven bound), objective and bound, per instance and in total; ``--json``
keeps every number. ``--variant`` adds rows of ours with a part switched off (``no-persistency``,
``no-columns``, or both: ``plain``, the solver before them) to see what each part buys. Everything runs in
this process, one after another.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liid.atomic import write_json  # noqa: E402
from liid.errors import LiidError  # noqa: E402
from liid.graph import highs_backend  # noqa: E402
from liid.graph.ckr import textbook_ckr_lp  # noqa: E402
from liid.graph.energy import labeling_cost, unary_cost  # noqa: E402
from liid.graph.instances import from_terminal_edges, read_dimacs  # noqa: E402
from liid.graph.maxflow_moves import alpha_expansion  # noqa: E402
from liid.graph.solve import CERT_TOL, SolveConfig, solve_graph  # noqa: E402

VARIANTS = {"ours": {}, "no-persistency": {"persistency": False}, "no-columns": {"columns": False},
            "plain": {"persistency": False, "columns": False}}


def run_ours(g, time_limit: float, **overrides) -> dict:
    t0 = time.perf_counter()
    _, records, s = solve_graph(g, SolveConfig(time_limit=time_limit, **overrides), progress=False)
    return {"seconds": time.perf_counter() - t0, "certified": all(r.certified for r in records),
            "objective": s["objective"], "bound": s["lower_bound"],
            "methods": s["methods"], "components": s["components"]}


def run_textbook(g, time_limit: float) -> dict:
    t0 = time.perf_counter()
    lp = textbook_ckr_lp(g.terminal, g.edges, g.weights)
    res = highs_backend.solve(lp, integer=True, time_limit=time_limit)
    obj = res.objective + g.offset if res.x is not None else float("inf")
    bound = res.bound + g.offset if np.isfinite(res.bound) else float("-inf")
    return {"seconds": time.perf_counter() - t0, "certified": res.status == "optimal",
            "objective": obj, "bound": bound, "columns": int(lp.A.shape[1]), "rows": int(lp.A.shape[0])}


def run_alpha(g) -> dict:
    t0 = time.perf_counter()
    cost = unary_cost(g.terminal)
    lab = alpha_expansion(g.terminal, g.allowed, g.edges, g.weights, cost.argmin(axis=1))
    obj = labeling_cost(cost, g.edges, g.weights, lab) + g.offset
    return {"seconds": time.perf_counter() - t0, "certified": False, "objective": obj, "bound": None}


def _fmt(r: dict | None) -> str:
    if r is None:
        return "– | – | – | –"
    b = "–" if r["bound"] is None else f"{r['bound']:.6g}"
    return f"{r['seconds']:.2f} | {'yes' if r['certified'] else 'no'} | {r['objective']:.6g} | {b}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("instances", help="folder of DIMACS2 *.gr files (tools/make_mwc_instances.py)")
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per solver and instance")
    ap.add_argument("--skip-textbook", action="store_true", help="leave out the textbook integer program")
    ap.add_argument("--variant", nargs="*", default=[], choices=[v for v in VARIANTS if v != "ours"])
    ap.add_argument("--json", help="write every number here")
    a = ap.parse_args(argv)
    if not a.time_limit > 0:
        print(f"error: --time-limit: need seconds > 0, got {a.time_limit}", file=sys.stderr)
        return 2
    files = sorted(Path(a.instances).glob("*.gr"))
    if not files:
        print(f"error: {a.instances}: no *.gr files", file=sys.stderr)
        return 2
    solvers = ["ours", *a.variant] + ([] if a.skip_textbook else ["textbook"]) + ["alpha"]
    rows, totals = [], {s: 0.0 for s in solvers}
    cert = {s: 0 for s in solvers}
    header = " | ".join(f"{s} s | {s} cert. | {s} objective | {s} bound" for s in solvers)
    print(f"| instance | nodes | terminals | edges | {header} |", flush=True)
    print("|---|---:|---:|---:|" + "---:|---|---:|---:|" * len(solvers), flush=True)
    try:
        for f in files:
            n, term, e = read_dimacs(f)
            g, _ = from_terminal_edges(n, term, e, where=str(f))
            res = {}
            for s in solvers:
                if s == "textbook":
                    res[s] = run_textbook(g, a.time_limit)
                elif s == "alpha":
                    res[s] = run_alpha(g)
                else:
                    res[s] = run_ours(g, a.time_limit, **VARIANTS[s])
                totals[s] += res[s]["seconds"]
                cert[s] += bool(res[s]["certified"])
            if "textbook" in res and res["textbook"]["certified"] and res["ours"]["certified"]:
                same = abs(res["textbook"]["objective"] - res["ours"]["objective"])
                if same > CERT_TOL * max(1.0, abs(res["ours"]["objective"])) + 1e-6:
                    raise LiidError(f"{f.name}: ours {res['ours']['objective']} and the textbook IP "
                                    f"{res['textbook']['objective']} are both certified but differ")
            rows.append({"instance": f.name, "nodes": n, "terminals": len(term), "edges": len(e), **res})
            print(f"| {f.stem} | {n} | {len(term)} | {len(e)} | " + " | ".join(_fmt(res[s]) for s in solvers)
                  + " |", flush=True)
    except LiidError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tot = " | ".join(f"{totals[s]:.1f} | {cert[s]}/{len(files)} | | " for s in solvers)
    print(f"| **total** ({len(files)} instances) | | | | {tot}|")
    if "textbook" in totals and totals["ours"] > 0:
        print(f"\ntextbook / ours, total seconds: {totals['textbook'] / totals['ours']:.1f}x")
    if a.json:
        write_json(a.json, {"format": "liid.bench-cut", "time_limit": a.time_limit, "machine": platform.platform(),
                            "date": time.strftime("%Y-%m-%d"), "instances": rows,
                            "total_seconds": totals, "certified": cert})
    return 0


if __name__ == "__main__":
    sys.exit(main())
