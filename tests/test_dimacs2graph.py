"""tools/dimacs2graph.py: a DIMACS2 multiway-cut file becomes a graph whose `liid solve-cut` objective
is the instance's cut value; a defect in the file is one line `error: FILE:LINE: what`, nothing written."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from liid.cli import main as liid_main
from liid.errors import LiidError
from liid.graph.graph_file import load_graph
from liid.graph.instances import read_dimacs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "dimacs2graph.py"
KNOWN = ROOT.parent / "shared" / "data" / "multiway-cut" / "small_graphs_known_optima.json"

_spec = importlib.util.spec_from_file_location("dimacs2graph", SCRIPT)
dimacs2graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dimacs2graph)


def to_dimacs(terminals, edges) -> str:
    """DIMACS2 text of an instance whose node ids may be any JSON values (lists included)."""
    key = lambda x: json.dumps(x)  # noqa: E731 - JSON lists are not hashable
    ids: dict[str, int] = {}
    for x in [*terminals, *(e[i] for e in edges for i in (0, 1))]:
        ids.setdefault(key(x), len(ids))
    lines = ["c converted by the test", "DIMACS2", " ".join(map(str, [len(terminals)] +
                                                              [ids[key(t)] for t in terminals])),
             f"p edge {len(ids)} {len(edges)}"]
    lines += [f"e {ids[key(u)]} {ids[key(v)]} {w}" for u, v, w in edges]
    return "\n".join(lines) + "\n"


def convert(tmp_path, text: str, name="inst", out="g", extra=()) -> tuple[int, Path]:
    src = tmp_path / f"{name}.gr"
    src.write_text(text)
    dst = tmp_path / out
    return dimacs2graph.main([str(src), str(dst), *extra]), dst


def solve(tmp_path, graph: Path, out="cut") -> dict:
    res = CliRunner().invoke(liid_main, ["solve-cut", "--graph", str(graph), "--out", str(tmp_path / out),
                                         "--quiet"])
    assert res.exit_code == 0, res.output
    return json.loads((tmp_path / out / "summary.json").read_text())


@pytest.mark.skipif(not KNOWN.exists(), reason=f"shared data not present: {KNOWN}")
def test_known_optima(tmp_path):
    instances = json.loads(KNOWN.read_text())
    assert len(instances) == 6
    for inst in instances:
        d = tmp_path / inst["name"]
        d.mkdir()
        rc, g = convert(d, to_dimacs(inst["terminals"], inst["edges"]))
        assert rc == 0
        s = solve(d, g)
        assert s["objective"] == pytest.approx(inst["ip_opt"], abs=1e-6), inst["name"]
        assert s["lower_bound"] == pytest.approx(inst["ip_opt"], abs=1e-6), inst["name"]
        assert s["lp_bound"] == pytest.approx(inst["lp_value"], abs=1e-6), inst["name"]


# a path 0(t) - 3 - 4 - 5 - 2(t) with terminal 1 hanging off 4; optimum cuts 3-4 and 4-5 (1 each)
BASE = """c a small instance
DIMACS2
3 0 1 2

