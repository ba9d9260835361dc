"""kNN search (graph.knn), edge weights (graph.weights) and the knowledge graph (graph.build), LIID eq. 10."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from liid.graph.build import GraphConfig, build_graph
from liid.graph.knn import KnnConfig, knn, normalized, recall_at_k
from liid.graph.weights import pair_weights, symmetrise, terminal_weights
from liid.synthetic_features import SyntheticSpec, make_feature_store


def _brute_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k other rows by cosine (rows of x are unit), float64, descending."""
    s = x.astype(np.float64) @ x.astype(np.float64).T
    np.fill_diagonal(s, -np.inf)
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(s, idx, axis=1)


@pytest.fixture(scope="module")
def clustered():
    store, _ = make_feature_store(SyntheticSpec(images=300, dim=128))
    return normalized(store.features)


@pytest.fixture(scope="module")
def small_store():
    store, _ = make_feature_store(SyntheticSpec(images=60, dim=64, seed=3))
    return store


# --------------------------------------------------------------------------------------------- knn


@pytest.mark.parametrize("k", [1, 3, 5])
def test_exact_matches_numpy_brute_force(k):
    rng = np.random.default_rng(k)
    x = normalized(rng.standard_normal((400, 16)))
    idx, sim, info = knn(x, KnnConfig(k=k, method="exact"))
    assert info["method"] == "exact"
    assert idx.shape == (400, k) and sim.shape == (400, k)
    assert not (idx == np.arange(400)[:, None]).any()
    ref_idx, ref_sim = _brute_knn(x, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, ref_sim, atol=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # sorted descending


def test_auto_is_exact_for_small_inputs():
    rng = np.random.default_rng(0)
    x = normalized(rng.random((200, 8)))
    idx, _, info = knn(x, KnnConfig(method="auto"))
    assert info["method"] == "exact"
    np.testing.assert_array_equal(idx, _brute_knn(x, 3)[0])


def test_exact_never_returns_self_with_duplicate_rows():
    """Copies of a row are its neighbours (similarity 1), the row itself never is."""
    rng = np.random.default_rng(1)
    x = rng.random((120, 12)).astype(np.float32)
    big = np.arange(10, 17)  # 7 identical rows: more copies than k + 1, self may not even be retrieved
    x[big] = x[big[0]]
    pair = np.array([40, 90])  # two identical rows
    x[pair[1]] = x[pair[0]]
    xn = normalized(x)
    idx, sim, _ = knn(xn, KnnConfig(k=3, method="exact"))
    assert not (idx == np.arange(120)[:, None]).any()
    assert (idx >= 0).all()
    for r in big:
        assert set(idx[r].tolist()) <= set(big.tolist()) - {r}
        np.testing.assert_allclose(sim[r], 1.0, atol=1e-5)
    assert idx[40, 0] == 90 and idx[90, 0] == 40
    np.testing.assert_allclose(sim[pair, 0], 1.0, atol=1e-5)


def test_fewer_rows_than_k_pads_and_excludes_self():
    x = normalized(np.random.default_rng(2).random((3, 5)))
    for method in ("exact", "ivf", "hnsw"):
        idx, sim, info = knn(x, KnnConfig(k=3, method=method))
        assert info["method"] == "exact"
        for r in range(3):
            assert sorted(idx[r, :2].tolist()) == sorted({0, 1, 2} - {r})
        assert (idx[:, 2] == -1).all() and np.isneginf(sim[:, 2]).all()


def test_ivf_never_returns_self_and_recall(clustered):
    x = clustered
    n = x.shape[0]
    idx, sim, info = knn(x, KnnConfig(method="ivf", nlist=32, nprobe=4))
    assert info["method"] == "ivf" and info["nlist"] == 32 and info["nprobe"] == 4
    assert not (idx == np.arange(n)[:, None]).any()
    assert recall_at_k(x, idx, sample=800, k=3) >= 0.9
    # probing every list is exhaustive (up to fp16 codes, re-ranked exactly): the exact neighbours
    idx_all, sim_all, info = knn(x, KnnConfig(method="ivf", nlist=32, nprobe=32))
    assert info["nprobe"] == 32
    assert not (idx_all == np.arange(n)[:, None]).any()
    assert recall_at_k(x, idx_all, sample=800, k=3) == 1.0
    # the similarities reported are exact float32 cosines of the pairs returned
    ok = idx_all >= 0
    rows = np.nonzero(ok)[0]
    np.testing.assert_allclose(sim_all[ok], np.einsum("nd,nd->n", x[rows], x[idx_all[ok]]), atol=1e-5)


def test_hnsw_never_returns_self(clustered):
    x = clustered
    idx, sim, info = knn(x, KnnConfig(method="hnsw", hnsw_m=16, hnsw_ef=64))
    assert info["method"] == "hnsw"
    assert not (idx == np.arange(x.shape[0])[:, None]).any()
    assert recall_at_k(x, idx, sample=800, k=3) >= 0.9
    assert (np.diff(sim, axis=1) <= 1e-6).all()


def test_recall_at_k_detects_wrong_neighbours():
    rng = np.random.default_rng(4)
    x = normalized(rng.standard_normal((300, 10)))
    exact, _ = _brute_knn(x, 3)
    assert recall_at_k(x, exact, sample=300, k=3) == 1.0
    wrong = exact.copy()
    wrong[:, 0] = (exact[:, 0] + 1) % 300  # the nearest replaced by another row: 2 of 3 found
    assert recall_at_k(x, wrong, sample=300, k=3) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------- weights


def test_symmetrise_one_pair_per_undirected_edge():
    rows = np.array([0, 1, 1, 2, 3, 3, 4, 4, 2])
    cols = np.array([1, 0, 2, 2, -1, 0, 3, 1, 1])
    cos = np.array([0.5, 0.6, 0.3, 0.9, 0.4, 0.2, 0.7, 0.1, 0.35])
    edges, s = symmetrise(rows, cols, cos, n=5)
    assert edges.dtype.kind == "i" and edges.shape[1] == 2
    assert (edges[:, 0] < edges[:, 1]).all()  # u < v, so no self pairs
    keys = [tuple(e) for e in edges.tolist()]
    assert keys == sorted(set(keys))  # each pair once, sorted
    got = dict(zip(keys, s.tolist(), strict=True))
    # (0,1) both directions: larger similarity kept; (1,2) both directions; (2,2) self dropped; -1 dropped
    assert got == {(0, 1): 0.6, (1, 2): 0.35, (0, 3): 0.2, (3, 4): 0.7, (1, 4): 0.1}


def test_symmetrise_random_against_set_reference():
    rng = np.random.default_rng(5)
    n, k = 50, 4
    rows = np.repeat(np.arange(n), k)
    cols = rng.integers(-1, n, size=n * k)
    cos = rng.random(n * k)
    edges, s = symmetrise(rows, cols, cos, n)
    ref: dict[tuple[int, int], float] = {}
    for a, b, c in zip(rows.tolist(), cols.tolist(), cos.tolist(), strict=True):
        if b < 0 or a == b:
            continue
        key = (min(a, b), max(a, b))
        ref[key] = max(ref.get(key, -np.inf), c)
    assert [tuple(e) for e in edges.tolist()] == sorted(ref)
    np.testing.assert_allclose(s, [ref[key] for key in sorted(ref)])


def test_pair_weights():
    cos = np.array([-0.5, 0.0, 1e-7, 0.25, 1.0])
    np.testing.assert_allclose(pair_weights(cos), [0.0, 0.0, 5e-7, 1.25, 5.0])
    np.testing.assert_allclose(pair_weights(cos, delta=2.0), [0.0, 0.0, 2e-7, 0.5, 2.0])


def test_terminal_weights_mask():
    rng = np.random.default_rng(6)
    probs = rng.dirichlet(np.ones(5), size=20).astype(np.float32)
    allowed = rng.random((20, 5)) < 0.4
    allowed[:, 0] = True
    t = terminal_weights(probs, allowed)
    assert t.dtype == np.float32
    assert (t[~allowed] == 0).all()
    np.testing.assert_array_equal(t[allowed], probs[allowed])
    np.testing.assert_array_equal(t[:, 0], probs[:, 0])  # background kept


# ------------------------------------------------------------------------------------------- build


def test_build_graph_nodes_and_terminals(small_store):
    store = small_store
    g, stats = build_graph(store)
    img = np.asarray(store.proposal_image)
    expect = np.asarray(store.image_labels, dtype=bool)[img].copy()
    expect[:, 0] = True
    np.testing.assert_array_equal(g.allowed, expect)
    np.testing.assert_array_equal(g.terminal, np.where(expect, store.probs, 0))
    assert g.terminal[:, 0].min() > 0  # background always connected
    assert stats["nodes"] == store.num_proposals == g.num_nodes
    assert stats["edges"] == len(g.edges)


def test_build_graph_edges_are_symmetrised_knn_with_delta_cos(small_store):
    store = small_store
    g, _ = build_graph(store, GraphConfig(delta=5.0))
    x = normalized(store.features)
    n = g.num_nodes
    e = g.edges
    assert (e[:, 0] < e[:, 1]).all()
    assert len({tuple(p) for p in e.tolist()}) == len(e)
    cos = np.einsum("nd,nd->n", x[e[:, 0]].astype(np.float64), x[e[:, 1]].astype(np.float64))
    np.testing.assert_allclose(g.weights, 5.0 * cos, rtol=1e-4, atol=1e-5)
    assert (g.weights > 0).all()
    # the edge set is exactly {u, v}: v among u's 3 most similar others (or u among v's), cos > 0
    nn, nn_sim = _brute_knn(x, 3)
    ref = {(min(u, v), max(u, v)) for u in range(n) for v, s in zip(nn[u], nn_sim[u], strict=True) if s > 0}
    assert {tuple(p) for p in e.tolist()} == ref
    # degree >= 3 (each node's own 3 neighbours), unless similarities were non-positive
    deg = np.bincount(e.ravel(), minlength=n)
    assert (deg >= (nn_sim > 0).sum(axis=1)).all()


def test_build_graph_components_match_scipy(small_store):
    g, stats = build_graph(small_store, GraphConfig(same_label_pairs=True))
    n = g.num_nodes
    adj = coo_matrix((np.ones(len(g.edges)), (g.edges[:, 0], g.edges[:, 1])), shape=(n, n))
    c, ref = connected_components(adj, directed=False)
    assert stats["components"] == c == g.num_components
    np.testing.assert_array_equal(g.component, ref)
    # ids ordered by smallest node: the first node of component i comes before that of i + 1
    first = np.array([np.argmax(g.component == i) for i in range(c)])
    assert (np.diff(first) > 0).all()
    # every edge lies inside one component, and nodes of one component are connected (scipy agrees)
    assert (g.component[g.edges[:, 0]] == g.component[g.edges[:, 1]]).all()
    assert stats["largest_component"] == np.bincount(g.component).max()


def test_build_graph_same_label_pairs(small_store):
    store = small_store
    g_all, _ = build_graph(store)
    g_same, stats = build_graph(store, GraphConfig(same_label_pairs=True))
    img = np.asarray(store.proposal_image)
    fg = np.asarray(store.image_labels, dtype=bool)[:, 1:]
    e = g_same.edges
    assert (fg[img[e[:, 0]]] & fg[img[e[:, 1]]]).any(axis=1).all()
    assert len(e) <= len(g_all.edges)
    assert stats["pairs_dropped_no_shared_label"] > 0  # the rule does something on this data
    # the kept edges are exactly the default graph's pairs whose directed kNN entry survived the rule
    all_pairs = {tuple(p) for p in g_all.edges.tolist()}
    assert {tuple(p) for p in e.tolist()} <= all_pairs
    shared = (fg[img[g_all.edges[:, 0]]] & fg[img[g_all.edges[:, 1]]]).any(axis=1)
    assert {tuple(p) for p in g_all.edges[shared].tolist()} == {tuple(p) for p in e.tolist()}


# ------------------------------------------------------------------------- cross-image, centring, label rule


def _brute_other_group(x: np.ndarray, groups: np.ndarray, k: int) -> np.ndarray:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    s[groups[:, None] == groups[None, :]] = -np.inf  # own image (and self) excluded
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("method", ["exact", "hnsw"])
def test_cross_image_neighbours_match_brute_force(small_store, method):
    x = normalized(small_store.features)
    groups = np.asarray(small_store.proposal_image)
    idx, sim, info = knn(x, KnnConfig(k=3, method=method, candidates=64), groups=groups)
    assert info["other_groups_only"] and info["k"] == 3
    assert (groups[idx] != groups[:, None]).all()  # never a proposal of the same image
    ref = _brute_other_group(x, groups, 3)
    agree = np.mean([len(set(a) & set(b)) / 3 for a, b in zip(idx, ref, strict=True)])
    assert agree == 1.0 if method == "exact" else agree > 0.9
    if method == "exact":
        np.testing.assert_allclose(sim, np.take_along_axis(x @ x.T, ref, axis=1), atol=1e-5)


def test_centred_cosine_is_cosine_around_the_mean(small_store):
    f = np.asarray(small_store.features, np.float64)
    mu = f.mean(axis=0)
    x = normalized(small_store.features, centre=mu)
    ref = (f - mu) / np.linalg.norm(f - mu, axis=1, keepdims=True)
    np.testing.assert_allclose(x, ref, atol=1e-5)
    g, stats = build_graph(small_store, GraphConfig(knn=KnnConfig(k=3), centre=True, neighbours="cross-image"))
    assert g.meta["config"]["centre"] and g.meta["config"]["neighbours"] == "cross-image"
    assert stats["same_image_edges"] == 0.0
    img = np.asarray(small_store.proposal_image)
    assert (img[g.edges[:, 0]] != img[g.edges[:, 1]]).all()


def test_label_rule_all_keeps_masked_terminals(small_store):
    hard, _ = build_graph(small_store, GraphConfig(knn=KnnConfig(k=3)))
    paper, _ = build_graph(small_store, GraphConfig(knn=KnnConfig(k=3), labels="all"))
    np.testing.assert_array_equal(hard.terminal, paper.terminal)  # eq. 10: p masked either way
    assert paper.allowed.all() and not hard.allowed.all()
    np.testing.assert_array_equal(hard.allowed, small_store.allowed_labels())
    with pytest.raises(ValueError):
        GraphConfig(labels="some")


def test_mutual_edges_are_reciprocal_neighbours(small_store):
    x = normalized(small_store.features)
    idx, _, _ = knn(x, KnnConfig(k=3, method="exact"))
    g, stats = build_graph(small_store, GraphConfig(knn=KnnConfig(k=3, method="exact"), mutual=True))
    union, _ = build_graph(small_store, GraphConfig(knn=KnnConfig(k=3, method="exact")))
    nbrs = [set(r) for r in idx.tolist()]
    expected = {(u, v) for u in range(len(nbrs)) for v in nbrs[u] if u < v and u in nbrs[v]}
    assert {tuple(e) for e in g.edges.tolist()} == expected
    assert len(g.edges) < len(union.edges) and stats["pairs_dropped_not_mutual"] > 0


# ---------------------------------------------------------------------------------------------- shards


def test_merge_topk_by_similarity_then_id():
    from liid.graph.shards import merge_topk

    a = (np.array([[4, 7, -1]]), np.array([[0.9, 0.5, 0.0]], dtype=np.float32))
    b = (np.array([[2, 9, 1]]), np.array([[0.9, 0.6, 0.5]], dtype=np.float32))
    idx, sim = merge_topk([a, b], 4)
    assert idx.tolist() == [[2, 4, 9, 1]]  # 0.9 twice (id 2 first), 0.6, then 0.5 twice (id 1 before 7)
    np.testing.assert_array_equal(sim, np.array([[0.9, 0.9, 0.6, 0.5]], dtype=np.float32))


def test_shard_bounds_cover_every_row_once():
    from liid.graph.shards import shard_bounds

    for n, s in ((10, 3), (5, 8), (1, 1), (100, 7)):
        b = shard_bounds(n, s)
        assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:], strict=False))
        assert len(b) == min(n, s) and all(hi > lo for lo, hi in b)


