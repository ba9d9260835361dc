"""Option values at the CLI boundary: every float option of every command refuses NaN and ±inf (click's usage
error, exit 2); `liid label` refuses an option its method does not read, even at its default value; and an
OSError or MemoryError is one line `error: ...` with exit 2, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from click.testing import CliRunner

import liid.commands.make_synthetic as make_synthetic
from liid.cli import main, os_error_line
from liid.commands.options import FiniteFloatRange, finite_type, is_finite_type, require_finite_floats
from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.proposals.store import masks_to_proposals, write_proposal_store

NOT_FINITE = ("nan", "inf", "-inf", "NaN", "1e999")


def commands(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group`` (recursively), with the words that invoke it."""
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, (*path, name))


def float_params() -> list[tuple[tuple[str, ...], click.Parameter]]:
    """(command words, parameter) of every parameter that takes a float, in every command."""
    def takes_float(t: click.ParamType) -> bool:
        return isinstance(t, click.types.FloatParamType) or (
            isinstance(t, click.Tuple) and any(takes_float(x) for x in t.types))

    return [(words, p) for words, cmd in commands() for p in cmd.params if takes_float(p.type)]


FLOAT_OPTIONS = [(words, p) for words, p in float_params() if isinstance(p, click.Option)]


# --- 1. non-finite float values ------------------------------------------------------------------------


def test_every_float_param_is_finite():
    """Structural: a float option of any command (also one added later) has the finite type."""
    found = float_params()
    assert len(found) > 20  # the walk sees the commands' options (build-graph --delta, solve-cut --time-limit ...)
    assert {(" ".join(w), p.name) for w, p in found} >= {("build-graph", "delta"), ("solve-cut", "time_limit"),
                                                         ("label", "cam_threshold"), ("label", "nms_iou")}
    bad = [f"liid {' '.join(w)} {p.opts[0]} ({p.type!r})" for w, p in found if not is_finite_type(p.type)]
    assert not bad, bad


@pytest.mark.parametrize("words,param", FLOAT_OPTIONS, ids=[f"{' '.join(w)}{p.opts[0]}" for w, p in FLOAT_OPTIONS])
def test_every_float_option_refuses_non_finite(words, param):
    """Refused while parsing, before a required argument is missed or any work starts."""
    flag = max(param.opts, key=len)
    for value in NOT_FINITE:
        res = invoke(*words, f"{flag}={value}")
        assert res.exit_code == 2, (value, res.output)
        assert f"Invalid value for '{flag}': {value} is not a finite number" in res.stderr, res.stderr
        assert "Traceback" not in res.output


def test_finite_values_keep_bounds_clamp_and_help():
    res = invoke("solve-cut", "--time-limit", "0")
    assert res.exit_code == 2 and "0.0 is not in the range x>0" in res.stderr, res.stderr
    res = invoke("build-graph", "--help")
    assert res.exit_code == 0 and "x>0" in res.output and "--delta FLOAT RANGE" in res.output
    clamped = finite_type(click.FloatRange(0, 1, clamp=True))
    assert isinstance(clamped, FiniteFloatRange) and clamped.convert("5", None, None) == 1.0
    assert clamped.convert("-2", None, None) == 0.0 and clamped.convert(0.25, None, None) == 0.25
    with pytest.raises(click.BadParameter, match="inf is not a finite number"):
        clamped.convert("inf", None, None)  # refused, not clamped to 1
    pair = finite_type(click.Tuple([float, int]))
    assert is_finite_type(pair) and pair.convert(("1.5", "2"), None, None) == (1.5, 2)
    with pytest.raises(click.BadParameter, match="nan is not a finite number"):
        pair.convert(("nan", "2"), None, None)


@pytest.mark.parametrize("words", [(), *(w for w, _ in commands())], ids=lambda w: " ".join(w) or "liid")
def test_help_renders(words):
    res = invoke(*words, "--help")
    assert res.exit_code == 0 and res.output.startswith("Usage: "), res.output


