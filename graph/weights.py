"""Edge weights of the knowledge graph, LIID eq. (10).

    w(u, v) = p_k(u)                     u a proposal, v = terminal k
            = 0                          u, v both terminals
            = delta * cos(f_u, f_v)      u, v proposals, v among u's k most similar others

The paper writes |cos|; with non-negative (ReLU + GAP) features the two agree. For features with
negative similarity we follow the reference rule "negative similarity gives no edge".
"""

from __future__ import annotations

import numpy as np

DELTA = 5.0  # eq. (10) balance factor, LIID Table 6 best value


def terminal_weights(probs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Eq. (10), proposal-terminal edges: p masked by the image's labels (background always kept)."""
    return np.where(allowed, np.asarray(probs, dtype=np.float32), np.float32(0))


def pair_weights(cos: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Eq. (10), proposal-proposal edges: delta * cos; non-positive similarity gives weight 0 (no edge)."""
    return np.where(cos > 0, delta * cos, 0.0)


def symmetrise(rows: np.ndarray, cols: np.ndarray, cos: np.ndarray, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edge list from directed kNN pairs: a pair present in either direction exists once.

    Returns ``edges`` [E, 2] (u < v, sorted) and the similarity of each edge. Self pairs are dropped.
    When both directions are present the two similarities are equal up to rounding; the larger is kept.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    keep = (rows != cols) & (cols >= 0)
    u = np.minimum(rows[keep], cols[keep])
    v = np.maximum(rows[keep], cols[keep])
    s = np.asarray(cos, dtype=np.float64)[keep]
    key = u * n + v
    order = np.lexsort((-s, key))  # by key, larger similarity first within a key
    key, s = key[order], s[order]
    first = np.ones(key.shape[0], dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, s = key[first], s[first]
    return np.stack([key // n, key % n], axis=1), s


def share_foreground_label(image_labels: np.ndarray, img_u: np.ndarray, img_v: np.ndarray) -> np.ndarray:
    """Reference-code pair rule: True where the two proposals' images share a foreground label."""
    lab = np.asarray(image_labels, dtype=bool)[:, 1:]
    return (lab[img_u] & lab[img_v]).any(axis=1)
