"""`liid inspect` and graph.neighbourhood: the neighbourhood of a node against brute-force oracles (BFS by matrix
powers, the graph and cut files themselves, the Potts energy), the GraphML round trip, the picture, and the one-line
errors of the command."""

from __future__ import annotations

import json
import shutil

import networkx as nx
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from PIL import Image

from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.graph.energy import potts_energy
from liid.graph.feature_store import FeatureStore, write_feature_store
from liid.graph.neighbourhood import (
    adjacency,
    bfs,
    graphml_bytes,
    inspect_node,
    pick_nodes,
    terminal_id,
    to_json,
    to_networkx,
)
from liid.proposals.store import masks_to_proposals, write_proposal_store


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny synthetic dataset, its GT masks and their upside-down copies as proposals, a feature store of class
    centres plus noise with noisy probabilities, and `liid build-graph` + `liid solve-cut` on it."""
    root = tmp_path_factory.mktemp("inspect")
    syn = root / "syn"
    write_synthetic(syn, 6, seed=3, config=SyntheticConfig(size=64, classes=3), val_fraction=0.0, progress=False)
    ds = open_dataset(syn)
    rng = np.random.default_rng(0)
    meta, props, truth, img, idx = [], [], [], [], []
    for i, im in enumerate(ds.images):
        inst = ds.instances(im.id)
        masks = np.concatenate([inst.masks, inst.masks[:, ::-1, :]])
        meta.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
        props.append(masks_to_proposals(masks, np.ones(len(masks))))
        truth += list(inst.classes) + [0] * len(inst)
        img += [i] * len(masks)
        idx += list(range(len(masks)))
    write_proposal_store(root / "props", meta, props)
    truth = np.asarray(truth)
    k1 = len(ds.classes)
    centres = rng.random((k1, 16))
    feats = centres[truth] + 0.4 * rng.random((len(truth), 16))
    probs = 0.2 * np.eye(k1)[truth] + 0.8 * rng.dirichlet(np.ones(k1), size=len(truth))
    labels = np.stack([ds.label_vector(im.id) > 0 for im in ds.images])
    store = FeatureStore(features=feats.astype(np.float32), probs=probs.astype(np.float32),
                         proposal_image=np.asarray(img), proposal_index=np.asarray(idx), image_labels=labels,
                         classes=list(ds.classes), images=[im.id for im in ds.images])
    write_feature_store(root / "store", store)
    res = invoke("build-graph", root / "store", "--out", root / "graph", "--k", "3")
    assert res.exit_code == 0, res.output
    res = invoke("solve-cut", "--graph", root / "graph", "--out", root / "cut", "--quiet")
    assert res.exit_code == 0, res.output
    g = {k: np.load(root / "graph" / f"{k}.npy") for k in ("terminal", "allowed", "edges", "weights", "component")}
    return {"root": root, "syn": syn, "props": root / "props", "store": root / "store", "graph": root / "graph",
            "cut": root / "cut", "g": g, "labels": np.load(root / "cut" / "labels.npy"), "img": np.asarray(img),
            "idx": np.asarray(idx), "images": [im.id for im in ds.images]}


def dense_reach(n: int, edges: np.ndarray, centre: int, hops: int) -> set[int]:
    """Nodes within ``hops`` edges: the non-zeros of (I + A)^hops applied to the centre's indicator."""
    a = np.eye(n, dtype=np.int64)
    a[edges[:, 0], edges[:, 1]] = 1
    a[edges[:, 1], edges[:, 0]] = 1
    x = np.zeros(n, dtype=np.int64)
    x[centre] = 1
    for _ in range(hops):
        x = np.minimum(a @ x, 1)
    return set(np.flatnonzero(x).tolist())


