"""Nothing a user made is ever lost: an output is never an input (nor inside or around one), --overwrite
replaces only what this toolkit wrote, a write that fails part-way leaves nothing under the final name (and a
skip never trusts a damaged output), a write error is one line with no temporary left behind, JSON is
strict, and outputs take the user's umask."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from test_cli_errors import write_store

from liid.atomic import MARKER, atomic_dir, check_complete, write_json
from liid.cli import main
from liid.commands.guard import OUTPUTS
from liid.errors import LiidError

# --- an output that is, contains or lies inside an input: every command, at one place -------------------


def _value(p: click.Parameter, tmp: Path, name: str) -> str:
    """A value that click accepts for a required parameter (the command must not get past the guard)."""
    t = p.type
    if isinstance(t, click.Path):
        if t.dir_okay:
            d = tmp / f"{name}_dir"
            d.mkdir(exist_ok=True)
            return str(d)
        f = tmp / f"{name}.json"
        f.write_text("{}")
        return str(f)
    if isinstance(t, click.Choice):
        return str(t.choices[0])
    if isinstance(t, (click.IntRange, click.FloatRange)):
        return str(t.min if t.min is not None and not t.min_open else 1)
    return "x"


def _cases() -> list[tuple[str, str]]:
    """(command, input parameter) for every path input of every command that writes an output."""
    cases = []
    for name, cmd in sorted(main.commands.items()):
        if not any(p.name in OUTPUTS for p in cmd.params):
            continue
        for p in cmd.params:
            if p.name not in OUTPUTS and (isinstance(p.type, click.Path) or p.name == "dataset"):
                cases.append((name, p.name))
    return cases


def _argv(cmd: click.Command, values: dict[str, str]) -> list[str]:
    argv: list[str] = []
    for p in cmd.params:
        if p.name not in values:
            continue
        if isinstance(p, click.Argument):
            argv.append(values[p.name])
        else:
            argv += [p.opts[0], values[p.name]]
    if any(p.name == "overwrite" for p in cmd.params):
        argv.append("--overwrite")
    return argv


@pytest.mark.parametrize("how", ["is", "contains", "lies inside"])
@pytest.mark.parametrize(("command", "param"), _cases())
def test_output_never_an_input(tmp_path, command, param, how):
    cmd = main.commands[command]
    values = {p.name: _value(p, tmp_path, p.name) for p in cmd.params
              if p.required and p.name not in OUTPUTS and p.name != param}
    p = next(q for q in cmd.params if q.name == param)
    inp = tmp_path / "data" / "input"
    if isinstance(p.type, click.Path) and not p.type.dir_okay:
        inp.parent.mkdir()
        inp = inp.with_suffix(".json")
        inp.write_text('{"keep": 1}')
        if how == "lies inside":
            pytest.skip("a file has no inside")
    else:
        inp.mkdir(parents=True)
        (inp / "keep.txt").write_text("the user's")
    values[param] = str(inp)
    out = {"is": inp, "contains": inp.parent, "lies inside": inp / "sub"}[how]
    out_name = next(q.name for q in cmd.params if q.name in OUTPUTS)
    values[out_name] = str(out)
    before = sorted(str(f) for f in tmp_path.rglob("*"))
    res = invoke(command, *_argv(cmd, values))
    assert res.exit_code == 2, (res.output, res.exception)
    assert_one_line_error(res, f"the output {how} the input")
    assert sorted(str(f) for f in tmp_path.rglob("*")) == before  # nothing deleted, nothing written


def test_every_command_with_an_output_is_covered():
    names = {c for c, _ in _cases()}
    for must in ("proposals", "filter-proposals", "build-graph", "solve-cut", "export", "extract", "label",
                 "train-cls", "train-mil", "evaluate", "train-maskrcnn", "train-deeplab", "train-dsrg"):
        assert must in names, must


def test_real_commands_refuse_their_input_as_output(tmp_path):
    """The issue's cases with real stage folders: the input survives, byte for byte."""
    store = write_store(tmp_path / "store")
    files = {f: f.read_bytes() for f in store.iterdir()}
    res = invoke("build-graph", store, "--out", store, "--overwrite")
    assert_one_line_error(res, "the output is the input")
    assert {f: f.read_bytes() for f in store.iterdir()} == files
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "g", "--overwrite")
    assert_one_line_error(res, "the output is the input")
    assert (tmp_path / "g" / "graph.json").is_file()
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path, "--overwrite")
    assert_one_line_error(res, "the output contains the input")


