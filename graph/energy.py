"""The multiway-cut objective for an integral labeling (Potts energy).

For x integral, eq. (11) with terminal edges T equals
    E(l) = sum_u (sum_k T[u, k] - T[u, l_u]) + sum_(u,v) w_uv [l_u != l_v] + offset,
i.e. each proposal pays the terminal edges it cuts, each pair pays its weight when separated.
"""

from __future__ import annotations

import numpy as np


def unary_cost(terminal: np.ndarray) -> np.ndarray:
    """Cost of each label per node: the weight of the terminal edges cut, sum_k T_uk - T_ul."""
    t = np.asarray(terminal, dtype=np.float64)
    return t.sum(axis=1, keepdims=True) - t


def labeling_cost(cost: np.ndarray, edges: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """Cut value of a labeling from per-label costs (``unary_cost``): unary part + separated pairs."""
    labels = np.asarray(labels, dtype=np.int64)
    unary = cost[np.arange(labels.shape[0]), labels].sum()
    cut = np.asarray(weights, dtype=np.float64)[labels[edges[:, 0]] != labels[edges[:, 1]]].sum() \
        if len(edges) else 0.0
    return float(unary + cut)


def potts_energy(terminal: np.ndarray, edges: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                 offset: float = 0.0) -> float:
    """Cut value of a labeling: terminal edges cut + proposal edges cut + constant offset."""
    return labeling_cost(unary_cost(terminal), edges, weights, labels) + float(offset)
