"""``liid run`` end to end on a tiny synthetic set (the `make demo` config with a few images and one epoch each):
every stage runs, the report and metrics.json appear; a rerun finds every stage up to date with the same numbers;
OUT/config.yaml reproduces the run; ``--stages`` reruns one stage; a changed setting stops at its stage; a labeler
registered in the test runs in place of the LIID stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from liid.cli import main as cli
from liid.config import CONFIG_DIR
from liid.pipeline.report import coco_masks
from liid.pipeline.runner import Tee, select_stages

TINY = {
    "_BASE_": str(CONFIG_DIR / "synthetic_demo.yaml"),
    "RUN": {"DEVICE": "cpu", "WORKERS": 1},
    "SYNTHETIC": {"IMAGES": 10},
    "FILTER": {"TOP": 5},
    "CLS": {"EPOCHS": 1, "SIZE": 64},
    "MIL": {"EPOCHS": 1, "SIZE": 64, "ATT_POOLING": "box"},  # 2x2 CAMs: the soft-IoU rule needs finer ones
    "MASKRCNN": {"EPOCHS": 1, "BATCH_SIZE": 2, "ROI_BATCH": 8, "WARMUP_ITERS": 0, "MIN_SIZE": 64, "MAX_SIZE": 64,
                 "EVAL_EVERY": 1},
    "REPORT": {"IMAGES": 2, "INSPECT": 1},
}


def run(args: list[str]):
    r = CliRunner().invoke(cli, ["run", *args])
    return r


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("run")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    out = root / "out"
    r = run(["--config-file", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return cfg, out, json.loads((out / "metrics.json").read_text())


def test_run_end_to_end(tiny):
    cfg, out, m = tiny
    for key in ("ap50_mil_argmax", "ap50_liid", "ap75_liid", "abo_liid", "ap50_oracle", "maskrcnn_ap50"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, key
    assert set(m["labelings"]) == {"liid", "mil_argmax", "oracle"}
    assert m["labelings"]["liid"]["ap50"] == m["ap50_liid"] and "map_r50" in m["labelings"]["liid"]
    # the oracle labels every proposal the proposals allow right: no labeling of the same proposals beats it
    assert m["ap50_oracle"] >= m["ap50_liid"] and m["ap50_oracle"] >= m["ap50_mil_argmax"]
    assert m["stages_up_to_date"] == [] and m["pipeline_seconds"] > 0
    # the evaluation files are what `liid evaluate` wrote, the metrics read from them
    ev = json.loads((out / "eval_liid.json").read_text())
    assert ev["instances"]["ap50"] == m["ap50_liid"]
    page = (out / "report.html").read_text()
    for src in [s.split('"')[0] for s in page.split('src="')[1:]]:
        assert (out / src).is_file(), src
        assert Image.open(out / src).size[0] > 100
    assert "got its label: its graph neighbourhood" in page and ".graphml" in page  # `liid inspect` pictures
    assert list((out / "inspect").glob("node_*.graphml"))
    log = (out / "run.log").read_text()
    assert "$ liid build-graph" in log and "$ liid train-maskrcnn" in log and "\r" not in log
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["MIL"]["EPOCHS"] == 1 and resolved["GRAPH"]["DELTA"] == 0.5


def test_rerun_is_up_to_date_with_the_same_numbers(tiny):
    cfg, out, first = tiny
    r = run(["--config-file", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    again = json.loads((out / "metrics.json").read_text())
    assert len(again["stages_up_to_date"]) == len(again["stage_seconds"])  # every stage skipped its work
    for key in ("ap50_mil_argmax", "ap50_liid", "ap50_oracle", "maskrcnn_ap50"):
        assert again[key] == first[key]
    assert again["pipeline_seconds"] == first["pipeline_seconds"]  # the times of the run that did the work
    # the resolved config reproduces the run: every stage up to date again
    r = run(["--config-file", str(out / "config.yaml")])
    assert r.exit_code == 0, r.output
    third = json.loads((out / "metrics.json").read_text())
    assert len(third["stages_up_to_date"]) == len(third["stage_seconds"]) and third["ap50_liid"] == first["ap50_liid"]


def test_a_changed_setting_stops_at_its_stage_and_stages_reruns_it(tiny):
    cfg, out, first = tiny
    cut_before = (out / "cut" / "labels.npy").stat().st_mtime_ns if (out / "cut" / "labels.npy").exists() else None
    graph_files = sorted((out / "graph").iterdir())
    stamp = {p.name: p.stat().st_mtime_ns for p in graph_files}
    r = run(["--config-file", str(cfg), "--out", str(out), "GRAPH.DELTA", "2"])
    assert r.exit_code == 2
    error = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(error) == 1 and "stage graph (`liid build-graph`)" in error[0] and "--stages graph: --overwrite" in \
        error[0]
    assert {p.name: p.stat().st_mtime_ns for p in sorted((out / "graph").iterdir())} == stamp  # untouched
    # --stages graph --overwrite redoes that one stage (same settings: the same graph), nothing else
    r = run(["--config-file", str(cfg), "--out", str(out), "--stages", "graph", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "$ liid build-graph" in r.output and "$ liid solve-cut" not in r.output
    assert "$ liid train-mil" not in r.output
    assert any(p.stat().st_mtime_ns != stamp[p.name] for p in (out / "graph").iterdir() if p.name in stamp)
    if cut_before is not None:
        assert (out / "cut" / "labels.npy").stat().st_mtime_ns == cut_before
    # the cut was made from the graph before: the next run stops there, and `cut:evaluate --overwrite` redoes it
    r = run(["--config-file", str(cfg), "--out", str(out), "--stages", "cut:export"])
    assert r.exit_code == 2 and "stage cut (`liid solve-cut`)" in r.output and "--stages cut: --overwrite" in r.output
    r = run(["--config-file", str(cfg), "--out", str(out), "--stages", "cut:evaluate", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert "$ liid solve-cut" in r.output and "$ liid train-maskrcnn" not in r.output
    again = json.loads((out / "metrics.json").read_text())
    assert again["ap50_liid"] == first["ap50_liid"]  # the same settings: the same graph, cut and labels


def test_coco_masks_reads_an_export(tiny):
    _, out, _ = tiny
    from liid.datasets import open_dataset

    ds = open_dataset(str(out / "synthetic"))
    doc = json.loads((out / "labels_liid" / "instances.json").read_text())
    by_image = coco_masks(doc, ds, "instances.json")
    assert set(by_image) == {im.id for im in ds.images}
    assert sum(len(c) for _, c in by_image.values()) == len(doc["annotations"])
    for iid, (masks, cls) in by_image.items():
        assert masks.shape[1:] == (ds.info(iid).height, ds.info(iid).width) and len(masks) == len(cls)


@pytest.fixture
def constant_labeler():
    """A labeler registered by the test: every proposal of the store becomes an instance of its image's first
    label (score 1) — one module's worth of code, seen by `liid label` and `liid run`."""
    import click

    from liid.datasets import open_dataset
    from liid.detection.export import ImageLabels, export_labeled, proposal_entries
    from liid.labelers.registry import LABELERS, Labeler, register_labeler

    def run_it(params: dict, out: Path, overwrite: bool) -> dict | None:
        ds = open_dataset(params["dataset"], split=params.get("split"), images=params.get("images_dir"))
        entries = proposal_entries(params["proposals"], [im.id for im in ds.images], "the dataset", str(ds.source))

        def label(image_id: str, load) -> ImageLabels:
            props = load()
            k = max(int(ds.labels(image_id)[-1]), 1)
            n = min(len(props), 2)
            return ImageLabels(np.arange(n), np.full(n, k), np.ones(n, np.float32))

        return export_labeled(entries, ds.classes, params["proposals"], label, out, nms_iou=params["nms_iou"],
                              overwrite=overwrite, score_name="constant", row_name="proposal",
                              description="test labeler", inputs={"method": "test-constant"})

    lab = Labeler(name="test-constant", summary="TEST: the first label of the image on its first two proposals",
                  options=frozenset({"dataset", "split", "images_dir", "proposals", "nms_iou"}),
                  required={"dataset": "--dataset DATASET", "proposals": "--proposals STORE"},
                  instances=True, inputs=frozenset({"dataset", "proposals"}), run=run_it)
    register_labeler(lab)
    yield lab
    LABELERS.pop("test-constant", None)
    assert click  # imported for the labeler's option types if needed