# --- --overwrite replaces only what this toolkit wrote --------------------------------------------------


def test_overwrite_refuses_a_foreign_folder(tmp_path):
    store = write_store(tmp_path / "store")
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("years of work")
    res = invoke("build-graph", store, "--out", foreign, "--overwrite")
    assert_one_line_error(res, "not a folder this toolkit wrote")
    assert (foreign / "chapter1.tex").read_text() == "years of work"
    # a folder this toolkit wrote is replaced
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    assert (tmp_path / "g" / MARKER).is_file()
    res = invoke("build-graph", store, "--out", tmp_path / "g", "--overwrite", "--k", "2")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "g" / "graph.json").read_text())["config"]["knn"]["k"] == 2


def test_overwrite_recognises_a_folder_of_an_older_version(tmp_path):
    store = write_store(tmp_path / "store")
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    (tmp_path / "g" / MARKER).unlink()  # written before the marker existed: graph.json says "liid.graph"
    assert invoke("build-graph", store, "--out", tmp_path / "g", "--overwrite", "--k", "2").exit_code == 0


# --- a write that fails part-way -------------------------------------------------------------------------


def _run_limited(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    """``liid ARGS`` in a child whose files may not grow past ``limit_bytes`` (``ulimit -f``)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "liid.cli", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limit, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)


def test_size_limit_leaves_nothing_and_rerun_completes(tmp_path):
    store = write_store(tmp_path / "store")
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    out = tmp_path / "cut"
    r = _run_limited(["solve-cut", "--graph", tmp_path / "g", "--out", out], 64)
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert "wrote" not in r.stdout
    assert not out.exists() and not list(tmp_path.glob("cut.tmp-*")) and not list(tmp_path.glob(".cut*"))
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", out)
    assert res.exit_code == 0 and "up to date" not in res.output, res.output


def test_short_npy_never_becomes_final(tmp_path, monkeypatch):
    """A writer that loses bytes without raising (a library that ignores a short write): the seal sees the
    .npy is shorter than its header says and the folder never appears."""
    out = tmp_path / "x"
    with pytest.raises(OSError, match="short write"), atomic_dir(out) as tmp:
        np.save(tmp / "a.npy", np.arange(1000))
        with open(tmp / "a.npy", "r+b") as f:
            f.truncate(500)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_skip_check_verifies_what_it_skips(tmp_path):
    store = write_store(tmp_path / "store")
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    assert invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "cut").exit_code == 0
    labels = tmp_path / "cut" / "labels.npy"
    labels.write_bytes(labels.read_bytes()[:-8])  # a truncated copy, or a short write of an older version
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "cut")
    assert_one_line_error(res, "labels.npy", "incomplete or changed", "--overwrite")
    (tmp_path / "cut" / MARKER).unlink()  # no record of sizes: the .npy header still tells
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "cut")
    assert_one_line_error(res, "labels.npy", "truncated")
    assert invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "cut", "--overwrite").exit_code == 0
    check_complete(tmp_path / "cut")


# --- write errors ------------------------------------------------------------------------------------------


def test_output_parent_is_a_file(tmp_path):
    store = write_store(tmp_path / "store")
    (tmp_path / "plain").write_text("x")
    res = invoke("build-graph", store, "--out", tmp_path / "plain" / "g")
    assert_one_line_error(res, "plain", "not a folder")


def test_out_dot_is_refused(tmp_path, monkeypatch):
    store = write_store(tmp_path / "store")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert_one_line_error(invoke("build-graph", store, "--out", "."), "output exists")
    assert_one_line_error(invoke("build-graph", store, "--out", ".", "--overwrite"), "not a folder this toolkit")
    assert (work / "notes.txt").read_text() == "mine"


def test_error_inside_atomic_dir_removes_its_temporary(tmp_path):
    with pytest.raises(LiidError), atomic_dir(tmp_path / "x") as tmp:
        (tmp / "half.npy").write_bytes(b"\x93NUMPY")
        raise LiidError("bad item")
    assert list(tmp_path.iterdir()) == []


# --- strict JSON ---------------------------------------------------------------------------------------


def test_json_is_strict(tmp_path):
    write_json(tmp_path / "s.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32(2.0)})
    text = (tmp_path / "s.json").read_text()

    def refuse(name):
        raise ValueError(name)

    assert json.loads(text, parse_constant=refuse) == {"a": None, "b": [None, 1.5], "c": 2.0}


# --- outputs take the user's umask ---------------------------------------------------------------------


def test_outputs_are_readable_by_others(tmp_path):
    code = ("import sys; from cli_helpers import invoke; from test_cli_errors import write_store; "
            "from pathlib import Path; t = Path(sys.argv[1]); s = write_store(t / 'store'); "
            "assert invoke('build-graph', s, '--out', t / 'g').exit_code == 0; "
            "assert invoke('solve-cut', '--graph', t / 'g', '--out', t / 'cut').exit_code == 0")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(["sh", "-c", f'umask 022 && exec "{sys.executable}" -c "{code}" "{tmp_path}"'], check=True,
                   env=env, timeout=300)
    for p in [tmp_path / "store", tmp_path / "g", tmp_path / "cut", *(tmp_path / "g").iterdir(),
              *(tmp_path / "cut").iterdir(), *(tmp_path / "store").iterdir()]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


# --- a cut that is not proven optimal says so ----------------------------------------------------------


@pytest.fixture
def uncertified(monkeypatch):
    """HiGHS stops at its time limit on every LP: each component keeps its best labels, uncertified."""
    from test_solver import _patched

    _patched(monkeypatch, lp_status="time_limit")


def test_uncertified_cut_says_so_last(tmp_path, uncertified):
    store = write_store(tmp_path / "store")
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    # --no-persistency: Kovtun's test would settle this small graph without any LP
    cut = ("solve-cut", "--graph", tmp_path / "g", "--no-maxflow", "--no-persistency")
    res = invoke(*cut, "--out", tmp_path / "cut")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1].startswith("NOT CERTIFIED: 1 of 1 components")
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["all_certified"] is False and summary["uncertified_components"] == [0]
    # the proof demanded: refused, on a rerun too (the skip must not turn it into success)
    res = invoke(*cut, "--out", tmp_path / "cut", "--require-certified")
    assert_one_line_error(res, "1 of 1 components", "uncertified", "--require-certified")
    res = invoke(*cut, "--out", tmp_path / "cut2", "--require-certified", "--quiet")
    assert_one_line_error(res, "not written", "uncertified")
    assert not (tmp_path / "cut2").exists()


def test_certified_cut_says_so_last(tmp_path):
    store = write_store(tmp_path / "store")
    assert invoke("build-graph", store, "--out", tmp_path / "g").exit_code == 0
    res = invoke("solve-cut", "--graph", tmp_path / "g", "--out", tmp_path / "cut", "--require-certified")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == "certified: all 1 components optimal"
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["all_certified"] is True


def test_a_killed_runs_temporaries_are_swept_by_the_next_write(tmp_path):
    dead = tmp_path / "x.tmp-999999999-abc"  # no such pid: its writer is gone (kill -9)
    dead.mkdir()
    (dead / "half.npy").write_bytes(b"\x93NUMPY")
    live = tmp_path / f"x.tmp-{os.getpid()}-def"  # a writer still running: left alone
    live.mkdir()
    with atomic_dir(tmp_path / "x") as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["x", live.name])


def test_checkpoint_under_a_size_limit_is_an_os_error_naming_it(tmp_path):
    """torch's zip writer reports a full disk as a bare RuntimeError; the checkpoint writer gives the OSError."""
    code = f"""
import resource, torch
from liid.models.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))
try:
    save_checkpoint({str(tmp_path / "c.pt")!r}, torch.nn.Linear(1000, 100), None, 1,
                    {{"backbone": "x", "num_classes": 1, "class_names": ["a"], "config": {{}}}})
except OSError as e:
    print(e.errno, e.filename)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["27", str(tmp_path / "c.pt")], r.stderr  # EFBIG, named
    assert list(tmp_path.iterdir()) == []
