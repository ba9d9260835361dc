"""The graph directory: what ``liid build-graph`` writes and ``liid solve-cut`` reads (docs/FORMATS.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from liid.atomic import atomic_dir, load_npy, read_header, write_json
from liid.errors import LiidError

FORMAT = "liid.graph"
VERSION = 1


@dataclass
class CutGraph:
    """A multiway-cut instance: nodes with terminal weights and allowed labels, weighted node edges.

    The cut value of a labeling ``l`` is ``graph.energy.potts_energy(terminal, edges, weights, l, offset)``.
    """

    terminal: np.ndarray  # [N, L] weight of the edge node-terminal k (eq. 10: masked p)
    allowed: np.ndarray  # [N, L] bool, labels a node may take
    edges: np.ndarray  # [E, 2] int64, u < v
    weights: np.ndarray  # [E] float64, > 0
    classes: list[str]  # L label names
    offset: float = 0.0  # constant added to the objective (terminal-terminal edges of an instance)
    component: np.ndarray | None = None  # [N] int32 component id, 0..C-1 ordered by smallest node
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return int(self.terminal.shape[0])

    @property
    def num_components(self) -> int:
        return int(self.component.max()) + 1 if self.component is not None and self.num_nodes else 0

    def with_components(self) -> CutGraph:
        """Label connected components (eq. 12) with scipy; each is an independent multiway cut."""
        _, comp = components(self.num_nodes, self.edges)
        self.component = comp.astype(np.int32)
        return self


def components(num_nodes: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of an undirected graph (scipy): their number and each node's component."""
    if num_nodes == 0:
        return 0, np.zeros(0, dtype=np.int64)
    adj = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_nodes, num_nodes))
    return connected_components(adj, directed=False)


def validate_graph(g: CutGraph, where: str = "graph") -> None:
    """Check shapes and values at the boundary."""
    n, L = g.terminal.shape if g.terminal.ndim == 2 else (-1, -1)
    if g.terminal.ndim != 2 or n == 0:
        raise LiidError(f"{where}/terminal.npy: expected a non-empty [N, L] array, got {g.terminal.shape}")
    if g.allowed.shape != (n, L):
        raise LiidError(f"{where}/allowed.npy: shape {g.allowed.shape} does not match terminal {(n, L)}")
    if len(g.classes) != L:
        raise LiidError(f"{where}/graph.json: {len(g.classes)} classes but {L} label columns")
    if not np.isfinite(g.terminal).all() or (g.terminal < 0).any():
        raise LiidError(f"{where}/terminal.npy: terminal weights must be finite and >= 0")
    if not g.allowed.any(axis=1).all():
        node = int(np.argmin(g.allowed.any(axis=1)))
        raise LiidError(f"{where}/allowed.npy: node {node} has no allowed label")
    if g.edges.ndim != 2 or g.edges.shape[1] != 2 or g.weights.shape != (g.edges.shape[0],):
        raise LiidError(f"{where}: edges {g.edges.shape} and weights {g.weights.shape} do not match")
    if len(g.edges) and (g.edges.min() < 0 or g.edges.max() >= n):
        raise LiidError(f"{where}/edges.npy: node id out of range [0, {n})")
    if not np.isfinite(g.weights).all() or (g.weights < 0).any():
        raise LiidError(f"{where}/weights.npy: edge weights must be finite and >= 0")
    if g.component is not None:
        if g.component.shape != (n,) or not np.issubdtype(g.component.dtype, np.integer):
            raise LiidError(f"{where}/component.npy: shape {g.component.shape} {g.component.dtype}, "
                            f"expected ({n},) integers")
        if g.component.min() < 0 or (len(g.edges) and (g.component[g.edges[:, 0]]
                                                        != g.component[g.edges[:, 1]]).any()):
            raise LiidError(f"{where}/component.npy: not a component labeling of the edges "
                            f"(negative id or an edge between two components)")


def save_graph(path: str | os.PathLike, g: CutGraph, overwrite: bool = False) -> Path:
    """Write a graph directory atomically."""
    validate_graph(g)
    if g.component is None:
        g.with_components()
    with atomic_dir(path, overwrite=overwrite) as tmp:
        np.save(tmp / "terminal.npy", np.ascontiguousarray(g.terminal))
        np.save(tmp / "allowed.npy", np.ascontiguousarray(g.allowed, dtype=bool))
        np.save(tmp / "edges.npy", np.ascontiguousarray(g.edges, dtype=np.int64))
        np.save(tmp / "weights.npy", np.ascontiguousarray(g.weights, dtype=np.float64))
        np.save(tmp / "component.npy", np.ascontiguousarray(g.component, dtype=np.int32))
        write_json(tmp / "graph.json", {
            "format": FORMAT, "version": VERSION, "classes": list(g.classes), "offset": float(g.offset),
            "nodes": g.num_nodes, "edges": int(len(g.edges)), "components": g.num_components, **g.meta,
        })
    return Path(path)


def load_graph(path: str | os.PathLike) -> CutGraph:
    """Read and validate a graph directory."""
    path = Path(path)
    meta = read_header(path, "graph.json", FORMAT, VERSION, "graph")
    if not isinstance(meta.get("classes"), list) or not isinstance(meta.get("offset", 0.0), (int, float)) \
            or not isinstance(meta.get("components", 0), int):
        raise LiidError(f"{path}/graph.json: needs a list 'classes', a number 'offset' and an integer "
                        f"'components'")
    arr = {k: load_npy(path / f"{k}.npy") for k in ("terminal", "allowed", "edges", "weights", "component")}
    g = CutGraph(terminal=arr["terminal"], allowed=arr["allowed"].astype(bool, copy=False),
                 edges=arr["edges"].astype(np.int64, copy=False),
                 weights=arr["weights"].astype(np.float64, copy=False),
                 classes=[str(c) for c in meta.get("classes", [])], offset=float(meta.get("offset", 0.0)),
                 component=arr["component"].astype(np.int32, copy=False),
                 meta={k: v for k, v in meta.items() if k not in ("format", "version", "classes", "offset")})
    validate_graph(g, str(path))
    n_comp = int(g.component.max()) + 1
    if n_comp != int(meta.get("components", n_comp)):
        raise LiidError(f"{path}/component.npy: {n_comp} components, graph.json says {meta['components']}")
    return g
