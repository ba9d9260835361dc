"""Persistency (a fixed node) and column generation (a lazily added column) against brute force, the full
LP and the known optima: each reduction must leave the optimum where it was."""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liid.graph import highs_backend
from liid.graph.ckr import ckr_lp_cost
from liid.graph.columns import folded_costs, price, solve_columns
from liid.graph.energy import labeling_cost, unary_cost
from liid.graph.instances import from_terminal_edges, read_dimacs
from liid.graph.maxflow_moves import alpha_expansion_cost
from liid.graph.persistency import persistency, reduce
from liid.graph.solve import SolveConfig, solve_graph
from tests.test_solver import brute_force, check_solution, gap_graph, load_known, random_graph

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6

_spec = importlib.util.spec_from_file_location("make_mwc_instances", ROOT / "tools" / "make_mwc_instances.py")
make_mwc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_mwc)


def masked_cost(g):
    return np.where(g.allowed, unary_cost(g.terminal), np.inf)


def all_labelings(allowed):
    n = allowed.shape[0]
    choices = [np.nonzero(allowed[u])[0].tolist() for u in range(n)]
    return np.array(list(itertools.product(*choices)), dtype=np.int64).reshape(-1, n)


def energies(cost, edges, weights, combos):
    n = cost.shape[0]
    e = np.where(np.isfinite(cost), cost, 0.0)[np.arange(n), combos].sum(axis=1)
    if len(edges):
        e = e + ((combos[:, edges[:, 0]] != combos[:, edges[:, 1]]) * weights).sum(axis=1)
    return e


def random_small(rng, trial):
    n = int(rng.integers(2, 8))
    L = int(rng.integers(2, 6))
    mode = ["liid", "free", "mask"][trial % 3]
    if mode == "free" and L ** n > 50_000:
        L = 3
    g = random_graph(rng, n, L, mode, p=float(rng.choice([0.2, 0.5, 0.9])), integer=trial % 2 == 1)
    return gap_graph(rng, restrict=trial % 8 == 0) if trial % 5 == 0 else g


# ------------------------------------------------------------------------------------- persistency


def test_persistency_keeps_an_optimum_on_random_small_graphs():
    """Brute force over the labelings that agree with every fixed node reaches the global optimum."""
    rng = np.random.default_rng(31)
    fixed_total = 0
    for trial in range(200):
        g = random_small(rng, trial)
        cost = masked_cost(g)
        red = persistency(cost, g.edges, g.weights)
        combos = all_labelings(g.allowed)
        e = energies(cost, g.edges, g.weights, combos)
        fixed = red.fixed >= 0
        agree = (combos[:, fixed] == red.fixed[fixed]).all(axis=1)
        assert agree.any(), trial
        assert e[agree].min() == pytest.approx(e.min(), abs=TOL), trial
        assert g.allowed[np.nonzero(fixed)[0], red.fixed[fixed]].all()
        fixed_total += int((fixed & (g.allowed.sum(axis=1) > 1)).sum())
    assert fixed_total > 100  # the test fixes nodes that had a choice, not only single-label ones


def test_reduction_energy_is_exact():
    """constant + reduced energy = the original energy of every labeling that agrees with the fixings."""
    rng = np.random.default_rng(32)
    for trial in range(60):
        g = random_small(rng, trial)
        cost = masked_cost(g)
        fixed = np.where(rng.random(g.num_nodes) < 0.5, -1, 0)
        for u in np.nonzero(fixed >= 0)[0]:
            fixed[u] = rng.choice(np.nonzero(g.allowed[u])[0])
        red = reduce(cost, g.edges, g.weights, fixed)
        for _ in range(10):
            lab = fixed.copy()
            for u in red.free:
                lab[u] = rng.choice(np.nonzero(g.allowed[u])[0])
            full = labeling_cost(np.where(g.allowed, unary_cost(g.terminal), 0.0), g.edges, g.weights, lab)
            part = energies(red.cost, red.edges, red.weights, lab[red.free][None])[0]
            assert red.constant + part == pytest.approx(full, abs=1e-9)


def test_persistency_on_known_optima():
    """The fixed nodes are consistent with the proven optimum: the MIP of what is left + constant = it."""
    for inst, g in load_known():
        red = persistency(masked_cost(g), g.edges, g.weights)
        if red.free.size == 0:
            value = red.constant
        else:
            al = np.isfinite(red.cost)
            mip = highs_backend.solve(ckr_lp_cost(red.cost, al, red.edges, red.weights), integer=True)
            value = red.constant + mip.objective
        assert value + g.offset == pytest.approx(inst["ip_opt"], abs=TOL), inst["name"]