def test_require_finite_floats_on_a_new_command():
    @click.group()
    def group() -> None:
        """A group."""

    @group.command()
    @click.option("--x", type=float, default=1.0)
    @click.option("--y", type=click.FloatRange(0, 1), default=0.5)
    @click.argument("z", type=float, required=False)
    def sub(x: float, y: float, z: float | None) -> None:
        click.echo(f"{x} {y} {z}")

    require_finite_floats(group)
    assert all(is_finite_type(p.type) for p in sub.params)
    res = CliRunner().invoke(group, ["sub", "--x", "2", "--y", "1", "3"])
    assert res.exit_code == 0 and res.output == "2.0 1.0 3.0\n"
    for args, name in ((["--x", "nan"], "'--x'"), (["--y", "inf"], "'--y'"), (["--", "-inf"], "'[Z]'")):
        res = CliRunner().invoke(group, ["sub", *args])
        assert res.exit_code == 2 and f"Invalid value for {name}" in res.output, res.output
        assert "is not a finite number" in res.output


# --- 2. options a labeling method does not read ------------------------------------------------------


@pytest.fixture(scope="module")
def oracle_data(tmp_path_factory) -> dict[str, Path]:
    """4 synthetic 64 px images and a proposal store of their ground-truth masks (no training)."""
    root = tmp_path_factory.mktemp("values")
    write_synthetic(root / "syn", 4, seed=0, config=SyntheticConfig(size=64), progress=False)
    ds = open_dataset(root / "syn")
    meta, props = [], []
    for im in ds.images:
        inst = ds.instances(im.id)
        meta.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width,
                     "coco_id": im.coco_id})
        props.append(masks_to_proposals(inst.masks, np.ones(len(inst))))
    write_proposal_store(root / "props", meta, props)
    return {"syn": root / "syn", "props": root / "props"}


@pytest.mark.parametrize("args,words", [
    (["--method", "oaa", "--cams", "c", "--no-crf"], ["--no-crf: not an option of --method oaa"]),
    (["--method", "vit-sm", "--model", "m", "--crf"], ["--crf: not an option of --method vit-sm"]),
    (["--method", "oracle", "--proposals", "p", "--cam-threshold", "0"],
     ["--cam-threshold: not an option of --method oracle"]),
    (["--method", "dsrg", "--model", "m", "--cam-threshold", "0.2"], ["--cam-threshold", "--method dsrg"]),
    (["--method", "oaa", "--cams", "c", "--nms-iou", "0.4"],  # the default value, given explicitly
     ["--method oaa defines no instance output", "--nms-iou is for --method mil-argmax, oracle, cam"]),
    (["--method", "am-saliency", "--cams", "c", "--nms-iou", "0.5"], ["--nms-iou", "--method am-saliency"]),
    (["--method", "oaa", "--cams", "c", "--instances", "rect"], ["--instances is for --method cam"]),
    (["--method", "am-saliency", "--cams", "c", "--saliency", "SAL", "--rounds", "2"],
     ["--rounds", "--saliency opencv"]),
])
def test_label_refuses_options_the_method_ignores(tmp_path, args, words):
    out = tmp_path / "out"
    res = invoke("label", *args, "--dataset", tmp_path / "nowhere", "--out", out)
    assert res.exit_code == 2
    assert_one_line_error(res, *words)
    assert not out.exists()


def test_label_accepts_what_the_method_reads(oracle_data, tmp_path):
    """The oracle with its own options runs; am-saliency / cam take --no-crf / --cam-threshold 0 (the refusal
    is about the method, not the value) and fail later, at their missing classifier."""
    out = tmp_path / "oracle"
    res = invoke("label", "--method", "oracle", "--dataset", oracle_data["syn"], "--split", "train",
                 "--proposals", oracle_data["props"], "--nms-iou", "0.5", "--out", out)
    assert res.exit_code == 0, res.output
    assert json.loads((out / "export.json").read_text())["inputs"]["nms_iou"] == 0.5
    for args in (["--method", "am-saliency", "--no-crf", "--cam-threshold", "0", "--rounds", "2"],
                 ["--method", "cam", "--cam-threshold", "0", "--nms-iou", "0.4", "--instances", "rect"]):
        res = invoke("label", *args, "--cams", tmp_path / "none", "--dataset", oracle_data["syn"], "--out",
                     tmp_path / "x")
        assert_one_line_error(res, "checkpoint not found")


