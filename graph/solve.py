"""Exact multiway cut of a graph, component by component (LIID eqs. 11-13).

Each connected component is an independent multiway cut (eq. 12-13). Per component:
  1 node or 1 label        -> the cheapest allowed label (exact)
  binary structure         -> one max-flow (exact; ``graph.maxflow_moves.binary_structure``)
  otherwise                -> ``graph.pieces``: Kovtun's persistency fixes nodes (``graph.persistency``), the
                              free nodes fall into pieces, each piece trivial, one max-flow, or the CKR LP
                              (eq. 11) by simplex with column generation (``graph.columns``); integral ->
                              certified optimal; fractional -> branch-and-bound (MIP)
  time limit hit           -> a labeled answer (MIP incumbent, LP rounding or unary argmin, each polished by
                              alpha-expansion), marked uncertified, with a valid lower bound
Small components are packed into chunks solved as one block-diagonal LP/max-flow (fewer solver calls);
the packing depends only on the graph, so any number of workers gives the same result.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from liid.graph import highs_backend
from liid.graph.energy import labeling_cost, unary_cost
from liid.graph.maxflow_moves import binary_cut, binary_structure
from liid.graph.pieces import solve_lp_blocks

CERT_TOL = 1e-6  # relative tolerance of "objective == lower bound"


@dataclass(frozen=True)
class SolveConfig:
    """Parameters of ``liid solve-cut`` that change results or speed."""

    solver: str = "highs"  # "highs" | "cplex"
    time_limit: float = 60.0  # seconds per component for the LP and again for branch-and-bound
    maxflow: bool = True  # use max-flow for binary components (else they go through the LP)
    chunk_nodes: int = 20000  # pack components up to this many nodes into one solver call
    persistency: bool = True  # fix what Kovtun's test proves before the LP (graph.persistency)
    columns: bool = True  # eq. (11) by column generation (graph.columns) instead of all labels at once


@dataclass
class ComponentRecord:
    id: int
    nodes: int
    edges: int
    labels: int  # distinct labels allowed in the component
    method: str
    lp_bound: float | None  # eq. (11)'s LP value of what persistency left, plus the fixed part (>= the LP of
    #                         the whole component; equal to it with persistency off); None: the LP did not finish
    lower_bound: float  # best proven lower bound
    objective: float  # cut value of the returned labeling (without the graph's constant offset)
    gap: float  # objective - lower_bound
    lp_gap: float | None  # objective - lp_bound (the integrality gap when certified)
    seconds: float
    certified: bool

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Task:
    """A chunk of whole components with local node ids (what one worker solves)."""

    comp_ids: np.ndarray  # [C] global component ids, increasing
    block: np.ndarray  # [n] index into comp_ids per local node
    terminal: np.ndarray
    allowed: np.ndarray
    edges: np.ndarray  # local ids
    weights: np.ndarray


def _backend(name: str):
    if name == "highs":
        return highs_backend.solve
    if name == "cplex":
        from liid.graph import cplex_backend  # noqa: PLC0415

        return cplex_backend.solve
    raise ValueError(f"unknown solver {name!r}")


def _record(cid, n, m, L, method, lp, lb, obj, secs) -> ComponentRecord:
    lb = max(lb, lp) if lp is not None else lb
    gap = obj - lb
    cert = gap <= CERT_TOL * max(1.0, abs(obj))
    return ComponentRecord(int(cid), int(n), int(m), int(L), method, lp, float(lb), float(obj),
                           float(max(gap, 0.0)) if cert else float(gap),
                           None if lp is None else float(obj - lp), float(secs), bool(cert))


def solve_task(task: Task, cfg: SolveConfig) -> tuple[np.ndarray, list[ComponentRecord]]:
    """Solve every component of a chunk; returns local labels and one record per component."""
    C = task.comp_ids.shape[0]
    n = task.terminal.shape[0]
    labels = np.zeros(n, dtype=np.int64)
    records: list[ComponentRecord | None] = [None] * C
    order = np.argsort(task.block, kind="stable")
    starts = np.searchsorted(task.block[order], np.arange(C))
    nodes_of = np.split(order, starts[1:])
    eblock = task.block[task.edges[:, 0]] if len(task.edges) else np.zeros(0, dtype=np.int64)
    eorder = np.argsort(eblock, kind="stable")
    edges_of = np.split(eorder, np.searchsorted(eblock[eorder], np.arange(C))[1:])
    cost = unary_cost(task.terminal)
    masked = np.where(task.allowed, cost, np.inf)

    def local(b):
        nodes, eidx = nodes_of[b], edges_of[b]
        remap = np.empty(n, dtype=np.int64)
        remap[nodes] = np.arange(nodes.shape[0])
        return nodes, remap[task.edges[eidx]].reshape(-1, 2), task.weights[eidx]

    lp_blocks = []
    binary_blocks = []
    for b in range(C):
        nodes = nodes_of[b]
        al = task.allowed[nodes]
        L = int(al.any(axis=0).sum())
        if nodes.shape[0] == 1 or L == 1:  # nothing to cut: cheapest label
            t0 = time.perf_counter()
            lab = masked[nodes].argmin(axis=1)
            labels[nodes] = lab
            _, le, lw = local(b)
            obj = labeling_cost(cost[nodes], le, lw, lab)
            records[b] = _record(task.comp_ids[b], nodes.shape[0], le.shape[0], L, "trivial", obj, obj, obj,
                                 time.perf_counter() - t0)
        elif cfg.maxflow and binary_structure(al) is not None:
            binary_blocks.append(b)
        else:
            lp_blocks.append(b)

    for b in binary_blocks:  # one max-flow per binary component
        t0 = time.perf_counter()
        nodes, le, lw = local(b)
        c, other = binary_structure(task.allowed[nodes])
        lab = binary_cut(task.terminal[nodes], c, other, le, lw)
        labels[nodes] = lab
        obj = labeling_cost(cost[nodes], le, lw, lab)
        records[b] = _record(task.comp_ids[b], nodes.shape[0], le.shape[0],
                             int(task.allowed[nodes].any(axis=0).sum()), "maxflow", obj, obj, obj,
                             time.perf_counter() - t0)

    if lp_blocks:
        sel = np.concatenate([nodes_of[b] for b in lp_blocks])
        remap = np.full(n, -1, dtype=np.int64)
        remap[sel] = np.arange(sel.shape[0])
        eidx = np.concatenate([edges_of[b] for b in lp_blocks])
        bl = np.full(C, -1)
        bl[lp_blocks] = np.arange(len(lp_blocks))
        kwargs = {"name": f"component {task.comp_ids[lp_blocks[0]]}"} if cfg.solver == "cplex" else {}
        lab, outs = solve_lp_blocks(cost[sel], task.allowed[sel], remap[task.edges[eidx]].reshape(-1, 2),
                                    task.weights[eidx], bl[task.block[sel]], len(lp_blocks), cfg,
                                    _backend(cfg.solver), **kwargs)
        labels[sel] = lab
        for i, b in enumerate(lp_blocks):
            o = outs[i]
            nodes = nodes_of[b]
            records[b] = _record(task.comp_ids[b], nodes.shape[0], edges_of[b].shape[0],
                                 int(task.allowed[nodes].any(axis=0).sum()), o["method"], o["lp_value"],
                                 o["lower_bound"], o["objective"], o["seconds"])
    return labels, records


def make_tasks(terminal, allowed, edges, weights, component, chunk_nodes: int
               ) -> list[tuple[np.ndarray, Task]]:
    """Pack components (in id order) into chunks of at most ``chunk_nodes`` nodes; a larger one is alone."""
    component = np.asarray(component, dtype=np.int64)
    C = int(component.max()) + 1
    sizes = np.bincount(component, minlength=C)
    order = np.argsort(component, kind="stable")
    node_starts = np.concatenate([[0], np.cumsum(sizes)])
    ecomp = component[edges[:, 0]] if len(edges) else np.zeros(0, dtype=np.int64)
    eorder = np.argsort(ecomp, kind="stable")
    esizes = np.bincount(ecomp, minlength=C)
    edge_starts = np.concatenate([[0], np.cumsum(esizes)])
    groups: list[tuple[int, int]] = []
    start, acc = 0, 0
    for cid in range(C):
        if acc and acc + sizes[cid] > max(chunk_nodes, 1):
            groups.append((start, cid))
            start, acc = cid, 0
        acc += sizes[cid]
    groups.append((start, C))
    tasks = []
    n = terminal.shape[0]
    remap = np.empty(n, dtype=np.int64)
    for a, b in groups:
        nodes = order[node_starts[a]:node_starts[b]]
        eidx = eorder[edge_starts[a]:edge_starts[b]]
        remap[nodes] = np.arange(nodes.shape[0])
        tasks.append((nodes, Task(comp_ids=np.arange(a, b), block=component[nodes] - a,
                                  terminal=np.asarray(terminal[nodes], dtype=np.float64),
                                  allowed=np.asarray(allowed[nodes], dtype=bool),
                                  edges=remap[edges[eidx]].reshape(-1, 2), weights=np.asarray(weights[eidx]))))
    return tasks


def solve_graph(graph, cfg: SolveConfig = SolveConfig(), backend: str = "serial", workers: int = 1,
                ray_address: str | None = None, progress: bool = True) -> tuple[np.ndarray, list, dict]:
    """Solve every component of ``graph`` (a ``CutGraph`` with components); returns labels [N], records
    (in component order) and a summary dict."""
    from liid.parallel import run_tasks  # noqa: PLC0415

    t0 = time.perf_counter()
    if graph.component is None:
        graph.with_components()
    chunk = cfg.chunk_nodes if cfg.solver == "highs" else 1
    tasks = make_tasks(graph.terminal, graph.allowed, graph.edges, graph.weights, graph.component, chunk)
    results = run_tasks(solve_task, [t for _, t in tasks], args=(cfg,), backend=backend, workers=workers,
                        ray_address=ray_address, progress=progress, desc="solve-cut",
                        weights=[t.terminal.shape[0] for _, t in tasks])
    labels = np.zeros(graph.num_nodes, dtype=np.int32)
    records: list[ComponentRecord] = []
    for (nodes, _), (lab, recs) in zip(tasks, results, strict=True):
        labels[nodes] = lab
        records.extend(recs)
    obj = sum(r.objective for r in records) + graph.offset
    lb = sum(r.lower_bound for r in records) + graph.offset
    lp_known = all(r.lp_bound is not None for r in records)
    summary = {
        "objective": float(obj),
        "lower_bound": float(lb),
        "lp_bound": float(sum(r.lp_bound for r in records) + graph.offset) if lp_known else None,
        "gap": float(obj - lb),
        "nodes": graph.num_nodes,
        "edges": int(len(graph.edges)),
        "components": len(records),
        "certified_optimal_components": int(sum(r.certified for r in records)),
        "uncertified_components": [r.id for r in records if not r.certified],
        "methods": {m: sum(r.method == m for r in records) for m in sorted({r.method for r in records})},
        "label_counts": {graph.classes[k]: int(c) for k, c in
                         enumerate(np.bincount(labels, minlength=len(graph.classes))) if c},
        "seconds": time.perf_counter() - t0,
        "backend": backend,
        "workers": workers,
        "solver": cfg.solver,
        "time_limit": cfg.time_limit,
    }
    return labels, records, summary