def test_persistency_fixes_much_of_a_standard_instance():
    term, rows = make_mwc.make_instance(320, 40, seed=0)
    g, _ = from_terminal_edges(320, term, rows.astype(np.float64))
    red = persistency(masked_cost(g), g.edges, g.weights)
    assert 0.2 < 1 - red.free.size / g.num_nodes < 1.0  # fixes a real share, and leaves work for the LP


# ------------------------------------------------------------------------------- column generation


def full_lp_value(cost, allowed, edges, weights):
    res = highs_backend.solve(ckr_lp_cost(cost, allowed, edges, weights))
    assert res.status == "optimal"
    return res.objective


def test_column_generation_equals_the_full_lp():
    """Random graphs, gap-prone ones included, with and without a start: the proven optimum of the
    restricted program is the full LP's optimum, and it often needs fewer columns."""
    rng = np.random.default_rng(33)
    fewer = 0
    for trial in range(150):
        g = random_small(rng, trial) if trial % 2 else random_graph(rng, 12, 6, "free", p=0.3)
        cost = np.where(g.allowed, unary_cost(g.terminal), 0.0)
        start = None
        if trial % 3:
            start = alpha_expansion_cost(cost, g.allowed, g.edges, g.weights,
                                         np.where(g.allowed, cost, np.inf).argmin(axis=1))
        r = solve_columns(cost, g.allowed, g.edges, g.weights, highs_backend.solve, start=start)
        full = full_lp_value(cost, g.allowed, g.edges, g.weights)
        assert r.status == "optimal"
        assert r.objective == pytest.approx(full, abs=TOL), trial
        assert r.bound == pytest.approx(full, abs=TOL), trial
        assert (r.support <= g.allowed).all()
        fewer += r.columns < r.full_columns
    assert fewer > 30


def gale_feasible(b, edges, half) -> bool:
    """Brute force over every node subset X: sum_X b <= boundary capacity (Gale's condition)."""
    n = b.size
    for bits in itertools.product([False, True], repeat=n):
        X = np.array(bits)
        cut = half[X[edges[:, 0]] != X[edges[:, 1]]].sum() if len(edges) else 0.0
        if b[X].sum() > cut + 1e-9:
            return False
    return True


def test_pricing_flow_matches_gales_condition():
    """A label passes pricing exactly when no node set demands more than its boundary can carry."""
    rng = np.random.default_rng(34)
    agree = {True: 0, False: 0}
    for _ in range(150):
        n, L = int(rng.integers(2, 8)), int(rng.integers(1, 4))
        allowed = np.ones((n, L), dtype=bool)
        pairs = np.array([(u, v) for u in range(n) for v in range(u + 1, n)]).reshape(-1, 2)
        edges = pairs[rng.random(len(pairs)) < 0.5]
        weights = rng.integers(1, 5, size=len(edges)).astype(np.float64)
        cost = rng.integers(0, 4, size=(n, L)).astype(np.float64)
        pi = rng.integers(-3, 5, size=n).astype(np.float64)
        folded = folded_costs(cost, allowed, edges, weights)
        add, deficit = price(folded, allowed, edges, weights, pi)
        expect = all(gale_feasible(pi - folded[:, k], edges, 0.5 * weights) for k in range(L))
        assert (deficit == 0.0) == expect
        agree[expect] += 1
        if not expect:
            assert add.any()
    assert agree[True] > 10 and agree[False] > 10


def test_pricing_lower_bound_is_valid():
    """sum pi - deficit never exceeds the LP optimum, whatever pi is."""
    rng = np.random.default_rng(35)
    for trial in range(80):
        g = random_small(rng, trial)
        cost = np.where(g.allowed, unary_cost(g.terminal), 0.0)
        full = full_lp_value(cost, g.allowed, g.edges, g.weights)
        pi = rng.normal(0, 2, size=g.num_nodes)
        _, deficit = price(folded_costs(cost, g.allowed, g.edges, g.weights), g.allowed, g.edges, g.weights, pi)
        assert pi.sum() - deficit <= full + 1e-7


# ------------------------------------------------------------------------------------- the solver


@pytest.mark.parametrize("persist,columns", [(True, True), (True, False), (False, True)])
def test_solver_variants_equal_brute_force(persist, columns):
    rng = np.random.default_rng(36)
    for trial in range(60):
        g = random_small(rng, trial)
        labels, records, summary = solve_graph(g, SolveConfig(persistency=persist, columns=columns), progress=False)
        opt, _ = brute_force(g.terminal, g.allowed, g.edges, g.weights)
        check_solution(g, labels, records, summary)
        assert summary["objective"] == pytest.approx(opt, abs=TOL)
        assert all(r.certified for r in records)


