"""The exact multiway cut (graph.solve and its parts) against brute force, known optima and one global MIP."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from liid.errors import LiidError
from liid.graph import highs_backend
from liid.graph.build import GraphConfig, build_graph
from liid.graph.ckr import ckr_lp
from liid.graph.energy import potts_energy, unary_cost
from liid.graph.graph_file import CutGraph
from liid.graph.highs_backend import SolveResult
from liid.graph.instances import from_terminal_edges
from liid.graph.maxflow_moves import alpha_expansion, binary_structure, minimize_binary
from liid.graph.solve import SolveConfig, solve_graph
from liid.synthetic_features import SyntheticSpec, make_feature_store

KNOWN_OPTIMA = Path(__file__).resolve().parents[2] / "shared/data/multiway-cut/small_graphs_known_optima.json"
HAS_CPLEX = importlib.util.find_spec("cplex") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None
TOL = 1e-6
# the LP and branch-and-bound paths themselves (persistency would fix some of these small graphs whole)
NO_REDUCTION = SolveConfig(persistency=False)


# ----------------------------------------------------------------------------------------- helpers


def energies(terminal, edges, weights, combos) -> np.ndarray:
    """Potts energy of each row of ``combos`` [M, n] (vectorised ``potts_energy``)."""
    n = terminal.shape[0]
    e = unary_cost(terminal)[np.arange(n), combos].sum(axis=1)
    if len(edges):
        e = e + ((combos[:, edges[:, 0]] != combos[:, edges[:, 1]]) * weights).sum(axis=1)
    return e


def brute_force(terminal, allowed, edges, weights, offset=0.0) -> tuple[float, np.ndarray]:
    """Minimum Potts energy over every allowed labeling (itertools.product), and one minimiser."""
    n = terminal.shape[0]
    choices = [np.nonzero(allowed[u])[0].tolist() for u in range(n)]
    combos = np.array(list(itertools.product(*choices)), dtype=np.int64).reshape(-1, n)
    e = energies(terminal, edges, weights, combos) + offset
    best = int(np.argmin(e))
    lab = combos[best]
    assert potts_energy(terminal, edges, weights, lab, offset) == pytest.approx(e[best], abs=1e-9)
    return float(e[best]), lab


def random_edges(rng, n, p):
    pairs = np.array([(u, v) for u in range(n) for v in range(u + 1, n)], dtype=np.int64).reshape(-1, 2)
    return pairs[rng.random(len(pairs)) < p]


def random_graph(rng, n, L, mode, p, integer=False, masked_terminals=True) -> CutGraph:
    """mode 'liid': background + 1-2 foreground labels per node; 'free': every label; 'mask': any mask."""
    if mode == "liid":
        allowed = np.zeros((n, L), dtype=bool)
        allowed[:, 0] = True
        for u in range(n):
            allowed[u, 1 + rng.choice(L - 1, size=min(L - 1, int(rng.integers(1, 3))), replace=False)] = True
    elif mode == "free":
        allowed = np.ones((n, L), dtype=bool)
    else:
        allowed = rng.random((n, L)) < 0.5
        allowed[np.arange(n), rng.integers(0, L, size=n)] = True
    if integer:
        terminal = rng.integers(0, 4, size=(n, L)).astype(np.float64)
    else:
        terminal = rng.dirichlet(np.ones(L), size=n)
    if masked_terminals:
        terminal = np.where(allowed, terminal, 0.0)
    edges = random_edges(rng, n, p)
    if integer:
        weights = rng.integers(1, 4, size=len(edges)).astype(np.float64)
    else:
        weights = rng.random(len(edges)) * rng.choice([0.5, 2.0, 5.0])
    return CutGraph(terminal=terminal, allowed=allowed, edges=edges, weights=weights,
                    classes=[f"c{k}" for k in range(L)]).with_components()


def gap_graph(rng, restrict=False) -> CutGraph:
    """ktcut_small_2/3-like: one node per pair (or triple) of labels, tied to those labels' terminals with
    equal weight, nodes densely linked; the CKR LP is often fractional (half-integral) here."""
    L = int(rng.choice([3, 4]))
    subsets = list(itertools.combinations(range(L), 2 if rng.random() < 0.7 else L - 1))
    n = len(subsets)
    terminal = np.zeros((n, L))
    a = float(rng.integers(2, 4))
    for u, sub in enumerate(subsets):
        terminal[u, list(sub)] = a
    allowed = np.ones((n, L), dtype=bool)
    if restrict:  # LIID-like: background plus the node's own labels
        allowed = terminal > 0
        allowed[:, 0] = True
    edges = random_edges(rng, n, 0.9)
    return CutGraph(terminal=terminal, allowed=allowed, edges=edges, weights=np.ones(len(edges)),
                    classes=[f"c{k}" for k in range(L)]).with_components()


def disjoint_union(a: CutGraph, b: CutGraph) -> CutGraph:
    """Both graphs side by side (labels padded to the larger label set, never allowed)."""
    L = max(a.terminal.shape[1], b.terminal.shape[1])

    def pad(x, fill):
        return np.pad(x, ((0, 0), (0, L - x.shape[1])), constant_values=fill)

    return CutGraph(terminal=np.concatenate([pad(a.terminal, 0.0), pad(b.terminal, 0.0)]),
                    allowed=np.concatenate([pad(a.allowed, False), pad(b.allowed, False)]),
                    edges=np.concatenate([a.edges, b.edges + a.num_nodes]).astype(np.int64),
                    weights=np.concatenate([a.weights, b.weights]),
                    classes=[f"c{k}" for k in range(L)]).with_components()


def check_solution(g: CutGraph, labels, records, summary):
    """What every solve must satisfy: allowed labels, objective = energy, valid bounds."""
    assert labels.shape == (g.num_nodes,)
    assert g.allowed[np.arange(g.num_nodes), labels].all()
    energy = potts_energy(g.terminal, g.edges, g.weights, labels, g.offset)
    assert summary["objective"] == pytest.approx(energy, abs=TOL)
    assert summary["lower_bound"] <= summary["objective"] + 1e-9
    assert len(records) == g.num_components == summary["components"]
    for r in records:
        assert r.lower_bound <= r.objective + 1e-9
        if r.lp_bound is not None:
            assert r.lp_bound <= r.objective + 1e-9


def load_known():
    if not KNOWN_OPTIMA.is_file():
        pytest.skip(f"{KNOWN_OPTIMA} not found (shared multiway-cut data set absent in this checkout)")
    out = []
    for inst in json.loads(KNOWN_OPTIMA.read_text()):
        ids: dict[str, int] = {}

        def node(v, ids=ids):
            return ids.setdefault(json.dumps(v), len(ids))

        terminals = [node(t) for t in inst["terminals"]]
        edges = np.array([[node(u), node(v), w] for u, v, w in inst["edges"]], dtype=np.float64)
        g, _ = from_terminal_edges(len(ids), terminals, edges, where=inst["name"])
        out.append((inst, g))
    return out


def records_by_id(records):
    return {r.id: r for r in records}


# ------------------------------------------------------------------------------ exact vs brute force


def test_solver_equals_brute_force_on_random_small_graphs():
    rng = np.random.default_rng(2024)
    modes = ["liid", "free", "mask"]
    seen_methods: set[str] = set()
    for trial in range(180):
        n = int(rng.integers(2, 9))
        L = int(rng.integers(2, 6))
        mode = modes[trial % 3]
        if mode == "free" and L ** n > 100_000:
            L = 3
        g = random_graph(rng, n, L, mode, p=float(rng.choice([0.15, 0.4, 0.8])), integer=trial % 2 == 1,
                         masked_terminals=trial % 5 != 0)
        if trial % 4 == 0:  # an integrality-gap-prone component, alone or beside the random graph
            h = gap_graph(rng, restrict=trial % 8 == 0)
            g = h if (trial % 3 == 0 or g.num_nodes + h.num_nodes > 12) else disjoint_union(h, g)
        cfg = SolveConfig(chunk_nodes=int(rng.choice([1, 20000])))
        labels, records, summary = solve_graph(g, cfg, progress=False)
        opt, _ = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        assert summary["objective"] == pytest.approx(opt, abs=TOL), (trial, summary)
        check_solution(g, labels, records, summary)
        assert all(r.certified for r in records), [r for r in records if not r.certified]
        assert summary["certified_optimal_components"] == len(records)
        assert summary["uncertified_components"] == []
        seen_methods |= {r.method for r in records}
    # the trials exercise every exact path
    assert {"trivial", "maxflow", "lp", "lp+branch-and-bound"} <= seen_methods


# ---------------------------------------------------------------------------------- known optima


def test_known_optima_instances():
    known = load_known()
    assert len(known) == 6
    gaps = 0
    for inst, g in known:
        labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
        check_solution(g, labels, records, summary)
        assert summary["objective"] == pytest.approx(inst["ip_opt"], abs=TOL), inst["name"]
        assert summary["lp_bound"] == pytest.approx(inst["lp_value"], abs=TOL), inst["name"]
        assert all(r.certified for r in records), inst["name"]
        if inst["lp_value"] < inst["ip_opt"] - TOL:
            gaps += 1
            assert sum(r.lp_gap for r in records) == pytest.approx(inst["ip_opt"] - inst["lp_value"], abs=TOL)
            assert any(r.lp_gap > TOL for r in records)
            assert summary["lower_bound"] == pytest.approx(inst["ip_opt"], abs=TOL)
        else:
            assert all(abs(r.lp_gap) <= TOL for r in records)
    assert gaps == 3


def test_from_terminal_edges_objective_is_the_cut_value():
    """Terminal-terminal edges (offset), parallel edges, self-loops: solve = brute-force cut value."""
    rng = np.random.default_rng(21)
    for _ in range(30):
        num = int(rng.integers(4, 10))
        k = int(rng.integers(2, min(4, num - 1) + 1))
        terminals = rng.choice(num, size=k, replace=False).tolist()
        m = int(rng.integers(3, 20))
        raw = np.stack([rng.integers(0, num, m), rng.integers(0, num, m), rng.integers(0, 4, m)], axis=1)
        raw = np.concatenate([raw, raw[:2], [[terminals[0], terminals[1], 2.0]]]).astype(np.float64)
        g, node_ids = from_terminal_edges(num, terminals, raw)
        assert sorted(node_ids.tolist()) == sorted(set(range(num)) - set(terminals))
        labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
        # brute force on the original graph: each non-terminal joins one terminal
        best = np.inf
        for assign in itertools.product(range(k), repeat=len(node_ids)):
            side = np.empty(num, dtype=np.int64)
            side[terminals] = np.arange(k)
            side[node_ids] = assign
            u, v = raw[:, 0].astype(int), raw[:, 1].astype(int)
            best = min(best, float(raw[side[u] != side[v], 2].sum()))
        assert summary["objective"] == pytest.approx(best, abs=TOL)
        check_solution(g, labels, records, summary)
        assert g.offset >= 2.0


# ------------------------------------------------------------------------- component decomposition


def many_component_graph(rng, sizes, L=4, p=0.5):
    """Disjoint random components (each connected by a path plus random chords), nodes shuffled."""
    n = int(sum(sizes))
    perm = rng.permutation(n)
    edges, start = [], 0
    for s in sizes:
        local = np.arange(start, start + s)
        path = np.stack([local[:-1], local[1:]], axis=1)
        chords = random_edges(rng, s, p) + start
        edges.append(np.concatenate([path, chords]))
        start += s
    e = perm[np.unique(np.concatenate(edges), axis=0)]
    e = np.unique(np.sort(e, axis=1), axis=0)
    allowed = np.zeros((n, L), dtype=bool)
    allowed[:, 0] = True
    for u in range(n):
        allowed[u, 1 + rng.choice(L - 1, size=int(rng.integers(1, 3)), replace=False)] = True
    allowed[rng.random(n) < 0.3] = True  # some nodes allow every label
    terminal = np.where(allowed, rng.dirichlet(np.ones(L), size=n), 0.0)
    weights = rng.random(len(e)) * 1.5
    return CutGraph(terminal=terminal, allowed=allowed, edges=e, weights=weights,
                    classes=[f"c{k}" for k in range(L)]).with_components()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_equal_one_global_mip(seed):
    rng = np.random.default_rng(seed)
    g = many_component_graph(rng, sizes=[12, 9, 1, 15, 6, 2, 10, 7])
    assert g.num_components == 8
    labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
    check_solution(g, labels, records, summary)
    lp = ckr_lp(g.terminal, g.allowed, g.edges, g.weights)
    mip = highs_backend.solve(lp, integer=True)
    relax = highs_backend.solve(lp, integer=False)
    assert mip.status == "optimal" and relax.status == "optimal"
    assert summary["objective"] == pytest.approx(mip.objective, abs=TOL)
    assert potts_energy(g.terminal, g.edges, g.weights, lp.labels(mip.x, g.num_nodes)) == pytest.approx(
        mip.objective, abs=TOL)
    # the LP is separable: the per-component bounds add up to the global LP value
    assert summary["lp_bound"] == pytest.approx(relax.objective, abs=TOL)

    one, rec1, s1 = solve_graph(g, SolveConfig(chunk_nodes=1), progress=False)
    big, rec2, s2 = solve_graph(g, SolveConfig(chunk_nodes=10**6), progress=False)
    np.testing.assert_array_equal(one, big)
    np.testing.assert_array_equal(one, labels)
    assert s1["objective"] == pytest.approx(s2["objective"], abs=1e-9)
    assert [r.id for r in rec1] == [r.id for r in rec2] == list(range(g.num_components))
    for a, b in zip(rec1, rec2, strict=True):
        assert (a.nodes, a.edges, a.labels) == (b.nodes, b.edges, b.labels)
        assert a.objective == pytest.approx(b.objective, abs=TOL)
        assert a.lp_bound == pytest.approx(b.lp_bound, abs=TOL)
    sizes = np.bincount(g.component)
    for r in records:
        assert r.nodes == sizes[r.id]
        assert r.edges == int((g.component[g.edges[:, 0]] == r.id).sum())


# --------------------------------------------------------------------------------- parallel = serial


@pytest.fixture(scope="module")
def generated_graph():
    store, _ = make_feature_store(SyntheticSpec(images=150, dim=64))
    g, _ = build_graph(store, GraphConfig(same_label_pairs=True))
    return g


@pytest.fixture(scope="module")
def serial_solution(generated_graph):
    return solve_graph(generated_graph, SolveConfig(chunk_nodes=200), backend="serial", progress=False)


def test_generated_graph_serial(generated_graph, serial_solution):
    g = generated_graph
    labels, records, summary = serial_solution
    check_solution(g, labels, records, summary)
    assert summary["components"] > 100
    assert len(summary["methods"]) >= 3  # trivial, maxflow and lp components all present
    assert all(r.certified for r in records)


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_parallel_equals_serial(generated_graph, serial_solution, backend):
    if backend == "ray" and not HAS_RAY:
        pytest.skip("ray is not installed (pip install 'liid[ray]')")
    labels, records, summary = serial_solution
    plab, precs, psum = solve_graph(generated_graph, SolveConfig(chunk_nodes=200), backend=backend,
                                    workers=2, progress=False)
    np.testing.assert_array_equal(plab, labels)
    assert psum["objective"] == summary["objective"]
    assert psum["lower_bound"] == summary["lower_bound"]
    assert [(r.id, r.method, r.objective) for r in precs] == [(r.id, r.method, r.objective) for r in records]
    assert psum["backend"] == backend and psum["workers"] == 2


# ------------------------------------------------------------------------------- binary components


def binary_graph(rng, n, L=5, p=0.5, common=0):
    """Every node allows {common, a_u}; a few allow only {common}."""
    allowed = np.zeros((n, L), dtype=bool)
    allowed[:, common] = True
    others = [k for k in range(L) if k != common]
    a = rng.choice(others, size=n)
    allowed[np.arange(n), a] = True
    allowed[rng.random(n) < 0.15, :] = False
    allowed[:, common] = True
    terminal = np.where(allowed, rng.dirichlet(np.ones(L), size=n), 0.0)
    path = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    e = np.unique(np.concatenate([path, random_edges(rng, n, p)]), axis=0)
    return CutGraph(terminal=terminal, allowed=allowed, edges=e, weights=rng.random(len(e)) * 2,
                    classes=[f"c{k}" for k in range(L)]).with_components()


def test_binary_components_maxflow_and_lp():
    rng = np.random.default_rng(7)
    lp_methods = set()
    for trial in range(40):
        g = binary_graph(rng, n=int(rng.integers(3, 9)), common=0 if trial % 4 else 2)
        assert g.num_components == 1
        if g.allowed.any(axis=0).sum() < 2:
            continue  # a single label everywhere: trivial, not a cut
        c, other = binary_structure(g.allowed)
        assert g.allowed[:, c].all()
        opt, _ = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
        assert records[0].method == "maxflow"
        assert summary["objective"] == pytest.approx(opt, abs=TOL)
        check_solution(g, labels, records, summary)
        assert records[0].certified
        lab2, rec2, sum2 = solve_graph(g, SolveConfig(maxflow=False, persistency=False), progress=False)
        assert rec2[0].method in ("lp", "lp+branch-and-bound")
        lp_methods.add(rec2[0].method)
        assert sum2["objective"] == pytest.approx(opt, abs=TOL)
        check_solution(g, lab2, rec2, sum2)
        # the CKR LP of a binary-structure component is integral (its value is the integer optimum)
        assert rec2[0].lp_bound == pytest.approx(opt, abs=TOL)
        assert rec2[0].certified
    assert "lp" in lp_methods


def test_binary_structure_detection():
    al = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    c, other = binary_structure(al)
    assert c == 0 and other.tolist() == [1, 2, 0]
    assert binary_structure(np.array([[1, 1, 1, 0], [1, 0, 1, 0]], dtype=bool)) is None  # 3 labels
    assert binary_structure(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)) is None  # no common


# ------------------------------------------------------------------------------ time-limit fallbacks


def _patched(monkeypatch, *, lp_status=None, mip_status=None, keep_incumbent=False):
    real = highs_backend.solve
    calls = {"lp": 0, "mip": 0}

    def fake(lp, integer=False, time_limit=60.0, **kwargs):
        calls["mip" if integer else "lp"] += 1
        status = mip_status if integer else lp_status
        if status is None:
            return real(lp, integer=integer, time_limit=time_limit, **kwargs)
        x = real(lp, integer=True).x if (integer and keep_incumbent) else None
        obj = float(lp.c @ x) if x is not None else float("inf")
        return SolveResult(status, x, obj, float("-inf"), 0.0)

    monkeypatch.setattr(highs_backend, "solve", fake)
    return calls


def test_real_tiny_time_limit_still_labels_everything():
    """HiGHS gets 1 ms (the backend's floor): optimal or not, the answer is labeled with valid bounds."""
    for inst, g in load_known():
        labels, records, summary = solve_graph(g, SolveConfig(time_limit=1e-6), progress=False)
        check_solution(g, labels, records, summary)
        assert summary["objective"] >= inst["ip_opt"] - TOL
        assert summary["lower_bound"] <= inst["ip_opt"] + TOL
        for r in records:
            if not r.certified:
                assert "time limit" in r.method
                assert r.gap > 0


def test_mip_time_limit_falls_back_to_lp_rounding(monkeypatch):
    calls = _patched(monkeypatch, mip_status="time_limit")
    for inst, g in load_known():
        if inst["lp_value"] >= inst["ip_opt"] - TOL:
            continue  # integral LP: no branch-and-bound, nothing to fall back from
        labels, records, summary = solve_graph(g, NO_REDUCTION, progress=False)
        check_solution(g, labels, records, summary)
        (r,) = records
        assert not r.certified
        assert r.method == "lp rounding + alpha-expansion (time limit)"
        assert r.lp_bound == pytest.approx(inst["lp_value"], abs=TOL)
        assert r.lower_bound == pytest.approx(inst["lp_value"], abs=TOL)  # no MIP bound: the LP's
        assert summary["objective"] >= inst["ip_opt"] - TOL
        assert summary["uncertified_components"] == [r.id]
    # per instance one MIP, or two: first over the LP's labels (column generation), then over all of them
    assert 3 <= calls["mip"] <= 6


def test_mip_time_limit_keeps_a_better_incumbent(monkeypatch):
    _patched(monkeypatch, mip_status="time_limit", keep_incumbent=True)
    for inst, g in load_known():
        if inst["lp_value"] >= inst["ip_opt"] - TOL:
            continue
        labels, records, summary = solve_graph(g, NO_REDUCTION, progress=False)
        check_solution(g, labels, records, summary)
        assert summary["objective"] == pytest.approx(inst["ip_opt"], abs=TOL)  # the incumbent is optimal
        assert not records[0].certified and "(time limit)" in records[0].method


def test_mip_time_limit_on_random_graph(monkeypatch):
    _patched(monkeypatch, mip_status="time_limit")
    rng = np.random.default_rng(11)
    fallbacks = 0
    for _ in range(15):
        g = disjoint_union(gap_graph(rng), random_graph(rng, n=4, L=4, mode="liid", p=0.5))
        labels, records, summary = solve_graph(g, NO_REDUCTION, progress=False)
        check_solution(g, labels, records, summary)
        opt, _ = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        assert summary["lower_bound"] <= opt + TOL <= summary["objective"] + 2 * TOL
        for r in records:
            if not r.certified:
                fallbacks += 1
                assert "time limit" in r.method
    assert fallbacks > 0  # some LPs were fractional, so the fallback ran


def test_lp_time_limit_falls_back_to_alpha_expansion(monkeypatch):
    calls = _patched(monkeypatch, lp_status="time_limit")
    rng = np.random.default_rng(12)
    expanded = 0
    for trial in range(20):
        g = random_graph(rng, n=7, L=4, mode="free" if trial % 2 else "mask", p=0.5)
        labels, records, summary = solve_graph(g, NO_REDUCTION, progress=False)
        check_solution(g, labels, records, summary)
        opt, _ = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        assert summary["lower_bound"] <= opt + TOL
        for r in records:
            if r.method not in ("trivial", "maxflow"):
                assert r.method == "alpha-expansion (LP time limit)"
                assert r.lp_bound is None and r.lp_gap is None
                expanded += 1
        if any(r.lp_bound is None for r in records):
            assert summary["lp_bound"] is None
        # expansion moves are within twice the optimum for Potts energies
        assert summary["objective"] <= 2 * opt + TOL
    assert expanded > 0 and calls["lp"] > 0 and calls["mip"] == 0


# ------------------------------------------------------------------------------- max-flow moves


def binary_energies(u0, u1, edges, table, Y) -> np.ndarray:
    """Energy of each row of Y [M, n] in {0, 1}: unary u0/u1 plus the pair tables."""
    E = np.where(Y == 1, u1, u0).sum(axis=1)
    if len(edges):
        E = E + table[np.arange(len(edges)), 2 * Y[:, edges[:, 0]] + Y[:, edges[:, 1]]].sum(axis=1)
    return E


def test_minimize_binary_matches_brute_force():
    rng = np.random.default_rng(13)
    for _ in range(60):
        n = int(rng.integers(1, 10))
        edges = random_edges(rng, n, 0.5)
        m = len(edges)
        e01, e10 = rng.random(m) * 2, rng.random(m) * 2
        share = rng.random((m, 2))
        share /= share.sum(axis=1, keepdims=True) / rng.random((m, 1))  # e00 + e11 <= e01 + e10
        e00, e11 = share[:, 0] * (e01 + e10), share[:, 1] * (e01 + e10)
        u0, u1 = rng.standard_normal(n), rng.standard_normal(n)
        y = minimize_binary(u0, u1, edges, e00, e01, e10, e11)
        assert y.dtype == bool and y.shape == (n,)
        ys = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.int64).reshape(-1, n)
        table = np.stack([e00, e01, e10, e11], axis=1)  # E(y_u, y_v) = table[:, 2 * y_u + y_v]
        best = binary_energies(u0, u1, edges, table, ys).min()
        got = binary_energies(u0, u1, edges, table, y.astype(np.int64)[None])[0]
        assert got == pytest.approx(best, abs=1e-9)