@pytest.mark.parametrize("shards", [2, 5])
def test_sharded_exact_is_the_brute_force(clustered, shards):
    x = clustered[:1500]
    want, want_sim = _brute_knn(x, 3)
    idx, sim, info = knn(x, KnnConfig(k=3, method="exact", shards=shards))
    assert info["shards"] == shards and info["backend"] == "serial"
    assert (np.sort(idx, axis=1) == np.sort(want, axis=1)).mean() > 0.999  # float32 vs float64 near-ties
    np.testing.assert_allclose(np.sort(sim, axis=1), np.sort(want_sim, axis=1), atol=1e-5)


def test_sharded_ivf_searches_what_one_ivf_searches(clustered):
    """One coarse quantizer for all shards: probing the same lists of every shard is probing them once."""
    cfg = KnnConfig(k=3, method="ivf", nlist=32, nprobe=4, pca_dim=32)
    one = knn(clustered, cfg)
    four = knn(clustered, KnnConfig(**{**cfg.to_json(), "shards": 4}))
    assert (one[0] == four[0]).mean() > 0.999
    with pytest.raises(ValueError, match="--shards works with --knn exact and ivf"):
        knn(clustered[:200], KnnConfig(method="hnsw", shards=2))


# ------------------------------------------------------------------------------------------ out of core


