"""Why did this proposal get this label: the neighbourhood of one node of a graph folder, with the cut's labels.

Three layers, each usable without the one above (``liid inspect`` is a thin command over the last):

* arrays in, arrays out: ``adjacency`` (each node's edges, heaviest first), ``bfs`` (the nodes within ``hops``
  edges of a node, each node following at most ``max_neighbours`` of its heaviest edges), ``neighbourhood``
  (that subgraph of a ``CutGraph`` with the cut's labels: terminal weights, induced edges, and the centre's
  local cost of every label with every other node's label fixed: the number that says why the cut chose it);
* folders in: ``inspect_node(graph_dir, cut_dir, dataset, proposals_dir, node)`` reads the graph (memory
  mapped), the cut (checked to be a cut of this graph), the feature store the graph was built from (node ``u`` is
  its row ``u``: an image id and a proposal index), and the crops of the centre and its strongest neighbours
  from the dataset's images and the proposal store's masks; ``pick_nodes`` chooses nodes worth a look;
* out: ``to_networkx`` / ``graphml_bytes`` (Gephi, Cytoscape: proposals, optionally the terminals as nodes of
  kind "terminal"), ``to_json`` (the same facts as numbers), ``figure`` / ``draw_neighbourhood`` (a matplotlib
  ``Figure`` drawn with Agg, no pyplot state).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from liid.atomic import load_npy, read_header, read_json, write_bytes
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.graph.graph_file import FORMAT as GRAPH_FORMAT
from liid.graph.graph_file import VERSION as GRAPH_VERSION
from liid.graph.graph_file import CutGraph

FORMAT = "liid.inspect"
VERSION = 1
BACKGROUND_TINT = (255, 255, 0)  # the tint of a proposal the cut calls background or noise

# ------------------------------------------------------------------------------------------ arrays


@dataclass(frozen=True)
class Adjacency:
    """Every node's edges, each node's heaviest first (ties: the smaller neighbour id first)."""

    indptr: np.ndarray  # int64 [N + 1]
    neighbour: np.ndarray  # int64 [2E]
    weight: np.ndarray  # float64 [2E]

    def row(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """The neighbours of ``u`` and the edge weights, heaviest first."""
        s, e = int(self.indptr[u]), int(self.indptr[u + 1])
        return self.neighbour[s:e], self.weight[s:e]

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.indptr)


def adjacency(num_nodes: int, edges: np.ndarray, weights: np.ndarray) -> Adjacency:
    """The ``Adjacency`` of an undirected edge list (``edges`` [E, 2], each pair once)."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    u = np.concatenate([edges[:, 0], edges[:, 1]])
    v = np.concatenate([edges[:, 1], edges[:, 0]])
    ww = np.concatenate([w, w])
    order = np.lexsort((v, -ww, u))
    u, v, ww = u[order], v[order], ww[order]
    return Adjacency(np.searchsorted(u, np.arange(num_nodes + 1)).astype(np.int64), v, ww)