p edge 6 6
e 0 3 3
e 3 4 1
e 4 1 2
e 4 5 1
e 5 2 3
c a comment between edges
e 0 5 0.25
"""


def test_basic_meta_and_objective(tmp_path):
    rc, g = convert(tmp_path, BASE)
    assert rc == 0
    graph = load_graph(g)
    assert graph.num_nodes == 3 and graph.classes == ["t0", "t1", "t2"] and graph.offset == 0
    assert graph.allowed.all()
    meta = json.loads((g / "graph.json").read_text())
    src = str((tmp_path / "inst.gr").resolve())
    assert meta["source"] == {"dimacs": src}
    assert meta["dimacs"]["file"] == src and meta["dimacs"]["nodes"] == 6
    assert meta["dimacs"]["edges_read"] == 6 and meta["dimacs"]["terminals"] == [0, 1, 2]
    # labels: 3 -> t0, 4 -> t1, 5 -> t2: cut 3-4, 4-5 and the 0.25 edge 0-5
    assert solve(tmp_path, g)["objective"] == pytest.approx(2.25)
    labels = np.load(tmp_path / "cut" / "labels.npy")
    assert labels.tolist() == [0, 1, 2]


def test_parallel_edges_add_up_and_self_loops_ignored(tmp_path):
    # 3-4 split into 0.4 + 0.6 (both ways round), a heavy self-loop on 4, another on a terminal
    text = BASE.replace("p edge 6 6", "p edge 6 9").replace("e 3 4 1\n", "e 3 4 0.4\ne 4 3 0.6\ne 4 4 50\n")
    text += "e 1 1 7\n"
    rc, g = convert(tmp_path, text)
    assert rc == 0
    graph = load_graph(g)
    pairs = {tuple(e): w for e, w in zip(graph.edges.tolist(), graph.weights.tolist(), strict=True)}
    assert pairs == {(0, 1): pytest.approx(1.0), (1, 2): pytest.approx(1.0)}  # nodes 3, 4, 5 -> 0, 1, 2
    assert graph.terminal[2].tolist() == [0.25, 0.0, 3.0]
    assert solve(tmp_path, g)["objective"] == pytest.approx(2.25)


def test_terminal_terminal_edges_go_into_offset(tmp_path):
    text = BASE.replace("p edge 6 6", "p edge 6 8") + "e 0 1 1.5\ne 2 1 2\n"
    rc, g = convert(tmp_path, text)
    assert rc == 0
    assert load_graph(g).offset == pytest.approx(3.5)
    assert solve(tmp_path, g)["objective"] == pytest.approx(2.25 + 3.5)


def test_read_dimacs_returns_raw_edges(tmp_path):
    (tmp_path / "a.gr").write_text(BASE)
    n, term, edges = read_dimacs(tmp_path / "a.gr")
    assert n == 6 and term == [0, 1, 2] and edges.shape == (6, 3) and edges.dtype == np.float64


def test_existing_output_refused_unless_overwrite(tmp_path, capsys):
    assert convert(tmp_path, BASE)[0] == 0
    before = (tmp_path / "g" / "graph.json").read_text()
    rc, g = convert(tmp_path, BASE.replace("e 3 4 1", "e 3 4 2"))
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "output exists" in err and "\n" not in err
    assert (g / "graph.json").read_text() == before
    assert convert(tmp_path, BASE.replace("e 3 4 1", "e 3 4 2"), extra=["--overwrite"])[0] == 0
    assert not list(tmp_path.glob("g.tmp-*")) and not list(tmp_path.glob("g.old-*"))


BAD = {  # name: (file text, line reported, words in the message)
    "bad header": ("DIMACS\n3 0 1 2\np edge 6 0\n", 1, "DIMACS2"),
    "header after a comment": ("c x\n\nDIMACS3\n", 3, "DIMACS2"),
    "too few terminal ids": (BASE.replace("3 0 1 2", "3 0 1"), 3, "terminal ids"),
    "too many terminal ids": (BASE.replace("3 0 1 2", "3 0 1 2 4"), 3, "terminal ids"),
    "one terminal": (BASE.replace("3 0 1 2", "1 0"), 3, "at least 2"),
    "repeated terminal": (BASE.replace("3 0 1 2", "3 0 1 1"), 3, "repeated"),
    "terminal out of range": (BASE.replace("3 0 1 2", "3 0 1 6"), 3, "out of range"),
    "non-numeric terminal": (BASE.replace("3 0 1 2", "3 0 x 2"), 3, "'x'"),
    "non-numeric N": (BASE.replace("p edge 6 6", "p edge six 6"), 5, "'six'"),
    "bad problem line": (BASE.replace("p edge 6 6", "p cut 6 6"), 5, "p edge N M"),
    "non-numeric node": (BASE.replace("e 4 5 1", "e 4 five 1"), 9, "'five'"),
    "fractional node id": (BASE.replace("e 4 5 1", "e 4 5.0 1"), 9, "'5.0'"),
    "non-numeric weight": (BASE.replace("e 4 5 1", "e 4 5 heavy"), 9, "'heavy'"),
    "node out of range": (BASE.replace("e 4 5 1", "e 4 6 1"), 9, "out of range"),
    "negative node": (BASE.replace("e 4 5 1", "e -1 5 1"), 9, "out of range"),
    "negative weight": (BASE.replace("e 4 5 1", "e 4 5 -1"), 9, ">= 0"),
    "nan weight": (BASE.replace("e 4 5 1", "e 4 5 nan"), 9, "finite"),
    "inf weight": (BASE.replace("e 4 5 1", "e 4 5 inf"), 9, "finite"),
    "missing weight": (BASE.replace("e 4 5 1", "e 4 5"), 9, "fields"),
    "unknown line": (BASE.replace("e 4 5 1", "x 4 5 1"), 9, "edge line"),
    "fewer edges than declared": (BASE.replace("p edge 6 6", "p edge 6 7"), 5, "M=7"),
    "more edges than declared": (BASE.replace("p edge 6 6", "p edge 6 5"), 5, "M=5"),
    "no problem line": ("DIMACS2\n3 0 1 2\n", 2, "p edge"),
    "empty file": ("", 1, "DIMACS2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_errors_name_file_and_line(tmp_path, capsys, case):
    text, line, words = BAD[case]
    rc, g = convert(tmp_path, text)
    assert rc == 2
    out = capsys.readouterr()
    err = out.err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"error: {tmp_path / 'inst.gr'}:{line}: "), err
    assert words in err, err
    assert not g.exists() and not list(tmp_path.glob("g.tmp-*"))


def test_missing_file(tmp_path, capsys):
    assert dimacs2graph.main([str(tmp_path / "nope.gr"), str(tmp_path / "g")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope.gr'}: file not found"
    assert not (tmp_path / "g").exists()
    with pytest.raises(LiidError, match="file not found"):
        read_dimacs(tmp_path / "nope.gr")


def test_script_exit_status_and_help(tmp_path):
    bad = tmp_path / "bad.gr"
    bad.write_text(BASE.replace("e 4 5 1", "e 4 5 -2"))
    r = subprocess.run([sys.executable, str(SCRIPT), str(bad), str(tmp_path / "g")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr == f"error: {bad}:9: weight -2 must be finite and >= 0\n"
    assert not (tmp_path / "g").exists()
    r = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "DIMACS2" in r.stdout and "--overwrite" in r.stdout
