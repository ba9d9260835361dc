"""The labeler registry behind `liid label`: a labeler registered after `liid.cli` was imported is a --method
choice with its summary in the help, runs and writes its export, gets the shared rules (an option it does not
read is refused, its own float options are finite, its own path inputs are guarded); duplicate and unknown names
are one line; entry-point plugins load once and a broken one is one line naming it."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import click
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke

from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.detection.export import ImageLabels, export_labeled
from liid.errors import LiidError
from liid.labelers import METHODS
from liid.labelers import registry as reg
from liid.labelers.builtin import store_entries
from liid.labelers.registry import LABELERS, Labeler, get_labeler, register_labeler, unregister_labeler
from liid.proposals.store import masks_to_proposals, write_proposal_store
from liid.stage import input_fingerprints, up_to_date

NAME = "test-constant"
SUMMARY = "every proposal of the store is class --constant-class (a registry test)"
CLASS = click.Option(["--constant-class"], type=click.IntRange(1), default=1, show_default=True,
                     help="test-constant: the class of every proposal.")
SCORE = click.Option(["--constant-score"], type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
                     help="test-constant: the score of every proposal.")
NOTES = click.Option(["--constant-notes"], type=click.Path(path_type=Path), default=None,
                     help="test-constant: a folder it reads (recorded by fingerprint).")


def run_constant(params: dict, out: Path, overwrite: bool) -> dict | None:
    """Label every proposal of the store with one class: the smallest labeler that writes instances."""
    ds = open_dataset(params["dataset"], split=params["split"], images=params["images_dir"])
    proposals, label_class, score = params["proposals"], params["constant_class"], params["constant_score"]
    inputs = {"method": NAME, "dataset": str(params["dataset"]), "proposals": str(proposals),
              "class": label_class, "score": score, "nms_iou": params["nms_iou"],
              "fingerprints": input_fingerprints(proposals)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None

    def label(image_id: str, load) -> ImageLabels:
        n = len(load())
        return ImageLabels(np.arange(n), np.full(n, label_class, dtype=np.int64), np.full(n, score, np.float32))

    return export_labeled(store_entries(ds, proposals), ds.classes, proposals, label, out, nms_iou=params["nms_iou"],
                          overwrite=overwrite, score_name="constant", row_name="proposal",
                          description="test-constant (liid label)", inputs=inputs)


def constant_labeler(**changes) -> Labeler:
    """The toy labeler's declaration (``changes`` override fields)."""
    fields = dict(name=NAME, summary=SUMMARY, options={"dataset", "split", "images_dir", "proposals", "nms_iou"},
                  extra_params=(CLASS, SCORE, NOTES),
                  required={"dataset": "--dataset DATASET", "proposals": "--proposals STORE"},
                  inputs={"dataset", "proposals"}, run=run_constant)
    return Labeler(**{**fields, **changes})


@pytest.fixture
def constant():
    """The toy labeler, registered for the test and unregistered afterwards (no other test sees it)."""
    labeler = register_labeler(constant_labeler())
    yield labeler
    if NAME in LABELERS:  # also a replacement registered by the test
        unregister_labeler(NAME)
    assert NAME not in METHODS


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """4 synthetic 64 px images (2 classes) and a proposal store of their ground-truth masks (no training)."""
    root = tmp_path_factory.mktemp("registry")
    write_synthetic(root / "syn", 4, seed=0, config=SyntheticConfig(size=64, classes=2), progress=False)
    ds = open_dataset(root / "syn")
    meta, props = [], []
    for im in ds.images:
        inst = ds.instances(im.id)
        meta.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
        props.append(masks_to_proposals(inst.masks, np.ones(len(inst))))
    write_proposal_store(root / "props", meta, props)
    return {"syn": root / "syn", "props": root / "props"}


def flat(text: str) -> str:
    """Help text with click's line wrapping undone."""
    return " ".join(text.split())


def test_builtins_are_registered_in_order():
    """The 8 built-ins, in the --method help's order, with what `liid run` wires from their inputs."""
    assert list(METHODS) == ["mil-argmax", "oracle", "cam", "oaa", "oaa+", "am-saliency", "dsrg", "vit-sm"]
    assert [n for n in LABELERS if LABELERS[n].instances] == ["mil-argmax", "oracle", "cam"]
    assert get_labeler("cam").inputs == {"cams", "dataset", "proposals"}
    assert get_labeler("dsrg").inputs == {"dataset", "model"} and "crf" in get_labeler("dsrg").options
    assert get_labeler("am-saliency").extra_checks is not None