def test_unit_rows_are_normalized_row_for_row(small_store):
    from liid.graph.knn import UnitRows, feature_mean

    mu = feature_mean(small_store.features)
    want = normalized(small_store.features, centre=mu)
    rows = UnitRows(small_store.features, centre=mu, chunk=100)
    np.testing.assert_array_equal(rows[0:len(rows)], want)
    idx = np.array([[5, 3, 5], [0, 999, 2]])
    np.testing.assert_array_equal(rows[idx], want[idx])
    np.testing.assert_array_equal(np.asarray(rows), want)
    # projected, gathered in chunks of 100 unique rows: the rows the slices give, and (row - mean) @ proj
    rng = np.random.default_rng(1)
    mean, proj = rng.normal(size=want.shape[1]), rng.normal(size=(want.shape[1], 8)).astype(np.float32)
    p = rows.projected(mean, proj)
    big = rng.integers(0, len(rows), size=(350, 2))
    oracle = (want.astype(np.float64) - mean) @ proj
    oracle /= np.linalg.norm(oracle, axis=1, keepdims=True)
    np.testing.assert_allclose(p[big], oracle[big], atol=1e-5)
    np.testing.assert_allclose(p[big], p[0:len(rows)][big], atol=1e-6)
    assert p[np.zeros((0, 3), dtype=np.int64)].shape == (0, 3, 8)


