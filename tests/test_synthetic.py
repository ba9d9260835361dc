"""`liid make-synthetic`: exact ground truth (masks, classes, pixels all from one painting), determinism
(byte-identical files per seed, image k independent of the image count), the VOC and COCO files agree with
each other and with the arrays, and the stage rules (skip same settings, refuse others, --overwrite)."""

from __future__ import annotations

import contextlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from liid.cli import main
from liid.datasets import synthetic
from liid.datasets.synthetic import (
    CLASSES,
    MIN_VISIBLE_FRACTION,
    MIN_VISIBLE_PIXELS,
    SyntheticConfig,
    generate_image,
    image_id,
    instance_layer,
    is_val,
    write_synthetic,
)
from liid.errors import LiidError

# pycocotools' decode under NumPy 2 warns about __array__(copy=); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NAMES = SyntheticConfig().class_names
SMALL = SyntheticConfig(size=96)  # faster; same code paths


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "data"
    write_synthetic(out, 15, seed=3, progress=False)
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_png(file: Path) -> np.ndarray:
    with Image.open(file) as im:
        assert im.mode == "P"
        return np.asarray(im)


# ------------------------------------------------------------------------------------- arrays: exactness


def test_class_names_are_lowercase_identifiers():
    assert NAMES[0] == "background" and len(NAMES) == 7
    for c in CLASSES:
        assert c.name.isidentifier() and c.name == c.name.lower()
    assert len({c.shape for c in CLASSES}) == len({c.texture for c in CLASSES}) == len(CLASSES)


@pytest.mark.parametrize("index", range(24))
def test_ground_truth_is_exact(index):
    """Owner map = depth-ordered union of the shape masks; pixels of each visible region are that instance's
    texture; elsewhere the background; class map = owner map through the instance classes."""
    seed, size = 11, SMALL.size
    s = generate_image(seed, index, SMALL)
    n = len(s.instances)
    assert 1 <= n <= 4
    assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
    assert s.owner.dtype == np.uint8 and s.owner.max() == n
    masks = s.masks()
    assert masks.sum(axis=0).max() <= 1  # disjoint
    layers = [instance_layer(spec, size) for spec in s.instances]
    above = np.zeros((size, size), dtype=bool)
    for j in reversed(range(n)):  # top-most first
        full, tex = layers[j]
        visible = full & ~above
        np.testing.assert_array_equal(masks[j], visible)
        assert masks[j].any()
        np.testing.assert_array_equal(s.image[masks[j]], tex[masks[j]])
        assert masks[j].sum() >= max(MIN_VISIBLE_FRACTION * s.full_areas[j], MIN_VISIBLE_PIXELS)
        assert full.sum() == s.inside_areas[j] <= s.full_areas[j]
        assert s.truncated[j] == (s.inside_areas[j] < s.full_areas[j])
        above |= full
    background = synthetic._background(np.random.default_rng([seed, index]), size)
    np.testing.assert_array_equal(s.image[s.owner == 0], background[s.owner == 0])
    expected = np.zeros((size, size), dtype=np.uint8)
    for j in range(n):
        expected[masks[j]] = s.instances[j].cls
    np.testing.assert_array_equal(s.class_map(), expected)
    for j, (x0, y0, x1, y1) in enumerate(s.boxes()):
        ys, xs = np.nonzero(masks[j])
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_instance_counts_and_classes_per_image():
    samples = [generate_image(5, i, SMALL) for i in range(80)]
    counts = np.array([len(s.instances) for s in samples])
    assert counts.min() >= 1 and counts.max() <= 4
    assert set(counts.tolist()) == {1, 2, 3, 4}
    multi = np.mean([len(set(s.classes.tolist())) >= 2 for s in samples])
    assert multi >= 0.6, multi
    seen = np.bincount(np.concatenate([s.classes for s in samples]), minlength=7)
    assert (seen[1:] > 0).all() and seen[0] == 0
    assert any(s.occluded().any() for s in samples)


def test_fewer_classes_config():
    cfg = SyntheticConfig(size=96, classes=3)
    assert cfg.class_names == ["background", "disk", "square", "triangle"]
    for i in range(10):
        assert generate_image(0, i, cfg).classes.max() <= 3
    with pytest.raises(LiidError):
        SyntheticConfig(classes=1)