def test_a_registered_labeler_runs_in_liid_run(constant_labeler, tmp_path):
    r = CliRunner().invoke(cli, ["label", "--help"])
    assert r.exit_code == 0 and "test-constant" in r.output
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "LABELER": {"METHOD": "test-constant", "BASELINES": ["oracle"]},
                                   "SEGMENTER": {"NAME": "none"}, "REPORT": {"IMAGES": 1, "INSPECT": 0}}))
    out = tmp_path / "out"
    r = run(["--config-file", str(cfg), "--out", str(out), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "liid label --method test-constant" in r.output
    assert "train-cls" not in r.output and "train-mil" not in r.output  # nothing it does not need
    r = run(["--config-file", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["labelings"]) == {"test_constant", "oracle"}
    doc = json.loads((out / "labels_test_constant" / "instances.json").read_text())
    assert len(doc["annotations"]) > 0 and (out / "report.html").is_file()


def test_select_stages():
    names = ["dataset", "proposals", "filter", "cls", "graph", "cut", "export", "report"]
    assert select_stages(names, None) == set(names)
    assert select_stages(names, "graph") == {"graph"}
    assert select_stages(names, "graph:") == {"graph", "cut", "export", "report"}
    assert select_stages(names, ":filter,cut") == {"dataset", "proposals", "filter", "cut"}
    assert select_stages(names, "cls:graph") == {"cls", "graph"}
    from liid.errors import LiidError

    with pytest.raises(LiidError, match=r"no stage 'grpah' in this run \(did you mean graph\?\)"):
        select_stages(names, "grpah")


def test_tee_keeps_the_last_state_of_a_progress_line(tmp_path):
    import io

    screen = io.StringIO()
    with open(tmp_path / "log", "w") as log:
        t = Tee(screen, log)
        t.write("a 10%\ra 50%\ra 100%\n")
        t.write(b"bytes line\n")  # click may hand bytes
        t.write("partial")
    assert (tmp_path / "log").read_text() == "a 100%\nbytes line\n"
    assert screen.getvalue() == "a 10%\ra 50%\ra 100%\nbytes line\npartial"


def test_the_run_folder_never_holds_its_data(tmp_path):
    """OUT = the dataset's folder (or around it) is refused before anything is written."""
    data = tmp_path / "voc"
    (data / "JPEGImages").mkdir(parents=True)
    for out in (data, tmp_path):
        r = run(["--config-file", "configs/voc_liid.yaml", "DATASET.TRAIN", str(data), "PROPOSALS.FROM",
                 str(tmp_path / "mcg"), "--out", str(out)])
        assert r.exit_code == 2 and "the output" in r.output and str(data) in r.output, r.output
        assert not (out / "config.yaml").exists() and not (out / "run.log").exists()


def test_a_plugin_labeler_and_its_own_option_from_the_config(tmp_path, monkeypatch):
    """RUN.PLUGINS imports a module that registers a labeler with an option of its own; that option is then a
    config key (LABELER.TEST_LEVEL), validated by its click type and passed on by the run."""
    (tmp_path / "liid_test_plugin.py").write_text('''
import click
from liid.labelers.registry import Labeler, register_labeler

LEVEL = click.Option(["--test-level"], type=click.IntRange(0, 9), default=None, help="test plugin level")
register_labeler(Labeler(name="test-plugin", summary="TEST: a plugin labeler", options={"proposals"},
                         extra_params=(LEVEL,), inputs={"proposals"}, run=lambda params, out, overwrite: None))
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    from liid.labelers.registry import LABELERS

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "RUN": {"PLUGINS": ["liid_test_plugin"]},
                                   "LABELER": {"METHOD": "test-plugin", "BASELINES": [], "TEST_LEVEL": 3},
                                   "SEGMENTER": {"NAME": "none"}}))
    try:
        r = run(["--config-file", str(cfg), "--out", str(tmp_path / "out"), "--dry-run"])
        assert r.exit_code == 0, r.output
        assert "liid label --method test-plugin" in r.output and "--test-level 3" in r.output
        r = run(["--config-file", str(cfg), "--out", str(tmp_path / "out"), "LABELER.TEST_LEVEL", "12", "--dry-run"])
        assert r.exit_code == 2 and "LABELER.TEST_LEVEL: 12 is not in the range 0<=x<=9" in r.output, r.output
    finally:
        LABELERS.pop("test-plugin", None)
        import sys

        sys.modules.pop("liid_test_plugin", None)