def test_solver_variants_on_known_optima():
    for inst, g in load_known():
        for cfg in (SolveConfig(), SolveConfig(persistency=False), SolveConfig(columns=False)):
            labels, records, summary = solve_graph(g, cfg, progress=False)
            check_solution(g, labels, records, summary)
            assert summary["objective"] == pytest.approx(inst["ip_opt"], abs=TOL), inst["name"]
            assert all(r.certified for r in records)
            # the LP of what persistency leaves is at least eq. (11)'s value, never above the optimum
            assert inst["lp_value"] - TOL <= summary["lp_bound"] <= inst["ip_opt"] + TOL
            if not cfg.persistency:
                assert summary["lp_bound"] == pytest.approx(inst["lp_value"], abs=TOL)


def test_standard_instance_certified_and_equal_to_the_textbook_ip(tmp_path):
    """A 200-node, 25-terminal instance of the benchmark family: ours is certified and agrees with the
    textbook integer program (every label at every node, one HiGHS MIP)."""
    out = tmp_path / "mwc"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_mwc_instances.py"), str(out), "--nodes", "200",
                    "--terminals", "25", "--seeds", "3"], check=True, capture_output=True)
    (f,) = sorted(out.glob("*.gr"))
    n, term, e = read_dimacs(f)
    g, _ = from_terminal_edges(n, term, e)
    labels, records, summary = solve_graph(g, SolveConfig(), progress=False)
    check_solution(g, labels, records, summary)
    assert all(r.certified for r in records)
    assert any("persistency" in r.method for r in records)
    from liid.graph.ckr import textbook_ckr_lp  # noqa: PLC0415

    mip = highs_backend.solve(textbook_ckr_lp(g.terminal, g.edges, g.weights), integer=True, time_limit=300)
    assert mip.status == "optimal"
    assert summary["objective"] == pytest.approx(mip.objective + g.offset, abs=TOL)


# ------------------------------------------------------------------------- the instance generator


@pytest.mark.parametrize("topology", ["random", "geometric", "grid"])
def test_generated_instances_have_the_asked_shape(topology):
    from scipy.sparse import coo_matrix  # noqa: PLC0415
    from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

    term, rows = make_mwc.make_instance(300, 30, seed=5, per_node=4.0, topology=topology,
                                        weight=(1, 10), terminal_weight=(20, 100))
    again = make_mwc.make_instance(300, 30, seed=5, per_node=4.0, topology=topology)
    assert term == again[0] and np.array_equal(rows, again[1])  # seeded: the same file every time
    assert len(term) == len(set(term)) == 30
    u, v, w = rows[:, 0], rows[:, 1], rows[:, 2]
    assert (u < v).all() and len(np.unique(u * 300 + v)) == len(rows)  # simple graph
    ncomp, _ = connected_components(coo_matrix((np.ones(len(rows)), (u, v)), shape=(300, 300)), directed=False)
    assert ncomp == 1
    if topology != "grid":
        assert 3.0 * 300 <= len(rows) <= 5.0 * 300
    at_t = np.isin(u, term) | np.isin(v, term)
    assert ((w[at_t] >= 20) & (w[at_t] <= 100)).all() and ((w[~at_t] >= 1) & (w[~at_t] <= 10)).all()
    with pytest.raises(Exception, match="terminals"):
        make_mwc.make_instance(10, 10, seed=0)


def test_bench_cut_runs_and_agrees(tmp_path):
    inst = tmp_path / "mwc"
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_mwc_instances.py"), str(inst), "--nodes", "60",
                    "120", "--terminals", "6", "12", "--seeds", "0"], check=True, capture_output=True)
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_cut.py"), str(inst), "--json", str(out),
                        "--variant", "no-persistency"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    import json  # noqa: PLC0415

    r = json.loads(out.read_text())
    assert len(r["instances"]) == 2
    for row in r["instances"]:
        assert row["ours"]["certified"] and row["textbook"]["certified"]
        assert row["ours"]["objective"] == pytest.approx(row["textbook"]["objective"], abs=TOL)
        assert row["no-persistency"]["objective"] == pytest.approx(row["ours"]["objective"], abs=TOL)
        assert row["alpha"]["objective"] >= row["ours"]["objective"] - TOL
    assert "**total** (2 instances)" in p.stdout
