"""Exact binary cuts and alpha-expansion moves with max-flow (PyMaxflow, Boykov-Kolmogorov).

Written here because no maintained Python library does Potts alpha-expansion with per-node label
restrictions (gco wrappers are unmaintained and have no label masks); the max-flow itself is PyMaxflow's.
"""

from __future__ import annotations

import maxflow
import numpy as np

from liid.graph.energy import labeling_cost, unary_cost

_EPS = 1e-12


def minimize_binary(u0: np.ndarray, u1: np.ndarray, edges: np.ndarray, e00: np.ndarray, e01: np.ndarray,
                    e10: np.ndarray, e11: np.ndarray) -> np.ndarray:
    """Exact minimiser of sum_u U_u(y_u) + sum_(u,v) E_uv(y_u, y_v) over y in {0,1}^n (submodular E).

    One s-t min cut (Kolmogorov-Zabih construction). Returns y as a bool array.
    """
    n = u0.shape[0]
    if np.any(e00 + e11 > e01 + e10 + 1e-9 * (1 + np.abs(e01 + e10))):
        raise ValueError("pairwise terms are not submodular")
    lin = np.asarray(u1, dtype=np.float64) - np.asarray(u0, dtype=np.float64)
    u, v = edges[:, 0], edges[:, 1]
    # E(yu, yv) = A + (C - A) yu + (D - C) yv + (B + C - A - D)(1 - yu) yv
    np.add.at(lin, u, e10 - e00)
    np.add.at(lin, v, e11 - e10)
    lam = np.maximum(e01 + e10 - e00 - e11, 0.0)
    g = maxflow.Graph[float](n, len(edges))
    nodes = g.add_nodes(n)
    # a positive linear term is paid when y = 1 (sink side: the source edge is cut), a negative one when y = 0
    g.add_grid_tedges(nodes, np.maximum(lin, 0.0), np.maximum(-lin, 0.0))
    keep = lam > 0
    if keep.any():
        g.add_edges(u[keep].astype(np.int32), v[keep].astype(np.int32), lam[keep], np.zeros(int(keep.sum())))
    g.maxflow()
    return np.asarray(g.get_grid_segments(nodes), dtype=bool)


def binary_structure(allowed: np.ndarray) -> tuple[int, np.ndarray] | None:
    """If every node allows at most two labels and one label ``c`` is allowed everywhere, return
    ``(c, other)`` where ``other[u]`` is u's second label (``c`` if it has none); else None.

    Then the cut is the binary problem y_u = [l_u != c], and its pair terms (0, w[c!=a_v], w[a_u!=c],
    w[a_u!=a_v]) are submodular, so one max-flow solves it exactly. This covers components whose nodes
    all come from single-label images, whatever their classes. Its CKR LP is integral too: with x_u on
    the segment between e_c and e_{a_u}, each edge term is |t_u - t_v| or max(t_u, t_v), Lovasz extensions
    of submodular set functions, so the LP minimum equals the integral minimum.
    """
    allowed = np.asarray(allowed, dtype=bool)
    counts = allowed.sum(axis=1)
    if counts.max() > 2:
        return None
    common = np.nonzero(allowed.all(axis=0))[0]
    if common.size == 0:
        return None
    c = int(common[0])
    rest = allowed.copy()
    rest[:, c] = False
    other = np.where(rest.any(axis=1), rest.argmax(axis=1), c)
    return c, other


def binary_cut(terminal: np.ndarray, c: int, other: np.ndarray, edges: np.ndarray,
               weights: np.ndarray) -> np.ndarray:
    """Exact labeling when ``binary_structure`` applies: each node takes ``c`` or ``other[u]``."""
    return binary_cut_cost(unary_cost(terminal), c, other, edges, weights)


def binary_cut_cost(cost: np.ndarray, c: int, other: np.ndarray, edges: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """``binary_cut`` from per-label unary costs [n, L]."""
    n = cost.shape[0]
    idx = np.arange(n)
    w = np.asarray(weights, dtype=np.float64)
    au, av = other[edges[:, 0]], other[edges[:, 1]]
    e01 = w * (av != c)
    e10 = w * (au != c)
    e11 = w * (au != av)
    y = minimize_binary(cost[idx, c], cost[idx, other], edges, np.zeros_like(w), e01, e10, e11)
    return np.where(y, other, c).astype(np.int64)


def alpha_expansion(terminal: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray,
                    labels: np.ndarray, max_sweeps: int = 50) -> np.ndarray:
    """Improve an allowed labeling by expansion moves until no move lowers the Potts energy.

    Each move is exact (one max-flow); the result is within a factor 2 of the optimum (Boykov et al.).
    """
    return alpha_expansion_cost(unary_cost(terminal), allowed, edges, weights, labels, max_sweeps)


def alpha_expansion_cost(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray,
                         labels: np.ndarray, max_sweeps: int = 50) -> np.ndarray:
    """``alpha_expansion`` from per-label unary costs [n, L] (finite where allowed)."""
    cost = np.where(np.asarray(allowed, dtype=bool), np.asarray(cost, dtype=np.float64), 0.0)
    allowed = np.asarray(allowed, dtype=bool)
    lab = np.asarray(labels, dtype=np.int64).copy()
    w = np.asarray(weights, dtype=np.float64)
    u, v = edges[:, 0], edges[:, 1]
    n = lab.shape[0]

    best = labeling_cost(cost, edges, w, lab)
    for _ in range(max_sweeps):
        improved = False
        for alpha in np.nonzero(allowed.any(axis=0))[0]:
            var = allowed[:, alpha] & (lab != alpha)
            if not var.any():
                continue
            vid = np.full(n, -1)
            vid[var] = np.arange(int(var.sum()))
            u0 = cost[var, lab[var]].copy()
            u1 = cost[var, alpha].copy()
            both = var[u] & var[v]
            # one end variable, the other fixed: the pair term becomes a unary term of the variable end
            for a, b in ((u, v), (v, u)):
                m = var[a] & ~var[b]
                np.add.at(u0, vid[a[m]], w[m] * (lab[a[m]] != lab[b[m]]))
                np.add.at(u1, vid[a[m]], w[m] * (lab[b[m]] != alpha))
            pe = np.stack([vid[u[both]], vid[v[both]]], axis=1)
            wb = w[both]
            y = minimize_binary(u0, u1, pe, wb * (lab[u[both]] != lab[v[both]]), wb, wb, np.zeros_like(wb))
            cand = lab.copy()
            cand[np.nonzero(var)[0][y]] = alpha
            e = labeling_cost(cost, edges, w, cand)
            if e < best - _EPS * (1 + abs(best)):
                lab, best, improved = cand, e, True
        if not improved:
            break
    return lab