# ---------------------------------------------------------------------------------------- determinism


def test_generate_is_deterministic():
    a, b, c = generate_image(7, 3, SMALL), generate_image(7, 3, SMALL), generate_image(8, 3, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.owner, b.owner)
    assert a.instances == b.instances
    assert not np.array_equal(a.image, c.image)


def _files(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the folder marker (it records when it was written: a second apart, it differs)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".liid.json"}


def test_same_seed_same_bytes_image_k_independent_of_n(tmp_path):
    write_synthetic(tmp_path / "a", 6, seed=1, config=SMALL, progress=False)
    write_synthetic(tmp_path / "b", 6, seed=1, config=SMALL, progress=False)
    write_synthetic(tmp_path / "c", 10, seed=1, config=SMALL, progress=False)
    write_synthetic(tmp_path / "d", 6, seed=2, config=SMALL, progress=False)
    a, b, c, d = (_files(tmp_path / x) for x in "abcd")
    assert a == b
    per_image = [k for k in a if k.split("/")[0] in ("JPEGImages", "Annotations", "SegmentationObject",
                                                     "SegmentationClass")]
    assert len(per_image) == 4 * 6
    for k in per_image:
        assert c[k] == a[k], k
    assert d["JPEGImages/syn_000000.jpg"] != a["JPEGImages/syn_000000.jpg"]


def test_val_split_is_per_image():
    assert sum(is_val(i, 0.2) for i in range(100)) == 20
    assert sum(is_val(i, 0.25) for i in range(10)) == 2
    assert not any(is_val(i, 0.0) for i in range(50))
    assert [is_val(i, 0.2) for i in range(5)] == [False, False, False, False, True]


# ------------------------------------------------------------------------------------------------ files


def test_layout_and_summary(dataset):
    ids = [image_id(i) for i in range(15)]
    for d, ext in (("JPEGImages", "jpg"), ("Annotations", "xml"), ("SegmentationObject", "png"),
                   ("SegmentationClass", "png")):
        assert sorted(p.name for p in (dataset / d).iterdir()) == [f"{i}.{ext}" for i in ids]
    sets = dataset / "ImageSets" / "Segmentation"
    train, val = (sets / "train.txt").read_text().split(), (sets / "val.txt").read_text().split()
    assert val == [image_id(4), image_id(9), image_id(14)] and sorted(train + val) == ids
    assert (sets / "trainval.txt").read_text().split() == ids
    assert (dataset / "classes.txt").read_text().splitlines() == NAMES
    summary = json.loads((dataset / "synthetic.json").read_text())
    assert summary["images"] == 15 and (summary["train"], summary["val"]) == (12, 3)
    assert summary["inputs"] == {"generator": synthetic.GENERATOR, "images": 15, "seed": 3, "size": 160,
                                 "classes": 6, "val_fraction": 0.2}
    assert sum(summary["per_class_instances"].values()) == summary["instances"]
    with Image.open(dataset / "preview.png") as im:
        assert im.mode == "RGB" and im.size[0] > 4 * 160
    with Image.open(dataset / "JPEGImages" / "syn_000000.jpg") as im:
        assert im.format == "JPEG" and im.size == (160, 160) and im.mode == "RGB"


