"""`make demo` (liid.pipeline): every stage's arguments are ones its command accepts; the report's drawing
helpers on hand-made inputs; and the whole chain end to end on a tiny synthetic set (a few images, one
epoch each), run twice: the second run finds every stage up to date and gives the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from liid.cli import main as cli
from liid.pipeline.demo import LABELINGS, DemoConfig, DemoPaths, results_table, run_demo, stages
from liid.pipeline.report import coco_masks, histogram_png, overlay, size_bins, write_report

TINY = DemoConfig(images=10, top=5, workers=1, cls_epochs=1, cls_size=64, mil_epochs=1, mil_size=64,
                  maskrcnn_epochs=1, maskrcnn_batch=2, maskrcnn_roi_batch=8, maskrcnn_warmup=0, maskrcnn_size=64,
                  report_images=2, att_pooling="box",  # 2x2 CAMs: the soft-IoU rule needs finer ones
                  device="cpu")


def test_every_stage_parses(tmp_path):
    """Each stage's arguments are accepted by its `liid` command (catches a renamed or removed option)."""
    todo = stages(DemoConfig(), tmp_path)
    names = [s.args[0] for s in todo]
    assert names[:6] == ["make-synthetic", "proposals", "filter-proposals", "train-cls", "train-mil", "extract"]
    assert names.index("build-graph") < names.index("solve-cut") < names.index("export") < names.index(
        "train-maskrcnn")
    assert names.count("evaluate") == len(LABELINGS)
    for s in todo:
        cmd = cli.commands[s.args[0]]
        ctx = cmd.make_context(s.args[0], list(s.args[1:]))  # raises click.UsageError on a bad option
        assert ctx.params
        if s.args[0].startswith("train-"):
            assert ctx.params["resume"], s.name  # an interrupted demo continues


def test_size_bins_powers_of_two():
    assert size_bins(np.array([1, 1, 2, 3, 5, 8, 0])) == [("1", 2, 2), ("2-3", 2, 5), ("4-7", 1, 5), ("8-15", 1, 8)]
    assert size_bins(np.array([], dtype=int)) == []


def test_overlay_tints_and_outlines():
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.zeros((1, 8, 8), bool)
    m[0, 2:6, 2:6] = True
    out = overlay(img, m, [(200, 0, 0)], alpha=0.5)
    assert tuple(out[2, 2]) == (200, 0, 0)  # the outline in the colour
    assert tuple(out[3, 3]) == (100, 0, 0)  # inside: half tinted
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[7, 7]) == (0, 0, 0)  # outside untouched
    outline = overlay(img, m, [(200, 0, 0)], fill=False)
    assert tuple(outline[3, 3]) == (0, 0, 0) and tuple(outline[5, 2]) == (200, 0, 0)


def test_histogram_png(tmp_path):
    histogram_png(size_bins(np.array([1, 1, 1, 4, 300])), tmp_path / "h.png", "title")
    im = Image.open(tmp_path / "h.png")
    assert im.width >= 300 and im.height > 200
    assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 2  # bars and text, not a blank canvas


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, run_demo(TINY, out, report=_report)


def _report(config: DemoConfig, out: Path, metrics: dict) -> Path:
    p = DemoPaths(out)
    return write_report(out, metrics, p.data, p.top, {"MIL argmax": p.argmax / "instances.json",
                                                      "LIID": p.liid / "instances.json"},
                        p.graph, p.maskrcnn, {"train-cls": p.cls / "loss.png"}, n_images=config.report_images)


def test_demo_end_to_end(demo):
    out, m = demo
    for key in ("ap50_mil_argmax", "ap50_liid", "ap75_liid", "abo_liid", "ap50_oracle", "maskrcnn_ap50"):
        assert isinstance(m[key], float) and 0.0 <= m[key] <= 1.0, key
    assert m["seconds"] > 0 and m["stages_up_to_date"] == []
    assert json.loads((out / "metrics.json").read_text())["ap50_liid"] == m["ap50_liid"]
    page = (out / "report.html").read_text()
    assert "<table>" in page and "components.png" in page
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "components.png" in figures and sum(f.startswith("labels_") for f in figures) == 2
    for name in figures:
        assert f"figures/{name}" in page
        assert Image.open(out / "figures" / name).size[0] > 100
    # the oracle labels every proposal the proposals allow right: no labeling of the same proposals beats it
    assert m["ap50_oracle"] >= m["ap50_liid"] and m["ap50_oracle"] >= m["ap50_mil_argmax"]
    table = results_table(m)
    assert "Mask R-CNN" in table and f"{m['ap50_liid']:6.3f}" in table and f"{m['maskrcnn_ap50']:6.3f}" in table
    assert f"<td>{m['ap50_oracle']:.3f}</td>" in page


def test_demo_rerun_is_up_to_date(demo):
    out, first = demo
    again = run_demo(TINY, out, report=_report)
    assert len(again["stages_up_to_date"]) == len(stages(TINY, out))  # every stage skipped its work
    for key in ("ap50_mil_argmax", "ap50_liid", "ap50_oracle", "maskrcnn_ap50"):
        assert again[key] == first[key]
    assert again["work_seconds"] == first["work_seconds"]  # the times of the run that did the work
    assert again["pipeline_seconds"] == first["pipeline_seconds"] > 0


def test_coco_masks_reads_an_export(demo):
    out, _ = demo
    from liid.datasets import open_dataset

    p = DemoPaths(out)
    ds = open_dataset(str(p.data))
    doc = json.loads((p.liid / "instances.json").read_text())
    by_image = coco_masks(doc, ds, "instances.json")
    assert set(by_image) == {im.id for im in ds.images}
    n = sum(len(c) for _, c in by_image.values())
    assert n == len(doc["annotations"])
    for iid, (masks, cls) in by_image.items():
        assert masks.shape[1:] == (ds.info(iid).height, ds.info(iid).width) and len(masks) == len(cls)
        assert all(1 <= k < ds.num_classes + 1 for k in cls)