# --- 4. OSError and MemoryError at the CLI boundary ---------------------------------------------------


def test_output_under_a_regular_file(tmp_path):
    """--out inside a file: one line naming the file, exit 2, and the file untouched."""
    file = tmp_path / "file"
    file.write_text("mine\n")
    res = invoke("make-synthetic", "--out", file / "syn", "--images", 1, "--size", 64)
    assert res.exit_code == 2
    assert_one_line_error(res, str(file))
    assert file.read_text() == "mine\n"


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="file-size limits are POSIX")
def test_file_size_limit_is_one_line(tmp_path):
    """A real EFBIG: `liid make-synthetic` under a 2 kB file-size limit stops with one line, exit 2, and leaves
    no partial output."""
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); from liid.cli import main; "
            "main(['make-synthetic', '--out', 'syn', '--images', '2', '--size', '64'])")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert os.strerror(errno.EFBIG) in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def _raising(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.EIO])
def test_os_error_is_one_line(tmp_path, monkeypatch, code):
    file = tmp_path / "syn" / "JPEGImages" / "syn_000000.jpg"
    monkeypatch.setattr(make_synthetic, "write_synthetic", _raising(OSError(code, os.strerror(code), str(file))))
    res = invoke("make-synthetic", "--out", tmp_path / "syn", "--images", 1)
    assert res.exit_code == 2
    assert_one_line_error(res)
    assert res.stderr == f"error: {file}: {os.strerror(code)}\n"


def test_os_error_lines():
    assert os_error_line(OSError(errno.EXDEV, "Invalid cross-device link", "a", None, "b")) == \
        "a -> b: Invalid cross-device link"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    assert os_error_line(OSError("a message of its own")) == "a message of its own"
    assert os_error_line(PermissionError(errno.EACCES, "Permission denied", Path("/x/y"))) == \
        "/x/y: Permission denied"


@pytest.mark.parametrize("exc,words", [
    (MemoryError("Unable to allocate 1.00 TiB for an array with shape (1, 2)"), ["out of memory", "1.00 TiB"]),
    (MemoryError(), ["out of memory"]),
])
def test_memory_error_is_one_line(tmp_path, monkeypatch, exc, words):
    monkeypatch.setattr(make_synthetic, "write_synthetic", _raising(exc))
    res = invoke("make-synthetic", "--out", tmp_path / "syn", "--images", 1)
    assert res.exit_code == 2
    assert_one_line_error(res, *words)


def test_torch_out_of_memory_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(make_synthetic, "write_synthetic",
                        _raising(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nMore")))
    res = invoke("make-synthetic", "--out", tmp_path / "syn", "--images", 1)
    assert res.exit_code == 2
    assert_one_line_error(res, "out of memory", "2.00 GiB", "More")


def test_other_errors_are_not_hidden(tmp_path, monkeypatch):
    """A bug stays a traceback (a RuntimeError that is not out of memory); a closed stdout is click's exit 1."""
    monkeypatch.setattr(make_synthetic, "write_synthetic", _raising(RuntimeError("a bug")))
    res = invoke("make-synthetic", "--out", tmp_path / "syn", "--images", 1)
    assert isinstance(res.exception, RuntimeError) and "error:" not in res.stderr
    monkeypatch.setattr(make_synthetic, "write_synthetic", _raising(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    res = invoke("make-synthetic", "--out", tmp_path / "syn", "--images", 1)
    assert res.exit_code == 1 and "error:" not in res.stderr
