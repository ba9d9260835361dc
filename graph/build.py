"""Build the knowledge graph of LIID section 5.2 from a feature store."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from liid.graph.feature_store import FeatureStore
from liid.graph.graph_file import CutGraph
from liid.graph.knn import KnnConfig, UnitRows, feature_mean, knn, normalized, recall_at_k
from liid.graph.weights import DELTA, pair_weights, share_foreground_label, symmetrise, terminal_weights
from liid.memory import peak_gb, reset_peak

NEIGHBOURS = ("all", "cross-image")
LABEL_RULES = ("image", "all")


@dataclass(frozen=True)
class GraphConfig:
    knn: KnnConfig = field(default_factory=KnnConfig)
    delta: float = DELTA  # eq. (10)
    same_label_pairs: bool = False  # reference-code rule: keep a pair only if the images share a label
    neighbours: str = "all"  # "all" (the paper) | "cross-image": a proposal's k neighbours from other images only
    centre: bool = False  # cosine of the features minus the dataset mean (the paper: of the raw features)
    labels: str = "image"  # "image": a node may take its image's labels + background; "all": eq. 10 as written
    mutual: bool = False  # keep a pair only when each is among the other's k neighbours (the paper: either)

    def __post_init__(self) -> None:
        if self.neighbours not in NEIGHBOURS:
            raise ValueError(f"neighbours must be one of {NEIGHBOURS}, got {self.neighbours!r}")
        if self.labels not in LABEL_RULES:
            raise ValueError(f"labels must be one of {LABEL_RULES}, got {self.labels!r}")

    def to_json(self) -> dict:
        return {"knn": asdict(self.knn), "delta": self.delta, "same_label_pairs": self.same_label_pairs,
                "neighbours": self.neighbours, "centre": self.centre, "labels": self.labels, "mutual": self.mutual}


def size_histogram(component: np.ndarray) -> dict[str, int]:
    """Component sizes binned by powers of two: {"1": c, "2-3": c, "4-7": c, ...}."""
    sizes = np.bincount(component)
    hist: dict[str, int] = {}
    lo = 1
    while lo <= sizes.max():
        hi = 2 * lo - 1
        c = int(((sizes >= lo) & (sizes <= hi)).sum())
        if c:
            hist[str(lo) if lo == hi else f"{lo}-{hi}"] = c
        lo *= 2
    return hist


def _same_image_share(store: FeatureStore, edges: np.ndarray) -> float | None:
    if not len(edges):
        return None
    img = np.asarray(store.proposal_image)
    return float((img[edges[:, 0]] == img[edges[:, 1]]).mean())


IN_MEMORY_GB = 4.0  # the float32 copy of the unit features is made when it fits in this


def build_graph(store: FeatureStore, cfg: GraphConfig = GraphConfig(), recall_sample: int = 0, backend=None,
                scratch=None, in_memory_gb: float = IN_MEMORY_GB) -> tuple[CutGraph, dict]:
    """Nodes = proposals, terminal weights = masked p, edges = symmetrised kNN with weight delta*cos.

    ``backend`` (``liid.parallel.Backend``) and ``scratch`` run the kNN's shards (``cfg.knn.shards``).
    The unit features are one float32 matrix when it fits in ``in_memory_gb``; above, out of core: rows made
    chunk by chunk from the memory-mapped store (``knn.UnitRows``), the same graph, more time converting; the
    exact re-rank then reads the store in column slabs of at most ``in_memory_gb`` (``slab_cosines``), its
    cosines equal to the in-memory ones within float32 rounding."""
    t0 = time.perf_counter()
    centre = feature_mean(store.features) if cfg.centre else None
    n, d = store.features.shape
    out_of_core = n * d * 4 > in_memory_gb * 2**30
    x = (UnitRows(store.features, centre=centre, memory_bytes=in_memory_gb * 2**30) if out_of_core
         else normalized(store.features, centre=centre))
    t_knn = time.perf_counter()
    groups = np.asarray(store.proposal_image) if cfg.neighbours == "cross-image" else None
    idx, sim, info = knn(x, cfg.knn, groups=groups, backend=backend, scratch=scratch)
    info["seconds"] = time.perf_counter() - t_knn
    info["out_of_core"] = out_of_core
    if recall_sample:
        t_r = time.perf_counter()
        reset_peak()
        info["recall_at_k"] = recall_at_k(x, idx, recall_sample, cfg.knn.k, seed=cfg.knn.seed, groups=groups)
        info.setdefault("peak_rss_gb", {})["recall"] = peak_gb()
        info["recall_sample"] = int(min(recall_sample, x.shape[0]))
        info["recall_seconds"] = time.perf_counter() - t_r
    del x
    reset_peak()
    g, stats = graph_from_neighbours(store, idx, sim, cfg)
    info.setdefault("peak_rss_gb", {})["graph"] = peak_gb()
    peaks = {k: round(v, 2) for k, v in info.pop("peak_rss_gb").items() if v is not None}
    if peaks:  # per phase, when a benchmark tracks them (liid.memory.track_phases)
        info["peak_rss_gb"] = peaks
    stats["knn"] = info
    stats["seconds"] = time.perf_counter() - t0
    return g, stats


def graph_from_neighbours(store: FeatureStore, idx: np.ndarray, sim: np.ndarray, cfg: GraphConfig
                          ) -> tuple[CutGraph, dict]:
    """The graph from given neighbours ``idx`` [N, >=k] and similarities (the first ``cfg.knn.k`` used)."""
    k = cfg.knn.k
    idx, sim = idx[:, :k], sim[:, :k]
    allowed = store.allowed_labels()
    terminal = terminal_weights(store.probs, allowed)  # eq. 10: p masked by the image's labels, either rule
    if cfg.labels == "all":  # eq. 10 as written: only p is masked; export treats a label off the image as noise
        allowed = np.ones_like(allowed)
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), k)
    cols = idx.reshape(-1)
    s = sim.reshape(-1)
    keep = (cols >= 0) & (s > 0)  # non-positive similarity gives no edge
    dropped_label = 0
    if cfg.same_label_pairs:
        img = np.asarray(store.proposal_image)
        share = np.zeros_like(keep)
        share[keep] = share_foreground_label(store.image_labels, img[rows[keep]], img[cols[keep]])
        dropped_label = int((keep & ~share).sum())
        keep &= share
    dropped_mutual = 0
    if cfg.mutual:  # a directed pair survives only if its reverse is there too
        fwd = rows * n + cols
        back = np.isin(cols * n + rows, fwd[keep])
        dropped_mutual = int((keep & ~back).sum())
        keep &= back
    edges, esim = symmetrise(rows[keep], cols[keep], s[keep], n)
    weights = pair_weights(esim, cfg.delta)
    g = CutGraph(terminal=terminal, allowed=allowed, edges=edges, weights=weights,
                 classes=list(store.classes)).with_components()
    sizes = np.bincount(g.component)
    stats = {
        "nodes": n, "edges": int(len(edges)), "components": int(sizes.size),
        "largest_component": int(sizes.max()), "component_sizes": size_histogram(g.component),
        "components_over_1000": int((sizes > 1000).sum()),
        "nodes_in_components_over_1000": int(sizes[sizes > 1000].sum()),
        "pairs_dropped_no_shared_label": dropped_label,
        "pairs_dropped_not_mutual": dropped_mutual,
        # what the edges carry: how many join two proposals of one image, and how similar the linked pairs are
        "same_image_edges": _same_image_share(store, edges),
        "edge_cosine_median": float(np.median(esim)) if len(esim) else None,
    }
    g.meta = {"config": cfg.to_json(), "stats": stats}
    return g, stats