def test_palette_png_same_bytes_as_export(tmp_path):
    from liid.datasets.palette import write_palette_png

    idx = generate_image(0, 0, SMALL).owner
    write_palette_png(tmp_path / "a.png", idx)
    synthetic.write_palette_png(tmp_path / "b.png", idx)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_voc_files_match_arrays(dataset):
    for i in range(15):
        iid = image_id(i)
        s = generate_image(3, i)
        obj = read_png(dataset / "SegmentationObject" / f"{iid}.png")
        cls = read_png(dataset / "SegmentationClass" / f"{iid}.png")
        np.testing.assert_array_equal(obj, s.owner)
        np.testing.assert_array_equal(cls, s.class_map())
        root = ET.parse(dataset / "Annotations" / f"{iid}.xml").getroot()
        assert root.findtext("filename") == f"{iid}.jpg"
        assert [int(root.findtext(f"size/{t}")) for t in ("width", "height", "depth")] == [160, 160, 3]
        objects = root.findall("object")
        assert len(objects) == len(s.instances) == obj.max()
        for n, o in enumerate(objects, start=1):
            assert o.findtext("name") == NAMES[s.instances[n - 1].cls]
            assert o.findtext("difficult") == "0" and o.findtext("pose") == "Unspecified"
            ys, xs = np.nonzero(obj == n)
            box = [int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            assert box == [xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1]
            assert np.all(cls[obj == n] == s.instances[n - 1].cls)
        assert np.all(cls[obj == 0] == 0)


def test_coco_json_matches_pngs(dataset):
    total = 0
    for split in ("train", "val"):
        file = dataset / "annotations" / f"instances_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
            coco = COCO(str(file))
        cats = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"]) for c in cats] == list(enumerate(NAMES))[1:]
        ids = (dataset / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        imgs = coco.loadImgs(sorted(coco.getImgIds()))
        assert [im["file_name"] for im in imgs] == [f"{i}.jpg" for i in ids]
        for im in imgs:
            assert im["id"] == int(im["file_name"][4:10]) + 1
            assert (dataset / "JPEGImages" / im["file_name"]).is_file()
            obj = read_png(dataset / "SegmentationObject" / im["file_name"].replace(".jpg", ".png"))
            cls = read_png(dataset / "SegmentationClass" / im["file_name"].replace(".jpg", ".png"))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
            assert len(anns) == obj.max()
            for n, a in enumerate(anns, start=1):
                assert isinstance(a["segmentation"]["counts"], str) and a["iscrowd"] == 0
                m = coco.annToMask(a).astype(bool)
                np.testing.assert_array_equal(m, obj == n)
                assert a["area"] == m.sum()
                assert a["category_id"] == cls[m][0]
                ys, xs = np.nonzero(m)
                assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
                assert list(mask_util.toBbox(rle)) == a["bbox"]
            total += len(anns)
    assert total == json.loads((dataset / "synthetic.json").read_text())["instances"]


def test_open_dataset_reads_voc_and_coco(dataset):
    from liid.datasets import open_dataset

    voc = open_dataset(dataset)
    coco = open_dataset(dataset / "annotations" / "instances_train.json")
    train = (dataset / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    for ds in (voc, coco):
        assert ds.classes == NAMES
        assert [im.id for im in ds.images] == train
        for im in ds.images[:6]:
            s = generate_image(3, int(im.id[4:]))
            np.testing.assert_array_equal(ds.labels(im.id), np.unique(s.classes))
            inst = ds.instances(im.id)
            np.testing.assert_array_equal(inst.masks, s.masks())
            np.testing.assert_array_equal(inst.classes, s.classes)
            np.testing.assert_array_equal(ds.semantic(im.id), s.class_map())
            assert ds.load_image(im.id).shape == (160, 160, 3)


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_writes_skips_refuses_overwrites(tmp_path):
    out = tmp_path / "syn"
    args = ["make-synthetic", "--out", out, "--images", 5, "--seed", 4, "--size", 96]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "5 images" in res.output and "instances" in res.output and "6 classes" in res.output
    assert str(out) in res.output
    before = _files(out)
    stamp = (out / "synthetic.json").stat().st_mtime_ns

    res = invoke(*args)  # same settings: skipped, untouched
    assert res.exit_code == 0 and "up to date" in res.output
    assert (out / "synthetic.json").stat().st_mtime_ns == stamp

    res = invoke(*args[:-1], 64)  # other settings: refused, one line, untouched
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and str(out) in err and "--overwrite" in err
    assert _files(out) == before

    res = invoke(*args[:-1], 64, "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "synthetic.json").read_text())["inputs"]["size"] == 64
    with Image.open(out / "JPEGImages" / "syn_000000.jpg") as im:
        assert im.size == (64, 64)
    assert not list(tmp_path.glob("syn.tmp-*")) and not list(tmp_path.glob("syn.old-*"))


def test_cli_bad_output_folder(tmp_path):
    res = invoke("make-synthetic", "--out", tmp_path / "missing" / "syn", "--images", 2)
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "does not exist" in res.stderr
    assert not (tmp_path / "missing").exists()


def test_cli_help():
    res = invoke("make-synthetic", "--help")
    assert res.exit_code == 0
    for word in ("--out", "--images", "--seed", "--size", "--classes", "--val-fraction", "--overwrite",
                 "SegmentationObject", "instances_{train,val}.json"):
        assert word in res.output