def _mapped_kb(path) -> int:
    """Resident kB of the mappings of ``path`` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and " " in line and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_memory_mapped_rows_are_read_without_the_map(tmp_path):
    """A memory-mapped store streams through read_rows / UnitRows bit for bit as through the map itself,
    and leaves none of its pages in this process's resident set (the peak-RSS limit at COCO scale)."""
    from pathlib import Path

    from liid.graph.knn import UnitRows, feature_mean
    from liid.graph.mapped import gather_rows, read_rows

    rng = np.random.default_rng(0)
    path = tmp_path / "features.npy"
    np.save(path, rng.normal(size=(3001, 257)).astype(np.float16))  # odd sizes: rows cross page bounds
    f = np.load(path, mmap_mode="r")
    ref = np.load(path)
    for a, b in [(0, 1), (7, 1000), (2999, 3001), (2990, 4000), (5, 5)]:
        np.testing.assert_array_equal(read_rows(f, a, b), ref[a:b])
    np.testing.assert_array_equal(read_rows(ref, 3, 9), ref[3:9])  # in-memory arrays: a plain slice
    rows = np.array([0, 3, 4, 1500, 3000])
    np.testing.assert_array_equal(gather_rows(f, rows), ref[rows])
    np.testing.assert_array_equal(feature_mean(f, chunk=128), feature_mean(ref, chunk=128))
    u, want = UnitRows(f, centre=feature_mean(ref), chunk=256), normalized(ref, centre=feature_mean(ref))
    np.testing.assert_array_equal(np.asarray(u), want)
    np.testing.assert_array_equal(u[np.array([[9, 2], [2, 3000]])], want[np.array([[9, 2], [2, 3000]])])
    if Path("/proc/self/smaps").exists():
        np.asarray(f[:]).sum()  # reading through the map does make it resident: the probe sees pages
        assert _mapped_kb(path) > 1000
        f.base.madvise(__import__("mmap").MADV_DONTNEED)
        np.asarray(u)
        gather_rows(f, np.arange(0, 3001, 3))
        from liid.graph.feature_store import _finite_rows

        assert _finite_rows(f, chunk=500) is None  # the store's validation reads all of it too
        assert _mapped_kb(path) < 64