def bfs(adj: Adjacency, centre: int, hops: int, max_neighbours: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The nodes within ``hops`` edges of ``centre`` and each one's distance: the centre first, then hop by
    hop in the order found. A node follows only its ``max_neighbours`` heaviest edges (0: all of them)."""
    dist = {int(centre): 0}
    order, frontier = [int(centre)], [int(centre)]
    for h in range(1, hops + 1):
        found: list[int] = []
        for x in frontier:
            nb, _ = adj.row(x)
            for y in (nb[:max_neighbours] if max_neighbours else nb).tolist():
                if y not in dist:
                    dist[y] = h
                    order.append(y)
                    found.append(y)
        if not found:
            break
        frontier = found
    return np.asarray(order, dtype=np.int64), np.asarray([dist[n] for n in order], dtype=np.int64)


def local_costs(terminal: np.ndarray, allowed: np.ndarray, neighbour_weights: np.ndarray,
                neighbour_labels: np.ndarray) -> np.ndarray:
    """The cut value a node adds for each label ``l`` with every other node's label fixed: the terminal edges it
    cuts (``sum_k terminal[k] - terminal[l]``) plus the edges to neighbours labeled otherwise; ``inf`` for a
    label it may not take. An optimal cut gives every node a label of least local cost."""
    t = np.asarray(terminal, dtype=np.float64)
    w = np.asarray(neighbour_weights, dtype=np.float64)
    lab = np.asarray(neighbour_labels, dtype=np.int64)
    pull = np.bincount(lab, weights=w, minlength=t.shape[0])[:t.shape[0]]  # edge weight to each label
    cost = t.sum() - t + (w.sum() - pull)
    return np.where(np.asarray(allowed, dtype=bool), cost, np.inf)


def masked_argmax(terminal: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per row, the allowed label of largest terminal weight (what the node would take without edges)."""
    return np.where(np.asarray(allowed, dtype=bool), np.asarray(terminal, dtype=np.float64), -np.inf).argmax(axis=-1)


@dataclass
class Neighbourhood:
    """The subgraph around one node, with the cut's labels; row ``i`` of each per-node field is ``nodes[i]``."""

    centre: int
    hops: int
    max_neighbours: int  # 0: every edge followed
    classes: list[str]  # L label names (background first)
    nodes: np.ndarray  # int64 [n] graph node ids: the centre first, then hop by hop
    hop: np.ndarray  # int64 [n] distance from the centre
    terminal: np.ndarray  # float64 [n, L] terminal weights
    allowed: np.ndarray  # bool [n, L]
    labels: np.ndarray  # int64 [n] the cut's labels
    component: np.ndarray  # int64 [n] connected component
    degree: np.ndarray  # int64 [n] edges in the whole graph
    edges: np.ndarray  # int64 [m, 2] every graph edge between two nodes of the neighbourhood (graph ids, u < v)
    weights: np.ndarray  # float64 [m]
    neighbours: np.ndarray  # int64 [d] all the centre's neighbours in the graph, heaviest edge first
    neighbour_weights: np.ndarray  # float64 [d]
    neighbour_labels: np.ndarray  # int64 [d] their cut labels
    local_cost: np.ndarray  # float64 [L] the centre's local cost of each label (inf: not allowed)
    image_ids: list[str] | None = None  # [n] the image of each node (from the feature store)
    proposals: np.ndarray | None = None  # int64 [n] the proposal index within its image
    image_labels: np.ndarray | None = None  # bool [n, L] the node's image's labels (background always True)
    neighbour_images: list[str] | None = None  # [d] the image of each of the centre's neighbours
    neighbour_proposals: np.ndarray | None = None  # int64 [d]
    neighbour_image_labels: np.ndarray | None = None  # bool [d, L]
    component_record: dict | None = None  # the cut's components.jsonl line of the centre's component
    crops: dict[int, np.ndarray] = field(default_factory=dict)  # graph node id → uint8 RGB crop, mask tinted
    sources: dict[str, str] = field(default_factory=dict)  # graph, cut, features, proposals, dataset

    def row(self, node: int) -> int:
        hit = np.flatnonzero(self.nodes == node)
        if not len(hit):
            raise KeyError(node)
        return int(hit[0])

    @property
    def label(self) -> int:
        """The centre's cut label."""
        return int(self.labels[0])

    @property
    def terminal_argmax(self) -> np.ndarray:
        """[n] each node's allowed label of largest terminal weight."""
        return masked_argmax(self.terminal, self.allowed)

    def on_image(self, i: int, k: int) -> bool:
        """Whether label ``k`` is one of row ``i``'s image labels (or allowed, without a feature store)."""
        have = self.image_labels if self.image_labels is not None else self.allowed
        return bool(k == 0 or have[i, k])

    def label_name(self, i: int, k: int | None = None) -> str:
        """The name of label ``k`` (default: the cut's) of row ``i``: background, a class, or noise for a class
        that is not one of its image's labels (``liid export`` drops it, as background)."""
        k = int(self.labels[i]) if k is None else int(k)
        return label_name(self.classes, k, self.on_image(i, k))

    def neighbour_on_image(self, p: int) -> bool:
        """Whether the cut's label of the centre's neighbour ``p`` is one of its image's labels."""
        k = int(self.neighbour_labels[p])
        if k == 0:
            return True
        if self.neighbour_image_labels is not None:
            return bool(self.neighbour_image_labels[p, k])
        return self.on_image(self.row(int(self.neighbours[p])), k) if (self.nodes == self.neighbours[p]).any() \
            else True

    def neighbour_label_name(self, p: int) -> str:
        """The name of the cut's label of the centre's neighbour ``p`` (``label_name``'s rule)."""
        return label_name(self.classes, int(self.neighbour_labels[p]), self.neighbour_on_image(p))

    def neighbour_describe(self, p: int) -> str:
        if self.neighbour_images is None or self.neighbour_proposals is None:
            return f"node {int(self.neighbours[p])}"
        return f"{self.neighbour_images[p]} #{int(self.neighbour_proposals[p])}"

    def describe(self, i: int) -> str:
        """``image #proposal`` of row ``i`` (``node N`` without a feature store)."""
        if self.image_ids is None or self.proposals is None:
            return f"node {int(self.nodes[i])}"
        return f"{self.image_ids[i]} #{int(self.proposals[i])}"


def label_name(classes: Sequence[str], k: int, on_image: bool = True) -> str:
    """``background`` for 0, the class name, or ``noise (<class>)`` for a class off the proposal's image."""
    if k == 0:
        return "background"
    return classes[k] if on_image else f"noise ({classes[k]})"


def neighbourhood(g: CutGraph, labels: np.ndarray, centre: int, hops: int = 1, max_neighbours: int = 12,
                  adj: Adjacency | None = None) -> Neighbourhood:
    """The subgraph of ``g`` within ``hops`` edges of ``centre`` (each node following its ``max_neighbours``
    heaviest edges; 0: all), with the cut's ``labels`` [N]. ``adj``: ``adjacency(g)`` when already built."""
    n = g.num_nodes
    if not 0 <= centre < n:
        raise LiidError(f"node {centre} out of range [0, {n})")
    if hops < 0 or max_neighbours < 0:
        raise LiidError(f"hops ({hops}) and max_neighbours ({max_neighbours}) must be >= 0")
    adj = adj if adj is not None else adjacency(n, g.edges, g.weights)
    nodes, hop = bfs(adj, centre, hops, max_neighbours)
    inside = np.zeros(n, dtype=bool)
    inside[nodes] = True
    edges = np.asarray(g.edges, dtype=np.int64)
    sel = np.flatnonzero(inside[edges[:, 0]] & inside[edges[:, 1]]) if len(edges) else np.zeros(0, np.int64)
    nb, w = adj.row(centre)
    labels = np.asarray(labels)
    terminal = np.asarray(g.terminal[nodes], dtype=np.float64)
    allowed = np.asarray(g.allowed[nodes], dtype=bool)
    comp = np.asarray(g.component[nodes], dtype=np.int64) if g.component is not None else np.zeros(len(nodes), np.int64)
    return Neighbourhood(
        centre=int(centre), hops=int(hops), max_neighbours=int(max_neighbours), classes=list(g.classes),
        nodes=nodes, hop=hop, terminal=terminal, allowed=allowed, labels=labels[nodes].astype(np.int64),
        component=comp, degree=adj.degree[nodes].astype(np.int64), edges=edges[sel].copy(),
        weights=np.asarray(g.weights[sel], dtype=np.float64), neighbours=nb.copy(), neighbour_weights=w.copy(),
        neighbour_labels=labels[nb].astype(np.int64),
        local_cost=local_costs(terminal[0], allowed[0], w, labels[nb]))


# ------------------------------------------------------------------------------------------ folders


@dataclass
class StoreIndex:
    """What a feature store says about each node: its image and its proposal index (no features read)."""

    path: Path
    classes: list[str]
    images: list[str]
    proposal_image: np.ndarray  # [N]
    proposal_index: np.ndarray  # [N]
    image_labels: np.ndarray  # [I, K+1] bool

    def labels_of(self, nodes: np.ndarray) -> np.ndarray:
        lab = np.asarray(self.image_labels, dtype=bool)[np.asarray(self.proposal_image[nodes], dtype=np.int64)]
        lab[:, 0] = True
        return lab

    def node_of(self, image_id: str, proposal: int) -> int:
        """The row (graph node) of proposal ``proposal`` of image ``image_id``."""
        try:
            i = self.images.index(image_id)
        except ValueError:
            raise LiidError(f"{self.path}/store.json: no image {image_id!r} in the feature store "
                            f"({len(self.images)} images)") from None
        rows = np.flatnonzero((np.asarray(self.proposal_image) == i) & (np.asarray(self.proposal_index) == proposal))
        if not len(rows):
            have = int((np.asarray(self.proposal_image) == i).sum())
            raise LiidError(f"{self.path}/proposal_index.npy: image {image_id!r} has no proposal {proposal} in the "
                            f"feature store ({have} of its proposals are)")
        return int(rows[0])


def read_store_index(path: str | os.PathLike) -> StoreIndex:
    """A feature store's image/proposal arrays and labels (memory mapped; features and probabilities unread)."""
    path = Path(path)
    meta = read_header(path, "store.json", "liid.feature_store", 1, "feature store")
    for key in ("classes", "images"):
        if not isinstance(meta.get(key), list):
            raise LiidError(f"{path}/store.json: missing list {key!r}")
    arr = {k: load_npy(path / f"{k}.npy", mmap=True) for k in ("proposal_image", "proposal_index", "image_labels")}
    pi, px, lab = arr["proposal_image"], arr["proposal_index"], arr["image_labels"]
    images, classes = [str(i) for i in meta["images"]], [str(c) for c in meta["classes"]]
    if pi.ndim != 1 or px.shape != pi.shape or not np.issubdtype(pi.dtype, np.integer) \
            or not np.issubdtype(px.dtype, np.integer):
        raise LiidError(f"{path}: proposal_image.npy {pi.shape} and proposal_index.npy {px.shape} must be equal-length "
                        "integer arrays")
    if lab.shape != (len(images), len(classes)):
        raise LiidError(f"{path}/image_labels.npy: shape {lab.shape}, expected {(len(images), len(classes))}")
    if len(pi) and (pi.min() < 0 or pi.max() >= len(images)):
        raise LiidError(f"{path}/proposal_image.npy: image index out of range [0, {len(images)})")
    return StoreIndex(path, classes, images, pi, px, lab)


def _recorded_path(value: object, json_file: Path, key: str) -> Path:
    """A path a JSON file records: absolute as is; relative from the current directory, else beside the file."""
    if not isinstance(value, str) or not value:
        raise LiidError(f"{json_file}: records no {key}; pass the feature store (--features)")
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    if (json_file.parent / p).exists():
        return json_file.parent / p
    raise LiidError(f"{json_file}: {key} {value!r} not found; pass the feature store (--features)")


def open_graph(graph_dir: str | os.PathLike) -> CutGraph:
    """A graph folder memory mapped, its shapes and edges checked (the terminal rows are checked as they are
    read: a COCO-size graph is never loaded whole)."""
    path = Path(graph_dir)
    meta = read_header(path, "graph.json", GRAPH_FORMAT, GRAPH_VERSION, "graph")
    if not isinstance(meta.get("classes"), list):
        raise LiidError(f"{path}/graph.json: needs a list 'classes'")
    arr = {k: load_npy(path / f"{k}.npy", mmap=True) for k in ("terminal", "allowed", "edges", "weights", "component")}
    t, a, e, w, c = (arr[k] for k in ("terminal", "allowed", "edges", "weights", "component"))
    classes = [str(k) for k in meta["classes"]]
    if t.ndim != 2 or t.shape[1] != len(classes) or a.shape != t.shape or c.shape != (t.shape[0],):
        raise LiidError(f"{path}: terminal.npy {t.shape}, allowed.npy {a.shape}, component.npy {c.shape} and "
                        f"{len(classes)} classes do not match")
    if e.ndim != 2 or e.shape[1] != 2 or w.shape != (e.shape[0],):
        raise LiidError(f"{path}: edges.npy {e.shape} and weights.npy {w.shape} do not match")
    if len(e) and (e.min() < 0 or e.max() >= t.shape[0]):
        raise LiidError(f"{path}/edges.npy: node id out of range [0, {t.shape[0]})")
    if len(w) and not (np.isfinite(w).all() and w.min() >= 0):
        raise LiidError(f"{path}/weights.npy: edge weights must be finite and >= 0")
    return CutGraph(terminal=t, allowed=a, edges=e, weights=w, classes=classes,
                    offset=float(meta.get("offset", 0.0) or 0.0), component=c,
                    meta={k: v for k, v in meta.items() if k not in ("format", "version", "classes", "offset")})


def read_cut(cut_dir: str | os.PathLike, graph_dir: str | os.PathLike, g: CutGraph) -> tuple[np.ndarray, dict]:
    """The cut's labels [N] and its summary, checked to be a cut of ``g``: as many labels as nodes, each a label of
    the graph, and (when the cut records it) the fingerprint of the graph folder it was solved on."""
    cut = Path(cut_dir)
    if not cut.is_dir():
        raise LiidError(f"{cut}: cut directory not found")
    labels = load_npy(cut / "labels.npy", mmap=True)
    summary_file = cut / "summary.json"
    summary = read_json(summary_file) if summary_file.exists() else {}
    if not isinstance(summary, dict):
        raise LiidError(f"{summary_file}: expected a JSON object")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise LiidError(f"{cut}/labels.npy: expected a 1-d integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != g.num_nodes:
        raise LiidError(f"{cut}/labels.npy: {len(labels)} labels but the graph {graph_dir} has {g.num_nodes} nodes: "
                        "the cut was made from another graph")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(g.classes)):
        raise LiidError(f"{cut}/labels.npy: labels outside [0, {len(g.classes)}) (the graph's labels)")
    if isinstance(summary.get("classes"), list) and [str(c) for c in summary["classes"]] != g.classes:
        raise LiidError(f"{summary_file}: classes {summary['classes'][:4]}... are not the graph {graph_dir}'s: the "
                        "cut was made from another graph")
    recorded = (summary.get("inputs") or {}).get("fingerprint") if isinstance(summary.get("inputs"), dict) else None
    if isinstance(recorded, str):
        have = fingerprint(graph_dir)
        if have != recorded:
            raise LiidError(f"{summary_file}: the cut was solved on another graph (fingerprint {recorded}; "
                            f"{graph_dir} has {have}), or the graph changed since")
    return labels, summary


def graph_store(graph_dir: str | os.PathLike, g: CutGraph, features: str | os.PathLike | None = None
                ) -> StoreIndex:
    """The feature store the graph was built from (``features``, else the one graph.json records), checked: a row
    per node, the graph's classes, and the fingerprint the graph recorded (node ``u`` is row ``u``)."""
    graph_file = Path(graph_dir) / "graph.json"
    source = g.meta.get("source") if isinstance(g.meta.get("source"), dict) else {}
    path = Path(features) if features is not None else _recorded_path(source.get("feature_store"), graph_file,
                                                                      "source.feature_store")
    store = read_store_index(path)
    if len(store.proposal_image) != g.num_nodes:
        raise LiidError(f"{path}: {len(store.proposal_image)} proposals but the graph {graph_dir} has {g.num_nodes} "
                        "nodes: not the feature store it was built from")
    if store.classes != g.classes:
        raise LiidError(f"{path}/store.json: classes differ from the graph {graph_dir}'s: not the feature store it "
                        "was built from")
    recorded = source.get("fingerprint")
    if isinstance(recorded, str) and fingerprint(path) != recorded:
        raise LiidError(f"{path}: not the feature store the graph {graph_dir} was built from, or changed since "
                        f"(fingerprint {fingerprint(path)}, graph.json records {recorded})")
    return store


def component_record(cut_dir: str | os.PathLike, component: int) -> dict | None:
    """The cut's components.jsonl line of ``component`` (None when the file or the line is not there)."""
    f = Path(cut_dir) / "components.jsonl"
    if not f.is_file():
        return None
    with open(f) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise LiidError(f"{f}: corrupt line") from None
            if isinstance(rec, dict) and rec.get("id") == component:
                return rec
    return None


def _checked_rows(g: CutGraph, nodes: np.ndarray, where: str) -> None:
    t = np.asarray(g.terminal[nodes])
    if not (np.isfinite(t).all() and (t >= 0).all()):
        raise LiidError(f"{where}/terminal.npy: terminal weights of the neighbourhood must be finite and >= 0")


def node_for(graph_dir: str | os.PathLike, image_id: str, proposal: int,
             features: str | os.PathLike | None = None) -> int:
    """The graph node of proposal ``proposal`` of image ``image_id`` (through the graph's feature store)."""
    g = open_graph(graph_dir)
    return graph_store(graph_dir, g, features).node_of(image_id, proposal)


def inspect_node(graph_dir: str | os.PathLike, cut_dir: str | os.PathLike, dataset, proposals_dir, node: int,
                 hops: int = 1, max_neighbours: int = 12, features: str | os.PathLike | None = None,
                 margin: float = 0.25) -> Neighbourhood:
    """The ``Neighbourhood`` of ``node`` in the graph folder with the cut folder's labels, the image and proposal of
    every node, and the crops of the centre and of its ``max_neighbours`` strongest neighbours (the proposal's
    mask tinted in its cut label's colour, cut to its box with ``margin`` of the box's size around it).

    ``dataset``: a ``liid.datasets.Dataset`` or what ``open_dataset`` takes; with ``proposals_dir`` None (or the
    dataset None) no crops are read. ``features``: the feature store, default the one graph.json records.
    """
    g = open_graph(graph_dir)
    if not 0 <= node < g.num_nodes:
        raise LiidError(f"{graph_dir}: node {node} out of range [0, {g.num_nodes})")
    labels, _ = read_cut(cut_dir, graph_dir, g)
    store = graph_store(graph_dir, g, features)
    nb = neighbourhood(g, labels, node, hops, max_neighbours)
    _checked_rows(g, nb.nodes, str(graph_dir))
    img = np.asarray(store.proposal_image[nb.nodes], dtype=np.int64)
    nb.image_ids = [store.images[i] for i in img]
    nb.proposals = np.asarray(store.proposal_index[nb.nodes], dtype=np.int64)
    nb.image_labels = store.labels_of(nb.nodes)
    nb.neighbour_images = [store.images[int(i)] for i in store.proposal_image[nb.neighbours]]
    nb.neighbour_proposals = np.asarray(store.proposal_index[nb.neighbours], dtype=np.int64)
    nb.neighbour_image_labels = store.labels_of(nb.neighbours)
    nb.component_record = component_record(cut_dir, int(nb.component[0]))
    nb.sources = {"graph": str(graph_dir), "cut": str(cut_dir), "features": str(store.path)}
    if dataset is not None and proposals_dir is not None:
        nb.crops = read_crops(nb, dataset, proposals_dir, margin)
        nb.sources.update(proposals=str(proposals_dir), dataset=str(getattr(dataset, "source", dataset)))
    return nb


def shown_neighbours(nb: Neighbourhood) -> np.ndarray:
    """Positions in ``nb.neighbours`` of the neighbours the picture shows: the heaviest ``max_neighbours``."""
    d = len(nb.neighbours)
    return np.arange(min(d, nb.max_neighbours) if nb.max_neighbours else d)


def read_crops(nb: Neighbourhood, dataset, proposals_dir: str | os.PathLike, margin: float = 0.25
               ) -> dict[int, np.ndarray]:
    """The crops of the centre and the shown neighbours: graph node → uint8 RGB [h, w, 3]."""
    from liid.datasets import open_dataset
    from liid.datasets.palette import voc_palette
    from liid.proposals.store import read_image_proposals, read_proposal_index

    ds = open_dataset(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    index = {e["id"]: e for e in read_proposal_index(proposals_dir)}
    palette = voc_palette()
    wanted = [(nb.centre, nb.image_ids[0], int(nb.proposals[0]), nb.label if nb.on_image(0, nb.label) else 0)]
    for p in shown_neighbours(nb):
        wanted.append((int(nb.neighbours[p]), nb.neighbour_images[p], int(nb.neighbour_proposals[p]),
                       int(nb.neighbour_labels[p]) if nb.neighbour_on_image(p) else 0))
    images: dict[str, np.ndarray] = {}
    props_of: dict[str, object] = {}
    crops: dict[int, np.ndarray] = {}
    for v, iid, j, lab in wanted:
        if iid not in index:
            raise LiidError(f"{proposals_dir}/index.json: image {iid!r} (node {v}) is not in the proposal store")
        if iid not in props_of:
            props_of[iid] = read_image_proposals(proposals_dir, index[iid])
            images[iid] = ds.load_image(iid)
        props, image = props_of[iid], images[iid]
        if j >= len(props):
            raise LiidError(f"{Path(proposals_dir) / index[iid]['file']}: node {v} names proposal {j}, but the image "
                            f"has {len(props)} proposals")
        if (props.height, props.width) != image.shape[:2]:
            raise LiidError(f"{Path(proposals_dir) / index[iid]['file']}: proposals are {props.height}x{props.width}, "
                            f"the dataset's image {iid!r} is {image.shape[0]}x{image.shape[1]}")
        colour = tuple(int(c) for c in palette[lab]) if lab > 0 else BACKGROUND_TINT
        crops[v] = crop(image, props.decode([j])[0], props.boxes[j], colour, margin)
    return crops


def tint(image: np.ndarray, mask: np.ndarray, colour: Sequence[int], alpha: float = 0.45) -> np.ndarray:
    """``image`` with ``mask`` tinted in ``colour`` and outlined in it."""
    from scipy import ndimage

    out = image.astype(np.float32).copy()
    c = np.asarray(colour, dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * c
    out[mask & ~ndimage.binary_erosion(mask, iterations=1, border_value=0)] = c
    return np.clip(out, 0, 255).astype(np.uint8)


def crop(image: np.ndarray, mask: np.ndarray, box: Sequence[float], colour: Sequence[int],
         margin: float = 0.25) -> np.ndarray:
    """The image with the mask tinted, cut to the box (XYXY, exclusive) plus ``margin`` of its larger side
    (at least 4 pixels); the whole image for an empty box."""
    out = tint(image, mask, colour)
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        return out
    m = max(4.0, margin * max(x2 - x1, y2 - y1))
    h, w = out.shape[:2]
    xa, ya = max(0, math.floor(x1 - m)), max(0, math.floor(y1 - m))
    xb, yb = min(w, math.ceil(x2 + m)), min(h, math.ceil(y2 + m))
    return out[ya:yb, xa:xb].copy()


def pick_nodes(graph_dir: str | os.PathLike, cut_dir: str | os.PathLike, n: int, seed: int = 0) -> list[int]:
    """Up to ``n`` nodes worth inspecting: first those the graph changed its mind about (the cut's label is not
    their allowed label of largest terminal weight), a ``seed``-random sample of them listed by how much terminal
    weight the cut overruled; then the nodes of highest degree (ties in a ``seed``-random order)."""
    g = open_graph(graph_dir)
    labels, _ = read_cut(cut_dir, graph_dir, g)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    overruled = np.zeros(g.num_nodes)
    changed = np.zeros(g.num_nodes, dtype=bool)
    for s in range(0, g.num_nodes, 65536):  # chunked: [N, L] of a COCO graph is large
        t = np.asarray(g.terminal[s:s + 65536], dtype=np.float64)
        a = np.asarray(g.allowed[s:s + 65536], dtype=bool)
        best = masked_argmax(t, a)
        lab = labels[s:s + 65536]
        rows = np.arange(len(lab))
        changed[s:s + len(lab)] = best != lab
        overruled[s:s + len(lab)] = t[rows, best] - t[rows, lab]
    cand = np.flatnonzero(changed)
    if len(cand) > n:
        cand = rng.choice(cand, size=n, replace=False)
    cand = cand[np.lexsort((cand, -overruled[cand]))]
    picked = [int(c) for c in cand[:n]]
    if len(picked) < n:
        degree = np.bincount(np.asarray(g.edges, dtype=np.int64).reshape(-1), minlength=g.num_nodes)
        perm = rng.permutation(g.num_nodes)
        order = perm[np.argsort(-degree[perm], kind="stable")]
        taken = set(picked)
        for v in order.tolist():
            if len(picked) >= n:
                break
            if v not in taken:
                picked.append(v)
    return picked


# ------------------------------------------------------------------------------------------ out


def terminal_id(k: int) -> str:
    """The networkx / GraphML id of terminal ``k`` (proposals are their integer graph node ids)."""
    return f"terminal:{k}"


def to_networkx(nb: Neighbourhood, terminals: bool = True):
    """The neighbourhood as a ``networkx.Graph``: proposal nodes (their graph node ids, ``kind="proposal"``) with
    ``label``, ``image_id``, ``proposal``, ``hop``, ``component``, ``degree``, ``cut_label`` (index),
    ``cut_label_name``, ``terminal_argmax``, ``is_centre`` and ``terminal_<class>`` per class; edges with
    ``weight``, ``kind="pair"`` and ``cut`` (its two ends labeled differently). With ``terminals``: a node
    ``"terminal:<k>"`` of kind "terminal" per label that a node has weight on or is labeled, joined to each node by
    its terminal weight (``kind="terminal"``, ``cut``: the node is labeled otherwise)."""
    import networkx as nx

    G = nx.Graph(centre=nb.centre, hops=nb.hops, max_neighbours=nb.max_neighbours, classes=",".join(nb.classes))
    best = nb.terminal_argmax
    for i, v in enumerate(nb.nodes.tolist()):
        attrs = {"kind": "proposal", "label": nb.describe(i), "node": v, "hop": int(nb.hop[i]),
                 "component": int(nb.component[i]), "degree": int(nb.degree[i]), "cut_label": int(nb.labels[i]),
                 "cut_label_name": nb.label_name(i), "terminal_argmax": nb.classes[int(best[i])],
                 "is_centre": bool(i == 0)}
        if nb.image_ids is not None and nb.proposals is not None:
            attrs.update(image_id=nb.image_ids[i], proposal=int(nb.proposals[i]))
        attrs.update({f"terminal_{c}": float(nb.terminal[i, k]) for k, c in enumerate(nb.classes)})
        G.add_node(v, **attrs)
    lab = dict(zip(nb.nodes.tolist(), nb.labels.tolist(), strict=True))
    for (u, v), w in zip(nb.edges.tolist(), nb.weights.tolist(), strict=True):
        G.add_edge(u, v, weight=float(w), kind="pair", cut=bool(lab[u] != lab[v]))
    if terminals:
        used = sorted(set(np.flatnonzero((nb.terminal > 0).any(axis=0)).tolist()) | set(nb.labels.tolist()))
        for k in used:
            G.add_node(terminal_id(k), kind="terminal", label=nb.classes[k], class_index=int(k), is_centre=False)
        for i, v in enumerate(nb.nodes.tolist()):
            for k in used:
                if nb.terminal[i, k] > 0:
                    G.add_edge(v, terminal_id(k), weight=float(nb.terminal[i, k]), kind="terminal",
                               cut=bool(nb.labels[i] != k))
    return G


def graphml_bytes(nb: Neighbourhood, terminals: bool = True) -> bytes:
    """``to_networkx`` written by ``networkx.write_graphml`` (node ids become strings: ``"17"``,
    ``"terminal:2"``)."""
    import networkx as nx

    buf = io.BytesIO()
    nx.write_graphml(to_networkx(nb, terminals), buf)
    return buf.getvalue()


def to_json(nb: Neighbourhood) -> dict:
    """The neighbourhood's facts as numbers (``inf`` local costs of labels a node may not take are null)."""
    best = nb.terminal_argmax
    nodes = []
    for i, v in enumerate(nb.nodes.tolist()):
        rec = {"node": v, "hop": int(nb.hop[i]), "image_id": None if nb.image_ids is None else nb.image_ids[i],
               "proposal": None if nb.proposals is None else int(nb.proposals[i]),
               "component": int(nb.component[i]), "degree": int(nb.degree[i]),
               "cut_label": int(nb.labels[i]), "cut_label_name": nb.label_name(i),
               "terminal_argmax": int(best[i]), "terminal": nb.terminal[i].tolist(),
               "allowed": nb.allowed[i].tolist()}
        if nb.image_labels is not None:
            rec["image_labels"] = (np.flatnonzero(nb.image_labels[i][1:]) + 1).tolist()
        nodes.append(rec)
    neighbours = [{"node": int(v), "weight": float(w), "cut_label": int(k),
                   "cut_label_name": nb.neighbour_label_name(p),
                   "image_id": None if nb.neighbour_images is None else nb.neighbour_images[p],
                   "proposal": None if nb.neighbour_proposals is None else int(nb.neighbour_proposals[p])}
                  for p, (v, w, k) in enumerate(zip(nb.neighbours.tolist(), nb.neighbour_weights.tolist(),
                                                    nb.neighbour_labels.tolist(), strict=True))]
    return {
        "format": FORMAT, "version": VERSION, "centre": nb.centre, "hops": nb.hops,
        "max_neighbours": nb.max_neighbours, "classes": list(nb.classes),
        "cut_label": nb.label, "cut_label_name": nb.label_name(0), "terminal_argmax": int(best[0]),
        "local_cost": [float(c) if np.isfinite(c) else None for c in nb.local_cost],  # None: not allowed
        "component": nb.component_record, "nodes": nodes,
        "edges": [{"u": int(u), "v": int(v), "weight": float(w)} for (u, v), w in
                  zip(nb.edges.tolist(), nb.weights.tolist(), strict=True)],
        "neighbours": neighbours, "sources": dict(nb.sources),
    }


def _shown_classes(nb: Neighbourhood) -> list[int]:
    """The labels the centre's caption lists: background, its image's labels, any with weight, the cut's."""
    i = 0
    ks = {0, nb.label} | set(np.flatnonzero(nb.terminal[i] > 0).tolist())
    ks |= {k for k in range(1, len(nb.classes)) if nb.on_image(i, k)}
    return sorted(ks)


def _fmt_cost(c: float) -> str:
    return "-" if not np.isfinite(c) else f"{c:.3f}"


def figure(nb: Neighbourhood, columns: int = 6):
    """The picture of ``nb`` as a matplotlib ``Figure`` (Agg canvas, no pyplot): the centre's crop and its terminal
    weights (its image's labels in bold and in colour, the cut's label marked, each label's local cost), then the
    shown neighbours' crops, heaviest edge first, each captioned with the edge weight, its image and cut label
    (green: the centre's label, red: another)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from liid.datasets.palette import voc_palette

    palette = voc_palette() / 255.0
    shown = shown_neighbours(nb)
    cols = max(4, min(columns, len(shown)))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(2.2 * cols, 3.8 + 2.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(1 + rows, cols, height_ratios=[1.5] + [1.0] * rows, hspace=0.55, wspace=0.3)
    half = cols // 2
    ax = fig.add_subplot(gs[0, :half])
    _show(ax, nb.crops.get(nb.centre))
    rec = nb.component_record or {}
    comp = f"component {int(nb.component[0])}" + (f", {rec['nodes']} nodes, {rec.get('method')}"
                                                   + ("" if rec.get("certified", True) else ", uncertified")
                                                   if rec else "")
    best = int(nb.terminal_argmax[0])
    ax.set_title(f"node {nb.centre}: {nb.describe(0)}\ncut: {nb.label_name(0)}"
                 f"   (terminal argmax: {nb.label_name(0, best)})\n{comp}, degree {int(nb.degree[0])}",
                 fontsize=9, color="black" if best == nb.label else "darkred")
    bx = fig.add_subplot(gs[0, half:])
    pos = bx.get_position()  # room on the left for the class names (the grid gives the axes none)
    bx.set_position([pos.x0 + 0.08, pos.y0, pos.width - 0.08, pos.height])
    ks = _shown_classes(nb)
    y = np.arange(len(ks))[::-1]
    weights = [float(nb.terminal[0, k]) for k in ks]
    colours = [palette[k] if k > 0 and nb.on_image(0, k) else (0.6, 0.6, 0.6) for k in ks]
    bx.barh(y, weights, color=colours, edgecolor=["black" if k == nb.label else "none" for k in ks], linewidth=1.5)
    bx.set_yticks(y)
    bx.set_yticklabels([("▶ " if k == nb.label else "") + nb.classes[k] for k in ks], fontsize=8)
    for tick, k in zip(bx.get_yticklabels(), ks, strict=True):
        if k > 0 and nb.on_image(0, k):
            tick.set_fontweight("bold")
    top = max(weights + [1e-9])
    bx.set_xlim(0, top * 1.9)
    for yy, k, wt in zip(y, ks, weights, strict=True):
        bx.text(wt + top * 0.03, yy, f"{wt:.3f}   cost {_fmt_cost(nb.local_cost[k])}", va="center", fontsize=7)
    bx.set_title("terminal weight, local cost (others fixed)", fontsize=9)
    bx.tick_params(axis="x", labelsize=7)
    for n_, p in enumerate(shown):
        a = fig.add_subplot(gs[1 + n_ // cols, n_ % cols])
        v = int(nb.neighbours[p])
        _show(a, nb.crops.get(v))
        k = int(nb.neighbour_labels[p])
        a.set_title(f"w {float(nb.neighbour_weights[p]):.3f}\n{nb.neighbour_describe(p)}\n"
                    f"cut: {nb.neighbour_label_name(p)}", fontsize=8,
                    color="darkgreen" if k == nb.label else "darkred")
    if not len(nb.neighbours):
        fig.text(0.5, 0.1, "no edges: an isolated node takes its terminal argmax", ha="center", fontsize=9)
    elif len(shown) < len(nb.neighbours):
        fig.text(0.5, 0.005, f"the {len(shown)} heaviest of {len(nb.neighbours)} edges shown", ha="center",
                 fontsize=8)
    return fig


def _show(ax, img: np.ndarray | None) -> None:
    if img is None:
        ax.text(0.5, 0.5, "(no image)", ha="center", va="center", fontsize=8)
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def png_bytes(nb: Neighbourhood) -> bytes:
    buf = io.BytesIO()
    figure(nb).savefig(buf, format="png")
    return buf.getvalue()


def draw_neighbourhood(nb: Neighbourhood, file: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``figure(nb)`` as a PNG, atomically."""
    write_bytes(file, png_bytes(nb), overwrite=overwrite)
    return Path(file)


def write_graphml(nb: Neighbourhood, file: str | os.PathLike, terminals: bool = True, overwrite: bool = True) -> Path:
    """Write ``to_networkx(nb, terminals)`` as GraphML, atomically."""
    write_bytes(file, graphml_bytes(nb, terminals), overwrite=overwrite)
    return Path(file)
