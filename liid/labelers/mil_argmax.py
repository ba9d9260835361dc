"""``mil-argmax``: each proposal takes the MIL network's most probable label, without the graph.

LIID's "w/o graph" ablation (Tables 1-5). The argmax runs over the labels the graph would let the
proposal take (its image's labels and background, as the terminal edges of eq. 10), so the two differ
only by the graph's pairwise term.
"""

from __future__ import annotations

import numpy as np

from liid.graph.feature_store import FeatureStore


def mil_argmax_labels(store: FeatureStore, restrict_to_image_labels: bool = True, chunk: int = 1 << 18) -> np.ndarray:
    """int32 [N]: ``argmax_k p_k`` per proposal (0 = background), over allowed labels unless told otherwise."""
    out = np.empty(store.num_proposals, dtype=np.int32)
    labels = np.asarray(store.image_labels, dtype=bool)
    for s in range(0, store.num_proposals, chunk):
        p = np.asarray(store.probs[s:s + chunk], dtype=np.float32)
        if restrict_to_image_labels:
            allowed = labels[np.asarray(store.proposal_image[s:s + chunk])]
            allowed[:, 0] = True
            p = np.where(allowed, p, -1.0)
        out[s:s + chunk] = p.argmax(axis=1)
    return out
