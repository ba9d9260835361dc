"""Standard multiway-cut instances (terminals are ordinary nodes) as a ``CutGraph``.

An edge node-terminal t becomes a terminal weight of label t; an edge between two terminals is always
cut, so it goes into the constant ``offset``; parallel edges add up; self-loops are ignored. The graph's
objective then equals the instance's cut value, and every node may take every label.
"""

from __future__ import annotations

import numpy as np

from graph.graph_file import CutGraph
from liid.errors import LiidError


def from_terminal_edges(num_nodes: int, terminals: list[int], edges: np.ndarray, where: str = "instance"
                        ) -> tuple[CutGraph, np.ndarray]:
    """Convert; returns the graph and ``node_ids`` (original id of each graph node)."""
    edges = np.asarray(edges, dtype=np.float64).reshape(-1, 3)
    term = np.asarray(terminals, dtype=np.int64)
    if len(set(term.tolist())) != len(term):
        raise LiidError(f"{where}: repeated terminal ids")
    if term.size < 2:
        raise LiidError(f"{where}: a multiway cut needs at least 2 terminals, got {term.size}")
    if (term < 0).any() or (term >= num_nodes).any():
        raise LiidError(f"{where}: terminal id out of range [0, {num_nodes})")
    u, v, w = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64), edges[:, 2]
    if len(edges) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= num_nodes):
        raise LiidError(f"{where}: edge endpoint out of range [0, {num_nodes})")
    if not np.isfinite(w).all() or (w < 0).any():
        raise LiidError(f"{where}: edge weights must be finite and >= 0")
    keep = u != v  # self-loops are ignored
    u, v, w = u[keep], v[keep], w[keep]
    tlabel = np.full(num_nodes, -1, dtype=np.int64)
    tlabel[term] = np.arange(term.size)
    node_ids = np.nonzero(tlabel < 0)[0]
    local = np.full(num_nodes, -1, dtype=np.int64)
    local[node_ids] = np.arange(node_ids.size)
    K = term.size
    tu, tv = tlabel[u] >= 0, tlabel[v] >= 0
    offset = float(w[tu & tv].sum())
    terminal = np.zeros((node_ids.size, K), dtype=np.float64)
    m = tu & ~tv
    np.add.at(terminal, (local[v[m]], tlabel[u[m]]), w[m])
    m = tv & ~tu
    np.add.at(terminal, (local[u[m]], tlabel[v[m]]), w[m])
    m = ~tu & ~tv
    a, b = local[u[m]], local[v[m]]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * max(node_ids.size, 1) + hi
    uniq, inv = np.unique(key, return_inverse=True)
    weights = np.bincount(inv, weights=w[m], minlength=uniq.size)  # parallel edges add up
    pairs = np.stack([uniq // max(node_ids.size, 1), uniq % max(node_ids.size, 1)], axis=1)
    nz = weights > 0
    g = CutGraph(terminal=terminal, allowed=np.ones_like(terminal, dtype=bool), edges=pairs[nz],
                 weights=weights[nz], classes=[f"t{t}" for t in term.tolist()], offset=offset)
    if node_ids.size == 0:
        raise LiidError(f"{where}: the instance has no non-terminal nodes")
    return g.with_components(), node_ids
