"""The exact cut of the components that need an LP: persistency, then the pieces it leaves.

``solve_lp_blocks`` takes the components of a chunk that are neither trivial nor binary and
  1. fixes what Kovtun's test proves (``graph.persistency``; off with ``SolveConfig.persistency``),
  2. splits the free nodes into connected pieces (fixed nodes cut a component apart),
  3. solves each piece: trivial, one max-flow, or eq. (11) (by column generation, ``graph.columns``, or
     whole), many pieces in one block-diagonal program; a fractional piece goes to branch-and-bound, a
     piece over the time limit to the fallbacks of ``solve_piece``,
  4. reports per original component: the labels, the objective on the original component, and bounds that
     add the pieces' gaps to it (the fixed nodes' part of the energy is exact, by persistency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from liid.graph.ckr import ckr_lp_cost
from liid.graph.columns import solve_columns
from liid.graph.energy import labeling_cost
from liid.graph.graph_file import components
from liid.graph.maxflow_moves import alpha_expansion_cost, binary_cut_cost, binary_structure
from liid.graph.persistency import persistency, reduce

# the worse of two piece methods names the component (a fallback over an exact path, B&B over a plain LP)
_RANK = ["trivial", "maxflow", "lp", "lp+branch-and-bound"]


@dataclass
class PieceResult:
    labels: np.ndarray
    method: str
    lp_value: float | None  # the LP of the piece (None: it did not finish)
    lower_bound: float
    objective: float
    seconds: float
    lp_seconds: float = 0.0  # spent in the LP (counted against the component's --time-limit)
    mip_seconds: float = 0.0  # spent in branch-and-bound (the second --time-limit)


def _rank(method: str) -> int:
    return _RANK.index(method) if method in _RANK else len(_RANK)


def _lp(cost, allowed, edges, weights, cfg, solve_fn, time_limit, start, block=None, num_blocks=1, **kw):
    """Eq. (11) of one piece or a block-diagonal set of pieces: (status, lp, x, value, bound, support)."""
    if cfg.columns:
        r = solve_columns(cost, allowed, edges, weights, solve_fn, time_limit=time_limit, block=block,
                          num_blocks=num_blocks, start=start, **kw)
        return r.status, r.lp, r.x, r.objective, r.bound, r.support
    lp = ckr_lp_cost(cost, allowed, edges, weights, block, num_blocks)
    res = solve_fn(lp, integer=False, time_limit=time_limit, **kw)
    return res.status, lp, res.x, res.objective, res.bound, allowed


def solve_piece(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray, cfg, solve_fn,
                lp_time: float | None = None, mip_time: float | None = None, **kw) -> PieceResult:
    """One connected piece with >= 3 labels: eq. (11), branch-and-bound if fractional, fallbacks on time.

    ``lp_time`` / ``mip_time``: what is left of the component's --time-limit for each (default: all of it)."""
    t0 = time.perf_counter()
    lp_time = cfg.time_limit if lp_time is None else lp_time
    mip_time = cfg.time_limit if mip_time is None else mip_time
    n = cost.shape[0]
    masked = np.where(allowed, cost, np.inf)
    c0 = np.where(allowed, cost, 0.0)
    start, e_start = None, np.inf

    def primal():  # alpha-expansion from the unary argmin: the first support, a MIP start, the fallback
        nonlocal start, e_start
        if start is None:
            start = alpha_expansion_cost(cost, allowed, edges, weights, masked.argmin(axis=1))
            e_start = labeling_cost(c0, edges, weights, start)
        return start
    t_lp = time.perf_counter()
    if lp_time > 0:
        status, lp, x, value, bound, support = _lp(cost, allowed, edges, weights, cfg, solve_fn, lp_time,
                                                    primal() if cfg.columns else None, **kw)
    else:  # earlier pieces of the component used up its LP time
        status, bound = "time_limit", -np.inf
    lp_secs = time.perf_counter() - t_lp
    if status != "optimal":  # the LP did not finish: alpha-expansion from the unary argmin
        lb = bound if np.isfinite(bound) else float(masked.min(axis=1).sum())  # pair weights are >= 0
        return PieceResult(primal(), "alpha-expansion (LP time limit)", None, lb, e_start,
                           time.perf_counter() - t0, lp_secs)
    lab = lp.labels(x, n)
    if lp.is_integral(x).all():
        return PieceResult(lab, "lp", value, value, labeling_cost(c0, edges, weights, lab), time.perf_counter() - t0,
                           lp_secs)
    # fractional: branch-and-bound, first over the LP's labels (a restriction: its optimum is an upper bound,
    # optimal when it meets the LP bound), then over every allowed label if it does not
    t_mip = time.perf_counter()
    primal()
    best, e_best = (start, e_start)
    tol = 1e-6 * max(1.0, abs(value))
    mip = None
    for labels_set in ([support, allowed] if support is not None and not np.array_equal(support, allowed)
                       else [allowed]):
        left = mip_time - (time.perf_counter() - t_mip)
        if left <= 0:
            break
        ok = labels_set[np.arange(n), best]
        prog = ckr_lp_cost(cost, labels_set, edges, weights)
        mip = solve_fn(prog, integer=True, time_limit=left, start=prog.vector(best) if ok.all() else None, **kw)
        if mip.x is not None:
            cand = prog.labels(mip.x, n)
            e = labeling_cost(c0, edges, weights, cand)
            if e < e_best:
                best, e_best = cand, e
        mip_secs = time.perf_counter() - t_mip
        if labels_set is allowed and mip.status == "optimal":
            return PieceResult(best, "lp+branch-and-bound", value, max(value, mip.bound), e_best,
                               time.perf_counter() - t0, lp_secs, mip_secs)
        if e_best <= value + tol:  # meets the LP bound: optimal
            return PieceResult(best, "lp+branch-and-bound", value, value, e_best, time.perf_counter() - t0,
                               lp_secs, mip_secs)
    cands = [alpha_expansion_cost(cost, allowed, edges, weights, lab), best]  # rounded LP, polished
    energies = [labeling_cost(c0, edges, weights, c) for c in cands]
    i = int(np.argmin(energies))
    lb = value
    if mip is not None and mip.status != "optimal" and np.isfinite(mip.bound) and labels_set is allowed:
        lb = max(lb, mip.bound)
    method = "lp rounding + alpha-expansion" if i == 0 else "branch-and-bound incumbent + alpha-expansion"
    return PieceResult(cands[i], method + " (time limit)", value, lb, energies[i], time.perf_counter() - t0,
                       lp_secs, time.perf_counter() - t_mip)