def test_minimize_binary_rejects_non_submodular():
    with pytest.raises(ValueError, match="submodular"):
        minimize_binary(np.zeros(2), np.zeros(2), np.array([[0, 1]]), np.array([1.0]), np.array([0.0]),
                        np.array([0.0]), np.array([1.0]))


def test_alpha_expansion_descends_and_is_expansion_optimal():
    rng = np.random.default_rng(14)
    for trial in range(200):
        n, L = int(rng.integers(2, 9)), int(rng.integers(2, 6))
        g = random_graph(rng, n, L, ["liid", "free", "mask"][trial % 3], p=0.6, integer=trial % 2 == 0)
        start = np.array([rng.choice(np.nonzero(g.allowed[u])[0]) for u in range(n)])
        e0 = potts_energy(g.terminal, g.edges, g.weights, start)
        lab = alpha_expansion(g.terminal, g.allowed, g.edges, g.weights, start)
        assert g.allowed[np.arange(n), lab].all()
        e1 = potts_energy(g.terminal, g.edges, g.weights, lab)
        assert e1 <= e0 + 1e-9
        opt, opt_lab = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        # local optimum for every expansion move (brute force over subsets switching to alpha) ...
        for alpha in np.nonzero(g.allowed.any(axis=0))[0]:
            var = np.nonzero(g.allowed[:, alpha] & (lab != alpha))[0]
            switch = np.array(list(itertools.product([False, True], repeat=len(var))), dtype=bool)
            cand = np.repeat(lab[None], len(switch), axis=0)
            cand[:, var] = np.where(switch, alpha, cand[:, var])
            assert energies(g.terminal, g.edges, g.weights, cand).min() >= e1 - 1e-9, (trial, alpha)
        # ... hence within the Potts bound E(opt) + E_pairs(opt) <= 2 E(opt)
        pairs = energies(np.zeros_like(g.terminal), g.edges, g.weights, opt_lab[None])[0]
        assert e1 <= opt + pairs + 1e-9


