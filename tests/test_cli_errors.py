"""`liid build-graph` and `liid solve-cut` at the boundary: bad input is one line `error: ...` naming the
file or item, a non-zero exit, and nothing written; finished stages are skipped, changed inputs refused;
and the happy path from a generated store to a cut."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke

from liid.graph.feature_store import FeatureStore, write_feature_store
from liid.synthetic_features import SyntheticSpec, make_feature_store

IMGS, PER, DIM, K1 = 6, 4, 16, 3  # images, proposals per image, feature dim, classes with background
N = IMGS * PER


def small_store(rng_seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(rng_seed)
    probs = rng.random((N, K1)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.zeros((IMGS, K1), dtype=bool)
    labels[:, 0] = True
    labels[np.arange(IMGS), 1 + np.arange(IMGS) % (K1 - 1)] = True
    return FeatureStore(features=rng.random((N, DIM)).astype(np.float32), probs=probs,
                        proposal_image=np.repeat(np.arange(IMGS), PER),
                        proposal_index=np.tile(np.arange(PER), IMGS),
                        image_labels=labels, classes=["background", "cat", "dog"],
                        images=[f"img{i}" for i in range(IMGS)])


def write_store(path: Path, rng_seed: int = 0, overwrite: bool = False) -> Path:
    write_feature_store(path, small_store(rng_seed), overwrite=overwrite)
    return path


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(out.name + ".tmp-*"))
    assert not list(out.parent.glob(out.name + ".old-*"))


# --- build-graph: broken feature stores ------------------------------------------------------------


def _break(store: Path, case: str) -> str:
    """Damage a valid store; returns the file (or item) the error must name."""
    def rewrite(name, fn):
        np.save(store / f"{name}.npy", fn(np.load(store / f"{name}.npy")))

    def set_item(name, index, value, dtype=None):
        a = np.load(store / f"{name}.npy").astype(dtype) if dtype else np.load(store / f"{name}.npy")
        a[index] = value
        np.save(store / f"{name}.npy", a)

    if case == "nan features":
        set_item("features", (7, 3), np.nan)
        return "features.npy: proposal 7"
    if case == "inf probabilities":
        set_item("probs", (11, 2), np.inf)
        return "probs.npy: proposal 11"
    if case == "length mismatch":
        rewrite("probs", lambda a: a[:-1])
        return "probs.npy"
    if case == "proposal_image out of range":
        set_item("proposal_image", 9, IMGS)
        return "proposal_image.npy: proposal 9"
    if case == "image label 2":
        set_item("image_labels", (2, 1), 2, dtype=np.int64)
        return "image_labels.npy"
    if case == "image without foreground":
        set_item("image_labels", (4, slice(1, None)), False)
        return "image_labels.npy: image 'img4'"
    if case == "empty store":
        for name in ("features", "probs", "proposal_image", "proposal_index"):
            rewrite(name, lambda a: a[:0])
        return "empty store"
    if case == "truncated features":
        b = (store / "features.npy").read_bytes()
        (store / "features.npy").write_bytes(b[: len(b) // 2])
        return "features.npy"
    if case == "corrupt store.json":
        (store / "store.json").write_text('{"format": "liid.feature_store", "classes": [')
        return "store.json"
    if case == "store.json not an object":
        (store / "store.json").write_text("[1, 2]")
        return "store.json"
    if case == "store.json bad version":
        meta = json.loads((store / "store.json").read_text())
        (store / "store.json").write_text(json.dumps({**meta, "version": "one"}))
        return "store.json"
    if case == "missing probs":
        (store / "probs.npy").unlink()
        return "probs.npy: file not found"
    if case == "garbage features":
        (store / "features.npy").write_bytes(b"not numpy at all" * 10)
        return "features.npy: corrupt .npy file (no NumPy header)"
    raise AssertionError(case)


STORE_CASES = ["nan features", "inf probabilities", "length mismatch", "proposal_image out of range",
               "image label 2", "image without foreground", "empty store", "truncated features",
               "corrupt store.json", "store.json not an object", "store.json bad version", "missing probs",
               "garbage features"]


@pytest.mark.parametrize("case", STORE_CASES)
def test_build_graph_refuses_bad_store(tmp_path, case):
    store = write_store(tmp_path / "store")
    words = _break(store, case)
    out = tmp_path / "graph"
    res = invoke("build-graph", store, "--out", out)
    assert_one_line_error(res, str(store), words)
    assert_nothing_written(out)


def test_build_graph_missing_store(tmp_path):
    out = tmp_path / "graph"
    res = invoke("build-graph", tmp_path / "nope", "--out", out)
    assert_one_line_error(res, str(tmp_path / "nope"), "not found")
    assert_nothing_written(out)


def test_build_graph_output_parent_missing(tmp_path):
    store = write_store(tmp_path / "store")
    res = invoke("build-graph", store, "--out", tmp_path / "no" / "graph")
    assert_one_line_error(res, str(tmp_path / "no"), "does not exist")
    assert not (tmp_path / "no").exists()


def test_build_graph_existing_output(tmp_path):
    store = write_store(tmp_path / "store")
    out = tmp_path / "graph"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    res = invoke("build-graph", store, "--out", out)
    assert_one_line_error(res, str(out), "--overwrite")
    assert (out / "mine.txt").read_text() == "keep"
    assert not list(tmp_path.glob("graph.tmp-*"))
    res = invoke("build-graph", store, "--out", out, "--overwrite")  # a folder the user made: never replaced
    assert_one_line_error(res, str(out), "not a folder this toolkit wrote")
    assert (out / "mine.txt").read_text() == "keep"
    (out / "mine.txt").unlink()
    assert invoke("build-graph", store, "--out", out).exit_code == 0  # an empty folder is no output yet
    res = invoke("build-graph", store, "--out", out, "--overwrite", "--k", "2")  # one this toolkit wrote: replaced
    assert res.exit_code == 0, res.output
    assert (out / "graph.json").exists()
    assert not list(tmp_path.glob("graph.tmp-*")) and not list(tmp_path.glob("graph.old-*"))


def test_build_graph_rerun_skips_and_changed_input_refused(tmp_path):
    store = write_store(tmp_path / "store")
    out = tmp_path / "graph"
    assert invoke("build-graph", store, "--out", out).exit_code == 0
    stamp = (out / "graph.json").stat().st_mtime_ns
    os.utime(out / "graph.json", ns=(stamp - 10**9, stamp - 10**9))  # a rewrite would show
    stamp = (out / "graph.json").stat().st_mtime_ns
    res = invoke("build-graph", store, "--out", out)
    assert res.exit_code == 0 and "up to date" in res.stdout, res.output
    assert (out / "graph.json").stat().st_mtime_ns == stamp
    # other settings: refused
    res = invoke("build-graph", store, "--out", out, "--k", "2")
    assert_one_line_error(res, str(out), "--overwrite")
    # the input store rewritten with other features: refused, graph untouched
    write_store(store, rng_seed=1, overwrite=True)
    res = invoke("build-graph", store, "--out", out)
    assert_one_line_error(res, str(out), "--overwrite")
    assert (out / "graph.json").stat().st_mtime_ns == stamp
    res = invoke("build-graph", store, "--out", out, "--overwrite")
    assert res.exit_code == 0 and "up to date" not in res.stdout, res.output
    assert (out / "graph.json").stat().st_mtime_ns != stamp
    assert invoke("build-graph", store, "--out", out).stdout.count("up to date") == 1


# --- solve-cut: broken graphs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("g")
    store = write_store(d / "store")
    res = invoke("build-graph", store, "--out", d / "graph")
    assert res.exit_code == 0, res.output
    return d / "graph"


GRAPH_CASES = {
    "truncated weights": ("weights.npy", lambda g: (g / "weights.npy").write_bytes(
        (g / "weights.npy").read_bytes()[:100])),
    "garbage weights": ("weights.npy", lambda g: (g / "weights.npy").write_bytes(b"\x00garbage" * 20)),
    "negative weight": ("weights.npy", lambda g: np.save(g / "weights.npy", -np.load(g / "weights.npy"))),
    "missing edges": ("edges.npy: file not found", lambda g: (g / "edges.npy").unlink()),
    "corrupt graph.json": ("graph.json", lambda g: (g / "graph.json").write_text("{")),
    "graph.json bad offset": ("graph.json", lambda g: (g / "graph.json").write_text(json.dumps(
        {**json.loads((g / "graph.json").read_text()), "offset": "zero"}))),
    "component crossing an edge": ("component.npy", lambda g: np.save(
        g / "component.npy", np.arange(len(np.load(g / "component.npy")), dtype=np.int32))),
}


@pytest.mark.parametrize("case", list(GRAPH_CASES))
def test_solve_cut_refuses_bad_graph(tmp_path, graph_dir, case):
    words, damage = GRAPH_CASES[case]
    g = tmp_path / "graph"
    shutil.copytree(graph_dir, g)
    damage(g)
    out = tmp_path / "cut"
    res = invoke("solve-cut", "--graph", g, "--out", out, "--quiet")
    assert_one_line_error(res, str(g), words)
    assert_nothing_written(out)


def test_solve_cut_missing_graph(tmp_path):
    out = tmp_path / "cut"
    res = invoke("solve-cut", "--graph", tmp_path / "nope", "--out", out)
    assert_one_line_error(res, str(tmp_path / "nope"), "not found")
    assert_nothing_written(out)


def test_solve_cut_existing_output_and_rerun(tmp_path, graph_dir):
    out = tmp_path / "cut"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet")
    assert_one_line_error(res, str(out), "--overwrite")
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet", "--overwrite")
    assert_one_line_error(res, str(out), "not a folder this toolkit wrote")
    assert [f.name for f in out.iterdir()] == ["notes.txt"] and not list(tmp_path.glob("cut.tmp-*"))
    (out / "notes.txt").unlink()
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet")  # an empty folder: no output yet
    assert res.exit_code == 0, res.output
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet", "--overwrite")
    assert res.exit_code == 0, res.output
    stamp = (out / "summary.json").stat().st_mtime_ns
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet")
    assert res.exit_code == 0 and "up to date" in res.stdout
    assert (out / "summary.json").stat().st_mtime_ns == stamp
    res = invoke("solve-cut", "--graph", graph_dir, "--out", out, "--quiet", "--no-maxflow")
    assert_one_line_error(res, str(out), "--overwrite")


# --- happy path and help ---------------------------------------------------------------------------


def test_build_graph_then_solve_cut(tmp_path):
    store, truth = make_feature_store(SyntheticSpec(images=40, dim=64))
    write_feature_store(tmp_path / "store", store)
    # the paper's graph (it falls apart into many components here, so the per-component records are tested)
    res = invoke("build-graph", tmp_path / "store", "--out", tmp_path / "graph", "--neighbours", "all", "--no-centre",
                 "--delta", "5")
    assert res.exit_code == 0, res.output
    res = invoke("solve-cut", "--graph", tmp_path / "graph", "--out", tmp_path / "cut", "--quiet")
    assert res.exit_code == 0, res.output
    cut = tmp_path / "cut"
    labels = np.load(cut / "labels.npy")
    n = store.num_proposals
    assert labels.shape == (n,) and labels.dtype == np.int32
    assert store.allowed_labels()[np.arange(n), labels].all()
    summary = json.loads((cut / "summary.json").read_text())
    for key in ("objective", "lower_bound", "nodes", "edges", "components", "certified_optimal_components",
                "seconds", "backend"):
        assert key in summary, key
    assert summary["nodes"] == n
    records = [json.loads(line) for line in (cut / "components.jsonl").read_text().splitlines()]
    assert len(records) == summary["components"] > 1
    assert sorted(r["id"] for r in records) == list(range(summary["components"]))
    assert sum(r["nodes"] for r in records) == n
    assert summary["certified_optimal_components"] == summary["components"]
    assert summary["objective"] == pytest.approx(summary["lower_bound"], rel=1e-6)
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("args", [[], ["build-graph"], ["solve-cut"], ["export"]])
def test_help(args):
    res = invoke(*args, "--help")
    assert res.exit_code == 0 and "Usage:" in res.output, res.output
