"""``liid solve-cut --graph GRAPH --out CUT``: the exact multiway cut of every component (eq. 11-13)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from liid.atomic import atomic_dir, check_parent, write_json
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.graph.graph_file import load_graph
from liid.graph.solve import SolveConfig, solve_graph
from liid.parallel import BACKENDS
from liid.stage import up_to_date

CUT_FORMAT = "liid.cut"  # summary.json's tag (the folder's record, as graph.json is a graph's)


def format_summary(s: dict) -> str:
    cert = s["certified_optimal_components"]
    lines = [
        f"objective {s['objective']:.6f}  lower bound {s['lower_bound']:.6f}  gap {s['gap']:.3g}",
        f"components {s['components']:,}  certified optimal {cert:,} ({100 * cert / max(s['components'], 1):.1f}%)"
        f"  nodes {s['nodes']:,}  edges {s['edges']:,}",
        "methods: " + ", ".join(f"{m} {c:,}" for m, c in s["methods"].items()),
        "labels: " + ", ".join(f"{name} {c:,}" for name, c in s["label_counts"].items()),
        f"{s['seconds']:.2f} s  solver {s['solver']}  backend {s['backend']} x{s['workers']}",
    ]
    if s["uncertified_components"]:
        lines.append(f"uncertified components (time limit): {s['uncertified_components'][:20]}")
    lines.append(certification_line(s))
    return "\n".join(lines)


def _uncertified(s: dict) -> str:
    n, bad = s["components"], len(s["uncertified_components"])
    return f"{bad:,} of {n:,} components hit the time limit uncertified (gap {s['gap']:.3g})"


def certification_line(s: dict) -> str:
    """The last word of a cut: whether every component carries its proof of optimality."""
    if not s["uncertified_components"]:
        return f"certified: all {s['components']:,} components optimal"
    return (f"NOT CERTIFIED: {_uncertified(s)}; their labels are the best found; raise --time-limit, or pass "
            "--require-certified to make this an error")


@click.command("solve-cut")
@click.option("--graph", "graph_dir", required=True, type=click.Path(path_type=Path),
              help="Graph directory from `liid build-graph` or tools/dimacs2graph.py.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cut directory to write.")
@click.option("--solver", default="highs", show_default=True, type=click.Choice(["highs", "cplex"]),
              help="LP/MIP solver (cplex: IBM CPLEX; the PyPI Community Edition stops at 1000 variables).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Parallel workers (processes, or Ray CPUs for a local Ray).")
@click.option("--backend", default=None, type=click.Choice(BACKENDS),
              help="serial | process | ray (default: process when --workers > 1, else serial).")
@click.option("--ray-address", default=None, help="Address of an existing Ray cluster (with --backend ray).")
@click.option("--time-limit", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds per component for the LP and again for branch-and-bound; past it the "
                   "component gets a labeled, uncertified answer.")
@click.option("--no-maxflow", is_flag=True, help="Send binary components through the LP too.")
@click.option("--no-persistency", is_flag=True,
              help="Skip Kovtun's partial optimality (nodes it proves are fixed before the LP); for comparison.")
@click.option("--no-columns", is_flag=True,
              help="Build eq. (11) with every allowed label at once instead of by column generation.")
@click.option("--chunk-nodes", default=20000, show_default=True, type=click.IntRange(1),
              help="Small components are packed into one solver call up to this many nodes.")
@click.option("--require-certified", is_flag=True,
              help="Fail (exit 2, nothing written) unless every component is certified optimal; for scripts "
                   "that need the proof.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(graph_dir: Path, out: Path, solver: str, workers: int, backend: str | None, ray_address: str | None,
            time_limit: float, no_maxflow: bool, no_persistency: bool, no_columns: bool, chunk_nodes: int,
            require_certified: bool, quiet: bool, overwrite: bool) -> None:
    """Label every node with the exact multiway cut, component by component.

    Writes CUT/labels.npy (one label per node, 0 = background/noise), CUT/components.jsonl (per
    component: LP bound, objective, gap, time, method, certified) and CUT/summary.json. The last line says
    whether every component is certified optimal (summary.json: "all_certified"); a component that hits
    --time-limit keeps its best labels, uncertified, unless --require-certified.
    """
    backend = backend or ("process" if workers > 1 else "serial")
    cfg = SolveConfig(solver=solver, time_limit=time_limit, maxflow=not no_maxflow, chunk_nodes=chunk_nodes,
                      persistency=not no_persistency, columns=not no_columns)
    check_parent(out)
    expected = {"graph": str(Path(graph_dir).resolve()),
                "fingerprint": fingerprint(graph_dir) if Path(graph_dir).is_dir() else None,
                "config": {"solver": solver, "time_limit": time_limit, "maxflow": not no_maxflow,
                           "chunk_nodes": chunk_nodes, "persistency": not no_persistency,
                           "columns": not no_columns}}
    if up_to_date(out, "summary.json", "inputs", expected, overwrite):
        recorded = json.loads((out / "summary.json").read_text())
        click.echo(certification_line(recorded))
        if require_certified and recorded.get("uncertified_components"):
            raise LiidError(f"{out}: {_uncertified(recorded)}; --require-certified needs every one proven "
                            "(raise --time-limit and --overwrite)")
        return
    g = load_graph(graph_dir)
    click.echo(f"{graph_dir}: {g.num_nodes:,} nodes, {len(g.edges):,} edges, {g.num_components:,} components, "
               f"{len(g.classes)} labels")
    labels, records, summary = solve_graph(g, cfg, backend=backend, workers=workers, ray_address=ray_address,
                                           progress=not quiet)
    summary.update(format=CUT_FORMAT, graph=expected["graph"], inputs=expected, classes=g.classes,
                   all_certified=not summary["uncertified_components"])
    if require_certified and not summary["all_certified"]:
        raise LiidError(f"{out}: not written: {_uncertified(summary)}; --require-certified needs every one "
                        "proven (raise --time-limit)")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "labels.npy", labels.astype(np.int32))
        with open(tmp / "components.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps(r.to_json()) + "\n")
        write_json(tmp / "summary.json", summary)
    click.echo(f"wrote {out}")
    click.echo(format_summary(summary))  # its last line: certified or not