@pytest.mark.parametrize("neighbours", ["all", "cross-image"])
def test_out_of_core_build_is_the_in_memory_graph(neighbours):
    store, _ = make_feature_store(SyntheticSpec(images=400, dim=96, seed=5))
    cfg = GraphConfig(knn=KnnConfig(method="ivf", nlist=32, nprobe=12, pca_dim=48), neighbours=neighbours,
                      centre=True)
    g1, s1 = build_graph(store, cfg, recall_sample=200)
    g2, s2 = build_graph(store, cfg, recall_sample=200, in_memory_gb=1e-6)
    assert (s1["knn"]["out_of_core"], s2["knn"]["out_of_core"]) == (False, True)
    np.testing.assert_array_equal(g2.edges, g1.edges)
    # the out-of-core re-rank sums float32 slab products in float64: the same cosines to float32 rounding
    np.testing.assert_allclose(g2.weights, g1.weights, rtol=1e-6)
    assert s2["knn"]["recall_at_k"] == s1["knn"]["recall_at_k"] > 0.8


@pytest.mark.parametrize("memory_rows", [10_000, 40, 17, 1])  # one slab, several, uneven, one column each
def test_slab_cosines_are_the_exact_cosines(tmp_path, memory_rows):
    """Oracle: float64 cosines of the centred rows, by brute force; from a memory-mapped store, in slabs."""
    from liid.graph.slab_cosines import slab_cosines

    rng = np.random.default_rng(3)
    f = np.abs(rng.normal(size=(2500, 150))).astype(np.float16)
    mu = f[7].astype(np.float64)  # the centre is row 7: a row that is zero once centred, cosine 0 with everything
    np.save(tmp_path / "f.npy", f)
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    cand = rng.integers(-1, len(f), size=(len(f), 6))
    cand[7, 0], cand[9, 1] = 9, 7
    got = slab_cosines(mapped, cand, mu, memory_bytes=memory_rows * 4 * len(f), progress=False)
    y = f.astype(np.float64) - mu
    unit = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-300)
    want = np.einsum("ncd,nd->nc", unit[np.where(cand < 0, 0, cand)], unit)
    assert np.isneginf(got[cand < 0]).all()
    np.testing.assert_allclose(got[cand >= 0], want[cand >= 0], atol=2e-6)
    assert got[7, 0] == 0 and got[9, 1] == 0