def test_registered_labeler_is_in_the_help(constant):
    """Registered after `liid.cli` was imported: a choice, its summary in the --method help, its options."""
    res = invoke("label", "--help")
    assert res.exit_code == 0, res.output
    text = flat(res.output)
    assert f"{NAME}: {SUMMARY}." in text  # the --method help, from the summary
    assert "|vit-sm|test-constant]" in text  # the choices
    assert "--constant-class INTEGER RANGE" in text and "test-constant: the score of every proposal." in text
    assert text.index("vit-sm (the Final-CAMs") > 0  # the built-ins' help is still there


def test_unregistered_labeler_leaves_the_command():
    """Unregistering takes the method, its summary and its options out of the command again."""
    labeler = register_labeler(constant_labeler(name="test-other", summary="another registry test",
                                                extra_params=()))
    try:
        assert "test-other: another registry test." in flat(invoke("label", "--help").output)
    finally:
        assert unregister_labeler("test-other") is labeler
    text = flat(invoke("label", "--help").output)
    assert "test-other" not in text and "--constant-class" not in text
    res = invoke("label", "--method", "test-other", "--out", "x")
    assert res.exit_code == 2 and "'test-other' is not one of" in res.stderr


def test_registered_labeler_runs(constant, data, tmp_path):
    """`liid label --method test-constant` writes its export, with the stage's skip / refuse rule."""
    out = tmp_path / "out"
    args = ["label", "--method", NAME, "--dataset", data["syn"], "--proposals", data["props"], "--out", out]
    res = invoke(*args, "--constant-score", "0.75")
    assert res.exit_code == 0, res.output
    assert f"{out}: " in res.output and "instances in 4 images" in res.output
    coco = json.loads((out / "instances.json").read_text())
    assert coco["annotations"] and {a["category_id"] for a in coco["annotations"]} == {1}
    assert {a["score"] for a in coco["annotations"]} == {0.75}
    assert len(list((out / "semantic").glob("*.png"))) == 4
    recorded = json.loads((out / "export.json").read_text())["inputs"]
    assert recorded["method"] == NAME and recorded["class"] == 1 and recorded["score"] == 0.75
    res = invoke(*args, "--constant-score", "0.75")  # the skip rule of every stage
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    res = invoke(*args, "--constant-score", "0.25")
    assert_one_line_error(res, "output exists", "--overwrite")


def test_options_the_labeler_does_not_read(constant, data, tmp_path):
    """The one-line refusals of every method apply to the new one, and its own options to the others."""
    out = tmp_path / "out"
    base = ["label", "--method", NAME, "--dataset", data["syn"], "--proposals", data["props"], "--out", out]
    res = invoke(*base, "--cams", tmp_path / "cls")
    assert_one_line_error(res, f"--cams: not an option of --method {NAME}", "--constant-class")
    res = invoke(*base, "--no-crf")
    assert_one_line_error(res, f"--no-crf: not an option of --method {NAME}")
    # its own options are refused for the other methods, even at their default value
    res = invoke("label", "--method", "oracle", "--dataset", data["syn"], "--proposals", data["props"],
                 "--constant-class", "1", "--out", out)
    assert_one_line_error(res, "--constant-class: not an option of --method oracle")
    # an instance option of a semantic-only method names every reader, the new one too
    res = invoke("label", "--method", "oaa", "--cams", tmp_path / "cls", "--dataset", data["syn"], "--nms-iou", "0.4",
                 "--out", out)
    assert_one_line_error(res, "--method oaa defines no instance output",
                          f"--nms-iou is for --method mil-argmax, oracle, cam, {NAME}")
    res = invoke("label", "--method", NAME, "--dataset", data["syn"], "--out", out)
    assert_one_line_error(res, f"--method {NAME} needs --proposals STORE")
    assert not out.exists()


def test_labeler_options_get_the_shared_rules(constant, data, tmp_path):
    """Finite floats and the output/input guard, though the option was added after `liid.cli` applied them."""
    base = ["label", "--method", NAME, "--dataset", data["syn"], "--proposals", data["props"]]
    for value in ("nan", "inf"):
        res = invoke(*base, f"--constant-score={value}", "--out", tmp_path / "out")
        assert res.exit_code == 2 and f"{value} is not a finite number" in res.stderr, res.stderr
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("the user's")
    res = invoke(*base, "--constant-notes", notes, "--out", notes, "--overwrite")
    assert_one_line_error(res, "the output is the input")
    res = invoke(*base, "--constant-notes", notes, "--out", notes / "sub")
    assert_one_line_error(res, "the output lies inside the input")
    assert [p.name for p in notes.iterdir()] == ["keep.txt"]


