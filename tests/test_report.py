"""The run report (liid.pipeline.report.write_report) on a hand-made COCO dataset with a 640x480 and a 160x160 image:
every referenced file exists, the tables hold the numbers of hand-written evaluation files, panels of both image
sizes are about 320 px on their longer side, warnings are escaped, a corrupt input is a one-line error naming it,
the loss curve is drawn (log scale for a wide spread), a missing input only leaves its section out."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util
from scipy import ndimage

from liid.datasets import open_dataset
from liid.datasets.palette import write_palette_png
from liid.errors import LiidError
from liid.pipeline.report import panel_size, write_report
from liid.proposals.store import masks_to_proposals, write_proposal_store

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CATS = {"cat": 10, "dog": 20}  # COCO category ids (class indices 1, 2)
SIZES = {"big": (480, 640), "small": (160, 160)}  # stem -> (H, W)


def rect(h: int, w: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def gt_masks(stem: str) -> list[tuple[str, np.ndarray]]:
    h, w = SIZES[stem]
    return [("cat", rect(h, w, h // 8, h // 2, w // 8, w // 2)), ("dog", rect(h, w, h // 2, h - 4, w // 2, w - 4))]


def rle(m: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def coco_doc(masks: dict[str, list[tuple[str, np.ndarray]]], score: bool = False) -> dict:
    images = [{"id": n + 1, "file_name": f"{s}.png", "height": SIZES[s][0], "width": SIZES[s][1]}
              for n, s in enumerate(SIZES)]
    ids = {s: n + 1 for n, s in enumerate(SIZES)}
    anns = [{"id": len(masks) * 100 + k, "image_id": ids[s], "category_id": CATS[c], "segmentation": rle(m),
             "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0, **({"score": 0.9} if score else {})}
            for s, objs in masks.items() for k, (c, m) in enumerate(objs)]
    for n, a in enumerate(anns):
        a["id"] = n + 1
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": c} for c, i in CATS.items()]}


EVAL_A = {"dataset": "gt.json", "instances": {
    "kind": "instances", "ap": 0.5125, "ap50": 0.7531, "ap75": 0.2468, "abo": 0.6019, "images": 2,
    "map_r": {"0.25": 0.9012, "0.5": 0.8023, "0.7": 0.7034, "0.75": 0.6045},
    "per_class": {"cat": {"ap": 0.6, "ap50": 0.8751, "abo": 0.7, "gt_instances": 2, "predictions": 2},
                  "dog": {"ap": 0.4, "ap50": 0.1252, "abo": 0.5, "gt_instances": 2, "predictions": 3}}}}
EVAL_B = {"dataset": "gt.json", "instances": {
    "kind": "instances", "ap": 0.1111, "ap50": 0.2222, "ap75": 0.0, "abo": 0.3333, "images": 2,
    "per_class": {"cat": {"ap50": 0.4443, "gt_instances": 2}, "dog": {"ap50": None, "gt_instances": 2}}}}
EVAL_SEM = {"dataset": "gt.json", "semantic": {
    "kind": "semantic", "miou": 0.4217, "pixel_accuracy": 0.9001, "images": 2,
    "per_class": {"background": {"iou": 0.81}, "cat": {"iou": 0.31}, "dog": {"iou": 0.1427}}}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    imgs = root / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for s, (h, w) in SIZES.items():  # mid-grey noise: no white pixel inside a panel
        Image.fromarray(rng.integers(60, 190, (h, w, 3), dtype=np.uint8)).save(imgs / f"{s}.png")
    gt = {s: gt_masks(s) for s in SIZES}
    (root / "gt.json").write_text(json.dumps(coco_doc(gt)))
    ds = open_dataset(root / "gt.json", images=imgs)

    meta, props = [], []
    for im in ds.images:
        m = np.stack([mm for _, mm in gt[im.id]] + [mm[::-1] for _, mm in gt[im.id]])
        meta.append({"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width})
        props.append(masks_to_proposals(m, np.linspace(1, 0.5, len(m))))
    write_proposal_store(root / "props", meta, props)

    (root / "lab_a").mkdir()  # an instances export: the GT masks with cat and dog swapped in "small"
    swapped = {"big": gt["big"], "small": [("dog", gt["small"][0][1]), ("cat", gt["small"][1][1])]}
    (root / "lab_a" / "instances.json").write_text(json.dumps(coco_doc(swapped)))
    (root / "lab_b" / "semantic").mkdir(parents=True)  # a semantic-only export
    for s, (h, w) in SIZES.items():
        sem = np.zeros((h, w), np.uint8)
        sem[gt[s][0][1]] = 1
        write_palette_png(root / "lab_b" / "semantic" / f"{s}.png", sem)

    for name, doc in (("a", EVAL_A), ("b", EVAL_B), ("sem", EVAL_SEM)):
        (root / f"eval_{name}.json").write_text(json.dumps(doc))

    (root / "graph").mkdir()
    np.save(root / "graph" / "component.npy", np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4], np.int32))

    (root / "cls").mkdir()  # a training log whose loss falls 1000x
    recs = [{"type": "step", "epoch": 1 + i // 10, "step": i % 10, "loss": float(10 * 0.001 ** (i / 19)), "lr": 0.1}
            for i in range(20)]
    recs.insert(10, {"type": "epoch", "epoch": 1, "loss": 1.0, "lr": 0.1})
    recs.append({"type": "epoch", "epoch": 2, "loss": 0.05, "lr": 0.1})
    (root / "cls" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    (root / "seg").mkdir()  # a train-maskrcnn record and its predictions (a results list, COCO category ids)
    ev = {"epoch": 3, "ap": 0.3012, "ap50": 0.6034, "ap75": 0.2056, "abo": 0.5078, "images": 2,
          "file": "predictions_epoch3.json"}
    (root / "seg" / "train.json").write_text(json.dumps({"settings": {"backbone": "resnet18", "epochs": 3},
                                                         "final": {"evaluation": ev}}))
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": sc} for a, sc in zip(coco_doc(gt)["annotations"], (0.9, 0.2, 0.8, 0.7), strict=True)]
    (root / "seg" / "predictions_epoch3.json").write_text(json.dumps(results))

    extra = root / "inspect.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(extra)
    (root / "inspect.graphml").write_text("<graphml/>")

    out = root / "out"
    page = write_report(out, title="Run <1> & co", dataset=ds, metrics={"seconds": 12.5, "config": {"top": 20}},
                        proposals=root / "props", labelings={"A": root / "lab_a", "B (sem)": root / "lab_b"},
                        evaluations={"A": root / "eval_a.json", "B": root / "eval_b.json",
                                     "S": root / "eval_sem.json"},
                        graph=root / "graph", segmenter=root / "seg", eval_dataset=ds,
                        curves={"train-cls": root / "cls", "gone": root / "nowhere"},
                        stage_seconds={"proposals": 3.5, "train-cls": 40.25},
                        warnings=["loss <b>NaN</b> & \"x\"", "second"],
                        figures={"inspect": extra, "graph": root / "inspect.graphml"},
                        n_images=2, seed=0)
    return {"root": root, "out": out, "page": page, "ds": ds}


class _Refs(HTMLParser):
    """src/href attributes and the cells of each table (by id)."""

    def __init__(self):
        super().__init__()
        self.refs: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table = self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [a[k] for k in ("src", "href") if k in a]
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parsed(page: Path) -> _Refs:
    p = _Refs()
    p.feed(page.read_text())
    return p


def test_every_reference_exists(run):
    assert run["page"] == run["out"] / "report.html"
    p = parsed(run["page"])
    assert p.refs, "no pictures at all"
    for ref in p.refs:
        assert not Path(ref).is_absolute() and ".." not in ref, ref
        assert (run["out"] / ref).is_file(), ref
    names = {Path(r).name for r in p.refs}
    assert {"image_big.png", "image_small.png", "segmenter_big.png", "segmenter_small.png", "graph_components.png",
            "loss_train-cls.png", "stage_seconds.png", "extra_inspect.png", "extra_graph.graphml"} <= names
    page = run["page"].read_text()
    assert '<img src="figures/extra_inspect.png"' in page and '<a href="figures/extra_graph.graphml"' in page
    assert not list((run["out"] / "figures").glob("*.tmp-*"))  # atomic writes leave no temporaries


def test_headline_table(run):
    t = parsed(run["page"]).tables["headline"]
    head, rows = t[0], {r[0]: r[1:] for r in t[1:]}
    col = {h: i - 1 for i, h in enumerate(head)}
    assert rows["A"][col["AP"]] == "0.512" and rows["A"][col["AP50"]] == "0.753"
    assert rows["A"][col["mAP^r 0.25"]] == "0.901" and rows["A"][col["mAP^r 0.75"]] == "0.605"
    assert rows["A"][col["ABO"]] == "0.602" and rows["A"][col["mIoU"]] == "–"
    assert rows["B"][col["mAP^r 0.5"]] == "–"  # its JSON has no map_r
    assert rows["S"][col["mIoU"]] == "0.422" and rows["S"][col["AP"]] == "–"
    seg = next(v for k, v in rows.items() if k.startswith("segmenter"))
    assert seg[col["AP50"]] == "0.603" and seg[col["ABO"]] == "0.508"


def test_per_class_tables(run):
    tables = parsed(run["page"]).tables
    t = tables["per-class-ap50"]
    assert t[0] == ["class", "A", "B", "GT instances"]
    assert [r[0] for r in t[1:]] == ["cat", "dog"]  # one row per class
    assert t[1][1:] == ["0.875", "0.444", "2"] and t[2][1:] == ["0.125", "–", "2"]
    iou = tables["per-class-iou"]
    assert iou[0] == ["class", "S"] and [r[0] for r in iou[1:]] == ["background", "cat", "dog"]
    assert [r[1] for r in iou[1:]] == ["0.810", "0.310", "0.143"]


def panel_boxes(png: Path) -> list[tuple[int, int]]:
    """(height, width) of the solid picture regions of a figure: connected non-white areas of 5000 px or more
    (captions and legend glyphs are far smaller)."""
    a = np.asarray(Image.open(png).convert("RGB")).astype(int)
    lab, n = ndimage.label((a < 235).any(axis=2))
    boxes = []
    for sl in ndimage.find_objects(lab):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if h * w >= 5000:
            boxes.append((h, w))
    return boxes


@pytest.mark.parametrize("stem", ["big", "small"])
def test_panels_are_about_320_px(run, stem):
    boxes = panel_boxes(run["out"] / "figures" / f"image_{stem}.png")
    # image, proposals, A, B, ground truth
    assert len(boxes) == 5, boxes
    h, w = SIZES[stem]
    for ph, pw in boxes:
        assert 280 <= max(ph, pw) <= 400, boxes
        assert abs(pw / ph - w / h) < 0.05, boxes  # the aspect ratio kept
    assert panel_size(480, 640) == (240, 320) and panel_size(160, 160) == (320, 320)
    assert panel_size(3000, 100)[0] == 320


def test_legend_names_the_classes(run):
    """Below the panels: a swatch in each class colour (VOC palette: cat (128, 0, 0), dog (0, 128, 0)) and dark
    text beside them."""
    a = np.asarray(Image.open(run["out"] / "figures" / "image_big.png").convert("RGB")).astype(int)
    below = a[-40:]
    for colour in ((128, 0, 0), (0, 128, 0)):
        assert (below == colour).all(axis=2).sum() > 20, colour
    assert ((below < 90).all(axis=2)).sum() > 50  # the glyphs


def test_cams(run, tmp_path, one_thread):
    """A train-cls folder: one CAM panel per image label, after the ground truth."""
    from liid.models.backbone import build_backbone
    from liid.models.checkpoint import save_checkpoint
    from liid.models.classifier import MultiLabelClassifier

    ds = run["ds"]
    trunk, channels = build_backbone("resnet18", from_scratch=True)
    model = MultiLabelClassifier(trunk, channels, ds.num_classes)
    (tmp_path / "cls").mkdir()
    save_checkpoint(tmp_path / "cls" / "checkpoint.pt", model, None, 1,
                    {"backbone": "resnet18", "num_classes": ds.num_classes, "class_names": ds.classes,
                     "config": {"size": 64}, "size": 64})
    page = write_report(tmp_path / "o", title="t", dataset=ds, metrics={}, cams=tmp_path / "cls", n_images=2)
    assert "CAM" in page.read_text()
    for stem in SIZES:
        boxes = panel_boxes(tmp_path / "o" / "figures" / f"image_{stem}.png")
        assert len(boxes) == 4, boxes  # image, ground truth, CAM cat, CAM dog
        assert all(280 <= max(b) <= 400 for b in boxes)


def test_warnings_escaped_and_first(run):
    page = run["page"].read_text()
    assert "loss &lt;b&gt;NaN&lt;/b&gt; &amp; &quot;x&quot;" in page and "<b>NaN</b>" not in page
    assert page.index('id="warnings"') < page.index('id="headline"')
    assert "Run &lt;1&gt; &amp; co" in page
    assert re.search(r"gone.*not found", page)  # the missing log: a note, not a failure
    assert "second" in page


def test_loss_curve_drawn(run):
    a = np.asarray(Image.open(run["out"] / "figures" / "loss_train-cls.png").convert("RGB"))
    assert a.shape[0] > 300 and a.shape[1] > 700
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # lines, markers and text, not a blank canvas
    blue = (a[..., 2] > 150) & (a[..., 0] < 80)
    assert blue.sum() > 50  # the epoch means


def test_log_scale_for_wide_spread(tmp_path, run):
    from liid.pipeline.report import loss_figure

    wide = [{"type": "step", "epoch": 1, "loss": v} for v in (100.0, 1.0, 0.01)]
    narrow = [{"type": "step", "epoch": 1, "loss": v} for v in (2.0, 1.0, 0.5)]
    seen = {}

    import matplotlib.figure

    orig = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        seen["scale"] = self.axes[0].get_yscale()
        return orig(self, *a, **k)

    matplotlib.figure.Figure.savefig = spy
    try:
        assert loss_figure(wide, tmp_path / "w.png", "w")
        assert seen["scale"] == "log"
        assert loss_figure(narrow, tmp_path / "n.png", "n")
        assert seen["scale"] == "linear"
    finally:
        matplotlib.figure.Figure.savefig = orig
    assert not loss_figure([{"type": "step", "epoch": 1}], tmp_path / "none.png", "none")


def test_sample_is_deterministic_and_prefers_several_classes(tmp_path):
    from liid.datasets.synthetic import SyntheticConfig, write_synthetic
    from liid.pipeline.report import sample_images

    write_synthetic(tmp_path / "syn", 12, seed=1, config=SyntheticConfig(size=48, classes=3), progress=False)
    ds = open_dataset(tmp_path / "syn")
    a, b = sample_images(ds, 3, seed=5), sample_images(ds, 3, seed=5)
    assert a == b and len(a) == 3 and len(set(a)) == 3
    several = [im.id for im in ds.images if len(ds.labels(im.id)) >= 2]
    assert all(len(ds.labels(i)) >= 2 for i in a) or len(several) < 3
    assert sample_images(ds, 0) == []


def test_corrupt_evaluation_is_one_line_error(run, tmp_path):
    bad = tmp_path / "eval_bad.json"
    bad.write_text('{"instances": {"ap": 0.5,')
    with pytest.raises(LiidError) as e:
        write_report(tmp_path / "out", title="t", dataset=run["ds"], metrics={}, evaluations={"bad": bad})
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg
    bad.write_text('[1, 2]')
    with pytest.raises(LiidError, match="eval_bad.json"):
        write_report(tmp_path / "out", title="t", dataset=run["ds"], metrics={}, evaluations={"bad": bad})


def test_corrupt_log_and_labeling_name_the_file(run, tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "log.jsonl").write_text('{"type": "step", "loss": 1}\n{oops\n')
    with pytest.raises(LiidError, match="log.jsonl:2"):
        write_report(tmp_path / "o1", title="t", dataset=run["ds"], metrics={}, curves={"x": tmp_path / "log"})
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "instances.json").write_text("not json")
    with pytest.raises(LiidError, match="instances.json") as e:
        write_report(tmp_path / "o2", title="t", dataset=run["ds"], metrics={}, labelings={"x": tmp_path / "lab"})
    assert "\n" not in str(e.value)


def test_bare_report(run, tmp_path):
    """Nothing but the dataset: no empty sections, the ground truth still drawn."""
    page = write_report(tmp_path / "bare", title="bare", dataset=run["ds"], metrics={}, n_images=1)
    text = page.read_text()
    assert "headline" not in text and "Per-class" not in text and "Training curves" not in text
    assert 'id="warnings"' not in text
    refs = parsed(page).refs
    assert len(refs) == 1 and (tmp_path / "bare" / refs[0]).is_file()