def solve_lp_blocks(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray,
                    block: np.ndarray, num_blocks: int, cfg, solve_fn, **kw) -> tuple[np.ndarray, list[dict]]:
    """Labels [n] and per block a dict (method, lp_value, lower_bound, objective, seconds) for nodes in
    ``num_blocks`` components (``block`` [n]); ``cost`` [n, L] finite where ``allowed``."""
    t0 = time.perf_counter()
    n, L = cost.shape
    masked = np.where(allowed, cost, np.inf)
    if cfg.persistency:
        red = persistency(masked, edges, weights)
    else:
        red = reduce(masked, edges, weights, np.full(n, -1, dtype=np.int64))
    t_pers = time.perf_counter() - t0
    labels = red.fixed.copy()
    num_p, piece = components(red.free.size, red.edges)
    porder = np.argsort(piece, kind="stable")  # nodes of each piece, in one pass (not one scan per piece)
    p_nodes = np.split(porder, np.searchsorted(piece[porder], np.arange(num_p))[1:]) if num_p else []
    ep = piece[red.edges[:, 0]] if len(red.edges) else np.zeros(0, dtype=np.int64)
    eorder = np.argsort(ep, kind="stable")
    p_edges = np.split(eorder, np.searchsorted(ep[eorder], np.arange(num_p))[1:]) if num_p else []
    pal = np.isfinite(red.cost)
    pc = np.where(pal, red.cost, 0.0)

    def local(p):
        nodes = p_nodes[p]
        remap = np.empty(red.free.size, dtype=np.int64)
        remap[nodes] = np.arange(nodes.size)
        e = p_edges[p]
        return nodes, remap[red.edges[e]].reshape(-1, 2), red.weights[e]

    results: list[PieceResult | None] = [None] * num_p
    lp_pieces = []
    for p in range(num_p):
        ts = time.perf_counter()
        nodes, le, lw = local(p)
        al = pal[nodes]
        nl = int(al.any(axis=0).sum())
        if nodes.size == 1 or nl == 1:
            lab = np.where(al, red.cost[nodes], np.inf).argmin(axis=1)
            obj = labeling_cost(pc[nodes], le, lw, lab)
            results[p] = PieceResult(lab, "trivial", obj, obj, obj, time.perf_counter() - ts)
        elif cfg.maxflow and (bs := binary_structure(al)) is not None:
            lab = binary_cut_cost(pc[nodes], bs[0], bs[1], le, lw)
            obj = labeling_cost(pc[nodes], le, lw, lab)
            results[p] = PieceResult(lab, "maxflow", obj, obj, obj, time.perf_counter() - ts)
        else:
            lp_pieces.append(p)

    if len(lp_pieces) > 1 and cfg.solver == "highs":  # one block-diagonal program for all of them
        ts = time.perf_counter()
        sel = np.concatenate([p_nodes[p] for p in lp_pieces])
        remap = np.full(red.free.size, -1, dtype=np.int64)
        remap[sel] = np.arange(sel.size)
        eidx = np.concatenate([p_edges[p] for p in lp_pieces])
        pb = np.full(num_p, -1, dtype=np.int64)
        pb[lp_pieces] = np.arange(len(lp_pieces))
        je, jw = remap[red.edges[eidx]].reshape(-1, 2), red.weights[eidx]
        jal = pal[sel]
        start = alpha_expansion_cost(pc[sel], jal, je, jw, np.where(jal, red.cost[sel], np.inf).argmin(axis=1)) \
            if cfg.columns else None
        status, lp, x, _, _, support = _lp(pc[sel], jal, je, jw, cfg, solve_fn,
                                           cfg.time_limit * len(lp_pieces), start, block=pb[piece[sel]],
                                           num_blocks=len(lp_pieces), **kw)
        share = (time.perf_counter() - ts) / len(lp_pieces)
        if status == "optimal":
            values = lp.block_values(x, len(lp_pieces))
            frac = ~lp.is_integral(x)
            frac_blocks = np.bincount(lp.col_block[: lp.num_x][frac], minlength=len(lp_pieces)) > 0
            joint = lp.labels(x, sel.size)
            for i, p in enumerate(lp_pieces):
                if frac_blocks[i]:
                    continue
                nodes, le, lw = local(p)
                lab = joint[remap[nodes]]
                obj = labeling_cost(pc[nodes], le, lw, lab)
                results[p] = PieceResult(lab, "lp", float(values[i]), float(values[i]), obj, share)
    # --time-limit is per component: its pieces share one LP budget and one branch-and-bound budget
    lp_left = np.full(num_blocks, float(cfg.time_limit))
    mip_left = np.full(num_blocks, float(cfg.time_limit))
    for p in lp_pieces:
        if results[p] is None:
            nodes, le, lw = local(p)
            b = int(block[red.free[nodes[0]]])
            r = solve_piece(red.cost[nodes], pal[nodes], le, lw, cfg, solve_fn, lp_time=lp_left[b],
                            mip_time=mip_left[b], **kw)
            lp_left[b] -= r.lp_seconds
            mip_left[b] -= r.mip_seconds
            results[p] = r

    for p in range(num_p):
        labels[red.free[p_nodes[p]]] = results[p].labels

    # per original component: objective on the original costs, bounds = objective - the pieces' gaps
    c0 = np.where(allowed, cost, 0.0)
    eb = block[edges[:, 0]] if len(edges) else np.zeros(0, dtype=np.int64)
    cut = np.bincount(eb, weights=weights * (labels[edges[:, 0]] != labels[edges[:, 1]]),
                      minlength=num_blocks) if len(edges) else np.zeros(num_blocks)
    objective = np.bincount(block, weights=c0[np.arange(n), labels], minlength=num_blocks) + cut
    sizes = np.bincount(block, minlength=num_blocks)
    single = np.isfinite(masked).sum(axis=1) == 1
    fixed_by_test = np.bincount(block, weights=(red.fixed >= 0) & ~single, minlength=num_blocks) > 0
    gap_lb = np.zeros(num_blocks)
    gap_lp = np.zeros(num_blocks)
    lp_missing = np.zeros(num_blocks, dtype=bool)
    secs = t_pers * sizes / max(n, 1)
    worst = [""] * num_blocks
    for p in range(num_p):
        r = results[p]
        b = int(block[red.free[p_nodes[p][0]]])
        gap_lb[b] += r.objective - r.lower_bound
        if r.lp_value is None:
            lp_missing[b] = True
        else:
            gap_lp[b] += r.objective - r.lp_value
        secs[b] += r.seconds
        if not worst[b] or _rank(r.method) > _rank(worst[b]):
            worst[b] = r.method
    out = []
    for b in range(num_blocks):
        method = worst[b] or "persistency"
        if worst[b] and fixed_by_test[b]:
            method = "persistency + " + method
        out.append({"method": method, "objective": float(objective[b]),
                    "lower_bound": float(objective[b] - gap_lb[b]),
                    "lp_value": None if lp_missing[b] else float(objective[b] - gap_lp[b]),
                    "seconds": float(secs[b])})
    return labels, out