# ----------------------------------------------------------------------------------------- CPLEX


@pytest.mark.skipif(not HAS_CPLEX, reason="cplex is not installed (pip install 'liid[cplex]')")
def test_cplex_reaches_known_optima():
    for inst, g in load_known():
        labels, records, summary = solve_graph(g, SolveConfig(solver="cplex"), progress=False)
        check_solution(g, labels, records, summary)
        assert summary["solver"] == "cplex"
        assert summary["objective"] == pytest.approx(inst["ip_opt"], abs=TOL), inst["name"]
        assert summary["lp_bound"] == pytest.approx(inst["lp_value"], abs=TOL), inst["name"]
        assert all(r.certified for r in records)


@pytest.mark.skipif(not HAS_CPLEX, reason="cplex is not installed (pip install 'liid[cplex]')")
def test_cplex_matches_highs_on_random_graphs():
    rng = np.random.default_rng(15)
    for trial in range(10):
        g = random_graph(rng, n=7, L=4, mode=["liid", "free"][trial % 2], p=0.6, integer=True)
        _, _, s_h = solve_graph(g, SolveConfig(), progress=False)
        lab, rec, s_c = solve_graph(g, SolveConfig(solver="cplex"), progress=False)
        check_solution(g, lab, rec, s_c)
        assert s_c["objective"] == pytest.approx(s_h["objective"], abs=TOL)
        assert s_c["lp_bound"] == pytest.approx(s_h["lp_bound"], abs=TOL)


@pytest.mark.skipif(not HAS_CPLEX, reason="cplex is not installed (pip install 'liid[cplex]')")
def test_cplex_community_edition_limit_names_the_component():
    rng = np.random.default_rng(16)
    n = 301  # node 0 alone (component 0); a 300-node path with 4 free labels (component 1): 1200 x columns
    terminal = rng.random((n, 4))
    edges = np.stack([np.arange(1, n - 1), np.arange(2, n)], axis=1)
    g = CutGraph(terminal=terminal, allowed=np.ones((n, 4), dtype=bool), edges=edges,
                 weights=rng.random(len(edges)), classes=list("abcd")).with_components()
    assert g.num_components == 2
    try:
        solve_graph(g, SolveConfig(solver="cplex"), progress=False)
    except LiidError as e:
        msg = str(e)
        assert "Community Edition" in msg
        assert "component 1" in msg
        return
    pytest.skip("the installed CPLEX is not the size-limited Community Edition (the solve succeeded)")