def capped_reach(edges: np.ndarray, weights: np.ndarray, centre: int, hops: int, m: int) -> dict[int, int]:
    """BFS where each node follows its ``m`` heaviest edges (ties: smaller neighbour), from the edge list alone."""
    dist, frontier = {centre: 0}, [centre]
    for h in range(1, hops + 1):
        nxt = []
        for x in frontier:
            at = np.flatnonzero((edges == x).any(axis=1))
            other = np.where(edges[at, 0] == x, edges[at, 1], edges[at, 0])
            order = sorted(zip(-weights[at], other, strict=True))[:m]
            for _, y in order:
                if int(y) not in dist:
                    dist[int(y)] = h
                    nxt.append(int(y))
        frontier = nxt
    return dist


def test_bfs_matches_brute_force():
    rng = np.random.default_rng(1)
    n = 40
    pairs = {(int(min(u, v)), int(max(u, v))) for u, v in rng.integers(0, n, size=(70, 2)) if u != v}
    edges = np.asarray(sorted(pairs), dtype=np.int64)
    weights = rng.random(len(edges)).round(1)  # ties among the weights
    adj = adjacency(n, edges, weights)
    for centre in range(0, n, 7):
        for hops in range(4):
            nodes, dist = bfs(adj, centre, hops)
            assert set(nodes.tolist()) == dense_reach(n, edges, centre, hops)
            assert len(set(nodes.tolist())) == len(nodes) and nodes[0] == centre
            for m in (1, 2):
                nodes, dist = bfs(adj, centre, hops, max_neighbours=m)
                assert dict(zip(nodes.tolist(), dist.tolist(), strict=True)) == \
                    capped_reach(edges, weights, centre, hops, m)


def test_neighbourhood_equals_the_files(pipe):
    g, labels = pipe["g"], pipe["labels"]
    n = len(labels)
    degree = np.bincount(g["edges"].reshape(-1), minlength=n)
    centre = int(np.argmax(degree))
    for hops in (0, 1, 2):
        nb = inspect_node(pipe["graph"], pipe["cut"], pipe["syn"], pipe["props"], centre, hops=hops,
                          max_neighbours=0)
        assert set(nb.nodes.tolist()) == dense_reach(n, g["edges"], centre, hops)
        np.testing.assert_array_equal(nb.terminal, g["terminal"][nb.nodes])
        np.testing.assert_array_equal(nb.allowed, g["allowed"][nb.nodes])
        np.testing.assert_array_equal(nb.labels, labels[nb.nodes])
        np.testing.assert_array_equal(nb.component, g["component"][nb.nodes])
        np.testing.assert_array_equal(nb.degree, degree[nb.nodes])
        assert nb.image_ids == [pipe["images"][i] for i in pipe["img"][nb.nodes]]
        np.testing.assert_array_equal(nb.proposals, pipe["idx"][nb.nodes])
        inside = np.isin(g["edges"], nb.nodes).all(axis=1)  # the induced edges, with the file's weights
        want = {tuple(e): w for e, w in zip(g["edges"][inside].tolist(), g["weights"][inside], strict=True)}
        assert dict(zip(map(tuple, nb.edges.tolist()), nb.weights, strict=True)) == want
    # the centre's neighbours: every edge at it, heaviest first, with the cut's labels
    at = np.flatnonzero((g["edges"] == centre).any(axis=1))
    other = np.where(g["edges"][at, 0] == centre, g["edges"][at, 1], g["edges"][at, 0])
    assert sorted(zip(nb.neighbours.tolist(), nb.neighbour_weights, strict=True)) == \
        sorted(zip(other.tolist(), g["weights"][at], strict=True))
    assert (np.diff(nb.neighbour_weights) <= 0).all()
    np.testing.assert_array_equal(nb.neighbour_labels, labels[nb.neighbours])
    # the crops: the centre and each shown neighbour
    assert set(nb.crops) == {centre, *nb.neighbours.tolist()}
    assert all(c.ndim == 3 and c.shape[2] == 3 and c.dtype == np.uint8 for c in nb.crops.values())


