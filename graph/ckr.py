"""The Calinescu-Karloff-Rabani LP of the multiway cut, LIID eq. (11), with labels restricted per node.

    min  sum_u sum_k T_uk (1 - x_uk)  +  1/2 sum_(u,v) w_uv ||x_u - x_v||_1
    s.t. x_u in the simplex over the labels node u may take

A terminal edge contributes 1/2 ||x_u - e_k||_1 = 1 - x_uk, which is the first sum. Variables exist only
for allowed labels (x_uk = 0 otherwise), so an edge (u, v) needs an absolute-value variable d_uvk only
for labels both ends allow; a label only u allows contributes |x_uk - 0| = x_uk directly.
With x integral the objective is the Potts energy of ``graph.energy``.

The LP of several components at once is block diagonal, so one solve gives each block its own optimum;
``LinearProgram.block_values`` splits the objective per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csc_matrix

from liid.graph.energy import unary_cost


@dataclass
class LinearProgram:
    """min c.x + const  s.t.  row_lo <= A x <= row_hi,  col_lo <= x <= col_hi (arrays in, arrays out)."""

    c: np.ndarray
    A: csc_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    col_lo: np.ndarray
    col_hi: np.ndarray
    const: float
    num_x: int  # the first num_x columns are the assignment variables x_uk
    x_node: np.ndarray  # [num_x] node of each x column
    x_label: np.ndarray  # [num_x] label of each x column
    col_block: np.ndarray  # [num_cols] block (component) id of each column
    const_block: np.ndarray  # [num_blocks] constant part of the objective per block
    d_edge: np.ndarray | None = None  # [num_d] edge of each d column
    d_label: np.ndarray | None = None  # [num_d] label of each d column
    edges: np.ndarray | None = None  # [m, 2] the edges the program was built from

    def vector(self, labels: np.ndarray) -> np.ndarray:
        """The column vector of an integral labeling (x one-hot, d = |x_u - x_v|): a solver's start."""
        lab = np.asarray(labels)
        x = (self.x_label == lab[self.x_node]).astype(np.float64)
        if self.d_edge is None or not len(self.d_edge):
            return x
        e = self.edges[self.d_edge]
        d = (lab[e[:, 0]] == self.d_label) != (lab[e[:, 1]] == self.d_label)
        return np.concatenate([x, d.astype(np.float64)])

    def block_values(self, solution: np.ndarray, num_blocks: int) -> np.ndarray:
        """Objective value of each block at ``solution`` (the LP is separable by block)."""
        contrib = np.bincount(self.col_block, weights=self.c * solution, minlength=num_blocks)
        return contrib + self.const_block

    def labels(self, solution: np.ndarray, num_nodes: int) -> np.ndarray:
        """Per node, the label with the largest x (the integral labeling when x is integral)."""
        x = solution[: self.num_x]
        lab = np.zeros(num_nodes, dtype=np.int64)
        order = np.lexsort((-x, self.x_node))  # per node, largest x first (ties: lowest label)
        first = np.ones(order.shape[0], dtype=bool)
        first[1:] = self.x_node[order][1:] != self.x_node[order][:-1]
        sel = order[first]
        lab[self.x_node[sel]] = self.x_label[sel]
        return lab

    def is_integral(self, solution: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        """Per x column: is it 0 or 1 within ``tol``."""
        x = solution[: self.num_x]
        return (np.abs(x) <= tol) | (np.abs(x - 1) <= tol)


def ckr_lp(terminal: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray,
           block: np.ndarray | None = None, num_blocks: int = 1) -> LinearProgram:
    """Build eq. (11) for nodes 0..n-1 (local ids). ``block`` [n] assigns each node to a component."""
    # cost of label l: the weight of the terminal edges cut (graph.energy); with sum_k x_uk = 1,
    # sum_k T_uk (1 - x_uk) = sum_k cost_uk x_uk
    return ckr_lp_cost(unary_cost(terminal), allowed, edges, weights, block, num_blocks)


def ckr_lp_cost(cost: np.ndarray, allowed: np.ndarray, edges: np.ndarray, weights: np.ndarray,
                block: np.ndarray | None = None, num_blocks: int = 1) -> LinearProgram:
    """Eq. (11) from per-label unary costs [n, L] (any finite value where allowed; the rest is ignored):
    the form of the problem ``graph.persistency`` leaves and of ``graph.columns``' restricted programs."""
    allowed = np.asarray(allowed, dtype=bool)
    cost = np.where(allowed, np.asarray(cost, dtype=np.float64), 0.0)
    n, L = cost.shape
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    w = np.asarray(weights, dtype=np.float64)
    block = np.zeros(n, dtype=np.int64) if block is None else np.asarray(block, dtype=np.int64)

    # x columns: one per allowed (node, label), node-major
    x_node, x_label = np.nonzero(allowed)
    num_x = x_node.shape[0]
    xid = np.full((n, L), -1, dtype=np.int64)
    xid[x_node, x_label] = np.arange(num_x)
    c_x = cost[x_node, x_label].copy()

    u, v = edges[:, 0], edges[:, 1]
    au, av = allowed[u], allowed[v]
    # labels only one end allows: |x_uk - 0| = x_uk, add w/2 to that x's cost
    only_u = au & ~av
    eu, lu = np.nonzero(only_u)
    np.add.at(c_x, xid[u[eu], lu], 0.5 * w[eu])
    only_v = av & ~au
    ev, lv = np.nonzero(only_v)
    np.add.at(c_x, xid[v[ev], lv], 0.5 * w[ev])
    # labels both ends allow: d >= |x_uk - x_vk|
    ed, ld = np.nonzero(au & av)
    num_d = ed.shape[0]
    c_d = 0.5 * w[ed]

    # rows: n simplex equalities, then 2 rows per d:  d - x_u + x_v >= 0,  d + x_u - x_v >= 0
    d_col = num_x + np.arange(num_d)
    xu, xv = xid[u[ed], ld], xid[v[ed], ld]
    r1 = n + 2 * np.arange(num_d)
    r2 = r1 + 1
    rows = np.concatenate([x_node, r1, r1, r1, r2, r2, r2])
    cols = np.concatenate([np.arange(num_x), d_col, xu, xv, d_col, xu, xv])
    vals = np.concatenate([np.ones(num_x), np.ones(num_d), -np.ones(num_d), np.ones(num_d),
                           np.ones(num_d), np.ones(num_d), -np.ones(num_d)])
    num_rows = n + 2 * num_d
    A = csc_matrix((vals, (rows, cols)), shape=(num_rows, num_x + num_d))
    row_lo = np.concatenate([np.ones(n), np.zeros(2 * num_d)])
    row_hi = np.concatenate([np.ones(n), np.full(2 * num_d, np.inf)])
    col_lo = np.zeros(num_x + num_d)
    # x_uk <= 1 is implied by the simplex rows; leaving it out keeps the row duals a dual solution on their
    # own (sum_u pi_u = the optimum), which ``graph.columns`` prices with
    col_hi = np.full(num_x + num_d, np.inf)
    col_block = np.concatenate([block[x_node], block[u[ed]]])
    return LinearProgram(
        c=np.concatenate([c_x, c_d]), A=A, row_lo=row_lo, row_hi=row_hi, col_lo=col_lo, col_hi=col_hi,
        const=0.0, num_x=num_x, x_node=x_node, x_label=x_label, col_block=col_block,
        const_block=np.zeros(num_blocks), d_edge=ed, d_label=ld, edges=edges)


def textbook_ckr_lp(terminal: np.ndarray, edges: np.ndarray, weights: np.ndarray) -> LinearProgram:
    """The textbook formulation: every node gets all L labels (no restriction), for comparison only."""
    allowed = np.ones(np.asarray(terminal).shape, dtype=bool)
    return ckr_lp(terminal, allowed, edges, weights)
