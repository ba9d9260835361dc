"""Partial optimality before the LP: nodes whose label some optimal multiway cut is known to take.

Kovtun's one-against-all test for Potts energies (I. Kovtun, "Partial optimal labeling search for a
NP-hard subclass of (max,+) problems", DAGM 2003; also Gridchyn & Kolmogorov, ICCV 2013). For a label a,
minimise the binary energy

    E_a(y) = sum_u [ y_u c_u(a) + (1 - y_u) m_u ] + sum_(u,v) w_uv [y_u != y_v],   m_u = min_{b != a} c_u(b)

(one max-flow). For any minimiser with A = {y = 1} and any labeling x, the labeling x' = a on A, x
elsewhere, has E(x') <= E(x): with Z = {x = a}, submodularity and the optimality of A give
E_a(A u Z) <= E_a(Z), and edge by edge the Potts change x -> x' is at most the cut change Z -> A u Z while
the unary change is at most sum_{A \\ Z} c(a) - m. So some optimum labels all of A with a. Since the map
lowers the energy of *every* labeling, the maps of all labels can be applied one after another to an
optimum: a node in several sets takes the last one's label, and the result is still optimal. Fixed nodes
then become unary terms of their free neighbours, and the test runs again on the smaller problem until it
fixes nothing more.

The classical isolating-cut persistency of multiway cut (Dahlhaus et al. 1994: the source side of a
terminal's minimum isolating cut stays with it) is the special case with m_u replaced by the weaker
T_ua-based bound; Kovtun's m_u is never smaller, so it fixes at least as much.

Written here: no maintained Python library offers Potts partial optimality; the max-flow is PyMaxflow's
(``graph.maxflow_moves.minimize_binary``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liid.graph.maxflow_moves import minimize_binary


@dataclass
class Reduction:
    """What persistency leaves to solve: the free nodes with the fixed ones folded into their unaries."""

    fixed: np.ndarray  # [n] label of each fixed node, -1 where free
    free: np.ndarray  # [f] node ids of the free nodes
    cost: np.ndarray  # [f, L] unary costs of the free nodes (inf where not allowed), fixed neighbours included
    edges: np.ndarray  # [m', 2] edges between free nodes, in local (0..f-1) ids
    weights: np.ndarray  # [m']
    constant: float  # energy of the fixed nodes: their unaries and the edges among them
    rounds: int


def _finite_big(cost: np.ndarray, weights: np.ndarray) -> float:
    """A capacity larger than any finite energy difference (PyMaxflow takes no inf)."""
    fin = cost[np.isfinite(cost)]
    return 1.0 + 2.0 * (float(np.abs(fin).sum()) + float(np.abs(weights).sum()))


def kovtun_sets(cost: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One round of the test on every label: per node, the label it can be fixed to, -1 if none.

    ``cost`` [n, L] holds inf where a label is not allowed; every node allows at least one label.
    """
    n, L = cost.shape
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out
    big = _finite_big(cost, weights)
    c = np.where(np.isfinite(cost), cost, big)
    # per node the two smallest costs give min over b != a for every a at once
    part = np.partition(c, 1, axis=1)[:, :2] if L > 1 else np.concatenate([c, np.full((n, 1), big)], 1)
    best, second = part[:, 0], part[:, 1]
    argbest = c.argmin(axis=1)
    allowed = np.isfinite(cost)
    zero = np.zeros(len(edges))
    for a in np.nonzero(allowed.any(axis=0))[0]:
        cand = allowed[:, a]
        m = np.where(argbest == a, second, best)  # min_{b != a} c_u(b) (ties: best == second)
        y0 = np.where(cand, m, 0.0)  # y = 0: not a
        y1 = np.where(cand, c[:, a], big)  # y = 1 forbidden where a is not allowed
        if not (cand & (c[:, a] <= m)).any():
            continue  # every node strictly prefers "not a": y = 0 is a minimiser, the set is empty
        y = minimize_binary(y0, y1, edges, zero, weights, weights, zero)
        y &= cand
        out[y] = a
    return out


def reduce(cost: np.ndarray, edges: np.ndarray, weights: np.ndarray, fixed: np.ndarray) -> Reduction:
    """Fold the fixed nodes into the unaries of the free ones (arrays in, arrays out)."""
    cost = np.asarray(cost, dtype=np.float64)
    n, L = cost.shape
    is_fixed = fixed >= 0
    free = np.nonzero(~is_fixed)[0]
    local = np.full(n, -1, dtype=np.int64)
    local[free] = np.arange(free.size)
    u, v = edges[:, 0], edges[:, 1]
    fu, fv = is_fixed[u], is_fixed[v]
    constant = float(cost[np.nonzero(is_fixed)[0], fixed[is_fixed]].sum())
    both = fu & fv
    constant += float(weights[both & (fixed[u] != fixed[v])].sum())
    red = cost[free].copy()
    for a, b, sel in ((u, v, ~fu & fv), (v, u, fu & ~fv)):  # a free, b fixed: pay w unless l_a = l_b
        i, lab, w = local[a[sel]], fixed[b[sel]], weights[sel]
        np.add.at(red, i, w[:, None] * np.ones((1, L)))
        np.add.at(red, (i, lab), -w)
    ff = ~fu & ~fv
    return Reduction(fixed=fixed, free=free, cost=red, edges=np.stack([local[u[ff]], local[v[ff]]], 1),
                     weights=weights[ff], constant=constant, rounds=0)


def persistency(cost: np.ndarray, edges: np.ndarray, weights: np.ndarray, max_rounds: int = 20) -> Reduction:
    """Fix what Kovtun's test can, round after round; returns the reduced problem.

    ``cost`` [n, L]: unary costs with inf where not allowed; ``edges`` [m, 2], ``weights`` [m] >= 0.
    """
    cost = np.asarray(cost, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64)
    n = cost.shape[0]
    fixed = np.full(n, -1, dtype=np.int64)
    single = np.isfinite(cost).sum(axis=1) == 1  # one allowed label: nothing to decide
    fixed[single] = np.isfinite(cost[single]).argmax(axis=1)
    red = reduce(cost, edges, weights, fixed)
    rounds = 0
    while rounds < max_rounds and red.free.size:
        rounds += 1
        sets = kovtun_sets(red.cost, red.edges, red.weights)
        new = sets >= 0
        if not new.any():
            break
        fixed = red.fixed.copy()
        fixed[red.free[new]] = sets[new]
        red = reduce(cost, edges, weights, fixed)
    red.rounds = rounds
    return red
