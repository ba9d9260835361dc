"""Eq. (11) by column generation: the LP over a few labels per node, proven optimal for all of them.

With many labels eq. (11) is large (560 nodes x 80 labels: 45k x columns, 155k absolute-value columns),
yet at the optimum a node uses one of the few labels near it. We solve the *restricted* LP, where node u
may take only the labels S_u (those that attract it, i.e. cost less than its worst label, and those a start
labeling gives it or its neighbours), and prove that adding any other label cannot help.

The proof is the dual of eq. (11) with costs c (the folded costs, see below):

    max sum_u pi_u   s.t.   pi_u <= c_uk + sum_{v ~ u} phi_uv,k   for every allowed (u, k),
                            phi_uv,k = -phi_vu,k,  |phi_uv,k| <= w_uv / 2,

phi_uv,k being what node u receives from v for label k (the dual of d_uvk >= |x_uk - x_vk|). The restricted
LP's row duals give pi (its optimum equals sum_u pi_u). For each label k, the phi that make every constraint
of k hold exist if and only if one max-flow on the nodes that allow k saturates its sink edges: node u
demands b_u = pi_u - c_uk (source edge -b_u if negative, sink edge b_u if positive), each edge carries
w/2 either way (Gale's feasibility theorem). If every label passes, (pi, phi) is feasible for the full dual,
so the restricted optimum is a lower bound too: it is eq. (11)'s optimum. A label that fails is added to
S_u at the nodes on the sink side of its minimum cut, and the restricted LP solved again.
Each round adds columns, so the loop ends; ``max_rounds`` bounds it, after which S = all allowed labels.

Folded costs: an edge whose other end does not allow k adds w/2 to c_uk (``graph.ckr``: |x_uk - 0|), in
the restricted LP for k outside S_v as well, so the restricted LP is eq. (11) with x_vk = 0 outside S.

A short deficit gives a valid bound as well: lowering pi_u by u's unmet demand of every label makes the
max-flow's phi feasible, so sum pi - sum_k deficit_k is a lower bound (``ColumnResult.bound``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import maxflow
import numpy as np

from liid.graph.ckr import LinearProgram, ckr_lp_cost


@dataclass
class ColumnResult:
    status: str  # "optimal" (eq. 11's optimum, proven) or the solver's status of the last round
    lp: LinearProgram | None  # the last restricted program
    x: np.ndarray | None  # its solution
    objective: float  # the restricted optimum (an upper bound of eq. 11; equal to it when optimal)
    bound: float  # a valid lower bound of eq. (11) (-inf if none)
    rounds: int
    columns: int  # x columns of the last restricted program
    full_columns: int  # x columns of eq. (11) over all allowed labels
    support: np.ndarray  # [n, L] bool: S of the last round


def folded_costs(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """c_uk + sum of w/2 over u's edges whose other end does not allow k (``graph.ckr``'s folding)."""
    c = np.where(allowed, cost, 0.0).astype(np.float64)
    u, v = edges[:, 0], edges[:, 1]
    half = 0.5 * np.asarray(weights, dtype=np.float64)[:, None]
    np.add.at(c, u, half * (allowed[u] & ~allowed[v]))
    np.add.at(c, v, half * (allowed[v] & ~allowed[u]))
    return c


def initial_support(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray,
                    start: np.ndarray | None) -> np.ndarray:
    """S_u: the labels cheaper than u's worst, plus the start's label at u and at u's neighbours."""
    c = np.where(allowed, cost, -np.inf)
    worst = c.max(axis=1, keepdims=True)
    S = allowed & (np.where(allowed, cost, np.inf) < worst - 1e-12 * (1.0 + np.abs(worst)))
    if start is not None:
        start = np.asarray(start, dtype=np.int64)
        S[np.arange(cost.shape[0]), start] = True
        for a, b in ((edges[:, 0], edges[:, 1]), (edges[:, 1], edges[:, 0])):
            S[a, start[b]] = True
    none = ~S.any(axis=1)  # every node keeps at least its cheapest allowed label
    S[none, np.where(allowed[none], cost[none], np.inf).argmin(axis=1)] = True
    return S & allowed