def test_local_cost_is_the_energy_change(pipe):
    g, labels = pipe["g"], pipe["labels"].astype(np.int64)
    base = potts_energy(g["terminal"], g["edges"], g["weights"], labels)
    checked_changed = False
    for centre in range(len(labels)):
        nb = inspect_node(pipe["graph"], pipe["cut"], None, None, centre)
        for k in range(len(nb.classes)):
            if not g["allowed"][centre, k]:
                assert nb.local_cost[k] == np.inf
                continue
            moved = labels.copy()
            moved[centre] = k
            delta = potts_energy(g["terminal"], g["edges"], g["weights"], moved) - base
            assert nb.local_cost[k] - nb.local_cost[labels[centre]] == pytest.approx(delta, abs=1e-9)
        # a certified optimal cut: no single node can lower the cut value
        assert nb.local_cost[labels[centre]] <= nb.local_cost.min() + 1e-9
        checked_changed |= int(nb.terminal_argmax[0]) != labels[centre]
    assert checked_changed  # the fixture has nodes the graph changed its mind about
    summary = json.loads((pipe["cut"] / "summary.json").read_text())
    assert summary["all_certified"]


def test_graphml_round_trip(pipe, tmp_path):
    nb = inspect_node(pipe["graph"], pipe["cut"], None, None, 0, hops=2)
    for terminals in (True, False):
        f = tmp_path / f"n{terminals}.graphml"
        f.write_bytes(graphml_bytes(nb, terminals))
        back = nx.read_graphml(f)
        want = to_networkx(nb, terminals)
        assert set(back.nodes) == {str(v) for v in want.nodes}
        props = {str(v) for v in nb.nodes.tolist()}
        assert {v for v in back.nodes if back.nodes[v]["kind"] == "proposal"} == props
        pair = {frozenset((u, v)): d["weight"] for u, v, d in back.edges(data=True) if d["kind"] == "pair"}
        assert pair == {frozenset((str(u), str(v))): pytest.approx(w)
                        for (u, v), w in zip(nb.edges.tolist(), nb.weights, strict=True)}
        centre = back.nodes[str(nb.centre)]
        assert centre["is_centre"] is True and centre["image_id"] == nb.image_ids[0]
        assert centre["proposal"] == int(nb.proposals[0]) and centre["cut_label"] == nb.label
        for k, c in enumerate(nb.classes):
            assert centre[f"terminal_{c}"] == pytest.approx(float(nb.terminal[0, k]))
        tedges = [(u, v, d) for u, v, d in back.edges(data=True) if d["kind"] == "terminal"]
        if terminals:
            for i, v in enumerate(nb.nodes.tolist()):
                for k in np.flatnonzero(nb.terminal[i] > 0):
                    assert back.edges[str(v), terminal_id(int(k))]["weight"] == pytest.approx(nb.terminal[i, k])
            assert len(tedges) == int((nb.terminal > 0).sum())
        else:
            assert not tedges


def test_json_is_strict_and_matches(pipe):
    nb = inspect_node(pipe["graph"], pipe["cut"], None, None, 1, hops=1)
    rec = json.loads(json.dumps(to_json(nb), allow_nan=False))
    assert rec["centre"] == 1 and rec["nodes"][0]["node"] == 1
    assert [n["node"] for n in rec["nodes"]] == nb.nodes.tolist()
    assert rec["cut_label"] == int(pipe["labels"][1])
    assert [c is None for c in rec["local_cost"]] == (~pipe["g"]["allowed"][1]).tolist()


def test_pick_nodes(pipe):
    g, labels = pipe["g"], pipe["labels"]
    best = np.where(g["allowed"], g["terminal"], -np.inf).argmax(axis=1)
    changed = set(np.flatnonzero(best != labels).tolist())
    n = len(changed) + 3
    picked = pick_nodes(pipe["graph"], pipe["cut"], n, seed=0)
    assert len(picked) == len(set(picked)) == n
    assert set(picked[:len(changed)]) == changed  # first the nodes the graph changed its mind about
    degree = np.bincount(g["edges"].reshape(-1), minlength=len(labels))
    rest = [v for v in range(len(labels)) if v not in changed]
    top = sorted(degree[rest], reverse=True)[:3]
    assert sorted(degree[picked[len(changed):]], reverse=True) == top  # then the highest degrees
    assert picked == pick_nodes(pipe["graph"], pipe["cut"], n, seed=0)
    assert len(pick_nodes(pipe["graph"], pipe["cut"], 2, seed=1)) == 2