def test_cross_image_recall_is_against_cross_image_neighbours():
    """Oracle: brute force with the same image's rows excluded; the exact cross-image search has recall 1."""
    store, _ = make_feature_store(SyntheticSpec(images=50, proposals_per_image=6, dim=32, seed=1))
    x = normalized(store.features)
    groups = np.asarray(store.proposal_image)
    s = x.astype(np.float64) @ x.astype(np.float64).T
    s[groups[:, None] == groups[None, :]] = -np.inf
    brute = np.argsort(-s, axis=1, kind="stable")[:, :3]
    assert recall_at_k(x, brute, 300, 3, groups=groups) == 1.0
    assert recall_at_k(x, brute, 300, 3) < 0.9  # against neighbours of any image: not the same lists
    idx, _, _ = knn(x, KnnConfig(method="exact"), groups=groups)
    assert recall_at_k(x, idx, 300, 3, groups=groups) == 1.0


def test_row_chunked_selections_are_the_row_by_row_rule(monkeypatch):
    """Oracle: a plain loop per row. The chunked drop_same_group (rows in steps of ROW_CHUNK) and the in-place
    masking of own-group candidates give what the rule says, across chunk edges."""
    from liid.graph import knn as knn_mod

    monkeypatch.setattr(knn_mod, "ROW_CHUNK", 7)
    rng = np.random.default_rng(4)
    n, c, k = 50, 9, 3
    groups = rng.integers(0, 6, size=n)
    idx = rng.integers(-1, n, size=(n, c))
    sim = rng.random((n, c)).astype(np.float32)
    got_i, got_s = knn_mod.drop_same_group(idx, sim, groups, k)
    masked = knn_mod._mask_groups(idx.copy(), groups)
    for r in range(n):
        keep = [j for j in range(c) if idx[r, j] >= 0 and groups[idx[r, j]] != groups[r]][:k]
        want = [idx[r, j] for j in keep] + [-1] * (k - len(keep))
        assert got_i[r].tolist() == want
        assert got_s[r, :len(keep)].tolist() == [sim[r, j] for j in keep] and np.isneginf(got_s[r, len(keep):]).all()
        assert [m for m in masked[r] if m >= 0] == [idx[r, j] for j in range(c) if idx[r, j] >= 0
                                                    and groups[idx[r, j]] != groups[r]]
    own_i, _ = knn_mod._drop_self(idx, sim, k)  # _first_good's own chunks (50 rows > 7)
    for r in range(n):
        want = [int(v) for v in idx[r] if v >= 0 and v != r][:k]
        assert own_i[r].tolist() == want + [-1] * (k - len(want))