def test_extra_checks_run_before_the_required_inputs(constant, data, tmp_path):
    """A labeler's own validation runs after the option check, before the required-input check."""
    def checks(params: dict) -> None:
        if params["constant_class"] > 1:
            raise LiidError(f"--constant-class {params['constant_class']}: this toy knows class 1 only")

    register_labeler(constant_labeler(extra_checks=checks), replace=True)
    res = invoke("label", "--method", NAME, "--constant-class", "2", "--out", tmp_path / "out")
    assert_one_line_error(res, "--constant-class 2: this toy knows class 1 only")
    res = invoke("label", "--method", NAME, "--out", tmp_path / "out")
    assert_one_line_error(res, f"--method {NAME} needs --dataset DATASET")


def test_duplicate_and_unknown_names(constant):
    """A name registered twice, and an unknown one (the closest named), are one line each."""
    with pytest.raises(LiidError, match=f"labeler '{NAME}' is already registered") as e:
        register_labeler(constant_labeler())
    assert "\n" not in str(e.value)
    with pytest.raises(LiidError, match="'oracle' is already registered"):
        register_labeler(constant_labeler(name="oracle", extra_params=()))
    replacement = register_labeler(constant_labeler(summary="replaced"), replace=True)
    assert get_labeler(NAME) is replacement and LABELERS[NAME].summary == "replaced"
    with pytest.raises(LiidError, match="unknown labeler 'test-constnt'; the closest registered one is "
                                        "'test-constant'") as e:
        get_labeler("test-constnt")
    assert "\n" not in str(e.value)
    with pytest.raises(LiidError, match="the closest registered one is 'oracle'"):
        get_labeler("oracel")
    assert LABELERS.pop("nothing-like-it", None) is None
    with pytest.raises(LiidError, match="unknown labeler .nothing-like-it."):
        unregister_labeler("nothing-like-it")


def test_declarations_are_checked():
    """An inconsistent Labeler is refused when it is declared or registered, in one line."""
    with pytest.raises(LiidError, match="its option --dataset is already an option of liid label"):
        register_labeler(constant_labeler(extra_params=(click.Option(["--dataset"]),)))
    with pytest.raises(LiidError, match="requires cams: a required parameter must be one of its options"):
        constant_labeler(required={"cams": "--cams CLS"})
    with pytest.raises(LiidError, match="reads the inputs saliency"):
        constant_labeler(inputs={"dataset", "saliency"})
    with pytest.raises(LiidError, match="one non-empty line"):
        constant_labeler(summary="")
    assert NAME not in LABELERS


def test_labeler_from_an_entry_point(tmp_path, monkeypatch):
    """A module (its import registers) and a callable (its call registers) of the liid.labelers group."""
    (tmp_path / "liid_toy_plugin.py").write_text(
        "from liid.labelers.registry import Labeler, register_labeler\n"
        "def run(params, out, overwrite):\n    return None\n"
        "register_labeler(Labeler(name='test-plugin', summary='a plugin', run=run))\n"
        "def more():\n    register_labeler(Labeler(name='test-plugin-2', summary='another', run=run))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint(name="toy", value="liid_toy_plugin", group=reg.ENTRY_POINT_GROUP),
           importlib.metadata.EntryPoint(name="toy2", value="liid_toy_plugin:more", group=reg.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps if group == reg.ENTRY_POINT_GROUP else [])
    try:
        assert reg._load_plugins() is None
        assert get_labeler("test-plugin").summary == "a plugin" and "test-plugin-2" in METHODS
    finally:
        for name in ("test-plugin", "test-plugin-2"):
            if name in LABELERS:
                unregister_labeler(name)


def test_broken_plugin_is_one_line(monkeypatch):
    """An entry point that fails to import: one line naming it, at every access, also through the CLI."""
    eps = [importlib.metadata.EntryPoint(name="broken", value="liid_no_such_plugin_module",
                                         group=reg.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: eps)
    fresh = reg.Registry()  # loads once, lazily: the built-ins are already imported, so only the plugin runs
    for _ in range(2):  # not forgotten after the first access
        with pytest.raises(LiidError, match="labeler plugin 'broken' .*liid_no_such_plugin_module.* failed to "
                                            "load: No module named") as e:
            len(fresh)
        assert "\n" not in str(e.value)
    monkeypatch.setattr(LABELERS, "_plugin_error", LiidError(str(e.value)))  # as the CLI meets it
    res = invoke("label", "--help")
    assert_one_line_error(res, "labeler plugin 'broken'", "failed to load")


def test_cli_import_loads_no_labeler():
    """`liid --help` and every other command do not import the labelers (nor their plugins)."""
    import subprocess
    import sys

    code = ("import sys, liid.cli; from liid.labelers.registry import LABELERS; "
            "print(LABELERS._state, 'liid.labelers.builtin' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert got.split() == ["unloaded", "False"]