def _args(pipe, out, *extra):
    return ("inspect", "--graph", pipe["graph"], "--cut", pipe["cut"], "--dataset", pipe["syn"],
            "--proposals", pipe["props"], "--out", out, *extra)


def test_cli_writes_picture_graphml_json(pipe, tmp_path):
    out = tmp_path / "insp"
    degree = np.bincount(pipe["g"]["edges"].reshape(-1), minlength=len(pipe["labels"]))
    node = int(np.argmax(degree))
    res = invoke(*_args(pipe, out, "--node", node))
    assert res.exit_code == 0, res.output
    png, gml, js = (out / f"node_{node}{s}" for s in (".png", ".graphml", ".json"))
    pic = np.asarray(Image.open(png).convert("RGB"))
    assert pic.shape[0] > 200 and pic.shape[1] > 400
    assert pic.std() > 10 and len(np.unique(pic.reshape(-1, 3), axis=0)) > 50  # not blank
    assert str(node) in nx.read_graphml(gml).nodes
    rec = json.loads(js.read_text())
    assert rec["centre"] == node and rec["cut_label"] == int(pipe["labels"][node])
    # the same proposal named by image and index
    image, j = pipe["images"][pipe["img"][node]], int(pipe["idx"][node])
    res = invoke(*_args(pipe, out, "--image", image, "--proposal", j, "--name", "same", "--no-terminals"))
    assert res.exit_code == 0, res.output
    assert json.loads((out / "same.json").read_text())["nodes"] == rec["nodes"]
    assert not [v for v, d in nx.read_graphml(out / "same.graphml").nodes(data=True) if d["kind"] == "terminal"]
    # an existing output is refused without --overwrite, replaced with it
    res = invoke(*_args(pipe, out, "--node", node))
    assert_one_line_error(res, "output exists", "--overwrite")
    assert res.exit_code == 2
    res = invoke(*_args(pipe, out, "--node", node, "--overwrite", "--hops", "2"))
    assert res.exit_code == 0, res.output
    assert json.loads(js.read_text())["hops"] == 2
    assert not list(out.glob("*.tmp-*"))


def test_cli_errors(pipe, tmp_path):
    out = tmp_path / "insp"
    n = len(pipe["labels"])
    res = invoke(*_args(pipe, out, "--node", n))
    assert_one_line_error(res, "node", str(n), "out of range")
    assert res.exit_code == 2 and not out.exists()
    res = invoke(*_args(pipe, out, "--node", -1))
    assert_one_line_error(res, "out of range")
    res = invoke(*_args(pipe, out, "--image", "nope", "--proposal", 0))
    assert_one_line_error(res, "'nope'", "store.json")
    res = invoke(*_args(pipe, out, "--image", pipe["images"][0], "--proposal", 999))
    assert_one_line_error(res, "proposal 999")
    # a cut of another graph: same shapes, other weights
    other = tmp_path / "graph2"
    shutil.copytree(pipe["graph"], other)
    np.save(other / "weights.npy", 2 * np.load(other / "weights.npy"))
    res = invoke("inspect", "--graph", other, "--cut", pipe["cut"], "--dataset", pipe["syn"], "--proposals",
                 pipe["props"], "--out", out, "--node", 0)
    assert_one_line_error(res, "summary.json", "another graph")
    assert res.exit_code == 2 and not out.exists()
    res = invoke(*_args(pipe, out))  # neither --node nor --image
    assert res.exit_code == 2 and "--node" in res.output