def test_bench_nprobe_scores_what_build_graph_measures(tmp_path, capsys):
    """tools/bench_nprobe.py (recall at other probe counts without a whole build) scores build-graph's own
    recall@3 at its settings, and exhaustive search in the full dimension scores 1."""
    import importlib.util
    import json
    from pathlib import Path

    from liid.graph.feature_store import read_feature_store, write_feature_store

    store, _ = make_feature_store(SyntheticSpec(images=400, dim=96, seed=5))
    write_feature_store(tmp_path / "store", store)
    cfg = GraphConfig(knn=KnnConfig(method="ivf", nlist=32, nprobe=2, pca_dim=24), neighbours="cross-image",
                      centre=True)
    _, stats = build_graph(read_feature_store(tmp_path / "store"), cfg, recall_sample=300, in_memory_gb=1e-6)
    spec = importlib.util.spec_from_file_location("bench_nprobe", Path(__file__).parents[1] / "tools/bench_nprobe.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    def scores(*args: str) -> dict[int, float]:
        assert tool.main([str(tmp_path / "store"), "--nlist", "32", "--recall-sample", "300",
                          "--time-sample", "50", *args]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        return {r["nprobe"]: r["recall_at_3"] for r in rows}

    got = scores("--pca-dim", "24", "--nprobes", "2,32")
    assert abs(got[2] - stats["knn"]["recall_at_k"]) <= 0.01 < 1 - got[2]  # a search that misses some
    assert got[32] >= got[2]
    assert scores("--pca-dim", "0", "--nprobes", "32")[32] == 1.0