def price(folded: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray, pi: np.ndarray,
          tol: float = 1e-7) -> tuple[np.ndarray, float]:
    """For every label, can the dual constraints hold (one max-flow each)? Returns the (node, label) pairs
    to add (the sink side of a failing label's minimum cut) and the total deficit."""
    n, L = folded.shape
    add = np.zeros((n, L), dtype=bool)
    deficit = 0.0
    u, v = edges[:, 0], edges[:, 1]
    half = 0.5 * np.asarray(weights, dtype=np.float64)
    scale = 1.0 + float(np.abs(pi).sum())
    for k in range(L):
        nodes = np.nonzero(allowed[:, k])[0]
        if nodes.size == 0:
            continue
        b = pi[nodes] - folded[nodes, k]
        need = float(np.maximum(b, 0.0).sum())
        if need <= tol * scale:
            continue
        local = np.full(n, -1, dtype=np.int64)
        local[nodes] = np.arange(nodes.size)
        e = allowed[u, k] & allowed[v, k]
        g = maxflow.Graph[float](nodes.size, int(e.sum()))
        ids = g.add_nodes(nodes.size)
        g.add_grid_tedges(ids, np.maximum(-b, 0.0), np.maximum(b, 0.0))
        if e.any():
            g.add_edges(local[u[e]].astype(np.int32), local[v[e]].astype(np.int32), half[e], half[e])
        short = need - g.maxflow()
        if short > tol * scale:
            deficit += short
            # the sink side of the minimum cut (the nodes that still reach an unmet demand): supply
            # must come from inside it, so give k to its nodes; they are S's complement where the
            # restricted LP had folded a free w/2 across an edge
            add[nodes[np.asarray(g.get_grid_segments(ids), dtype=bool)], k] = True
    return add, deficit


def solve_columns(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray, solve_fn,
                  *, time_limit: float = 60.0, block: np.ndarray | None = None, num_blocks: int = 1,
                  start: np.ndarray | None = None, max_rounds: int = 50, **kwargs) -> ColumnResult:
    """Eq. (11) for unary ``cost`` [n, L] (finite where ``allowed``), by restricted LPs and max-flow pricing."""
    t0 = time.perf_counter()
    allowed = np.asarray(allowed, dtype=bool)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    n, L = cost.shape
    folded = folded_costs(cost, allowed, edges, weights)
    S = initial_support(cost, allowed, edges, start)
    full = int(allowed.sum())
    rounds, bound = 0, -np.inf
    while True:
        rounds += 1
        if rounds > max_rounds:
            S = allowed.copy()  # did not settle: the full program decides
        lp = ckr_lp_cost(cost, S, edges, weights, block, num_blocks)
        left = time_limit - (time.perf_counter() - t0)
        res = solve_fn(lp, integer=False, time_limit=max(left, 1e-3), **kwargs)
        cols = int(S.sum())
        if res.status != "optimal":
            return ColumnResult(res.status, lp, res.x, res.objective, bound, rounds, cols, full, S)
        if cols == full:  # the full program itself
            return ColumnResult("optimal", lp, res.x, res.objective, res.objective, rounds, cols, full, S)
        if res.row_dual is None:
            raise RuntimeError("the LP solver returned no duals for column generation")
        pi = res.row_dual[:n]
        add, deficit = price(folded, allowed, edges, weights, pi)
        bound = max(bound, float(pi.sum()) - deficit)
        new = add & ~S
        if deficit == 0.0 or not new.any():
            if deficit == 0.0:
                bound = max(bound, res.objective)
                return ColumnResult("optimal", lp, res.x, res.objective, bound, rounds, cols, full, S)
            S = allowed.copy()  # pricing found no column to add: settle it with the full program
            continue
        S |= new
