"""detectron2 without detectron2: the Mask R-CNN configs parse and merge as detectron2 merges them (only keys
and value types of detectron2's defaults), name datasets that ``register_liid_datasets`` provides with the
right class counts; ``coco_json_check`` gives load_coco_json's records for an oracle export and refuses broken
JSONs; ``tools/train_net.py`` without detectron2 says how to install it."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import oracle_layout

from liid.datasets import VOC_CLASSES, open_dataset
from liid.datasets.synthetic import CLASSES as SYNTHETIC_CLASSES
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.detection.register import LAYOUT, coco_json_check, liid_dataset_paths, register_liid_datasets
from liid.errors import LiidError

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "detection" / "configs"
HAS_DETECTRON2 = importlib.util.find_spec("detectron2") is not None

# The keys the configs may set, with the type of detectron2's default (detectron2/config/defaults.py); yacs
# refuses unknown keys and values of another type (tuple and list are interchangeable, int is not float).
D2_KEYS = {
    "VERSION": int, "OUTPUT_DIR": str, "SEED": int,
    "MODEL.META_ARCHITECTURE": str, "MODEL.MASK_ON": bool, "MODEL.WEIGHTS": str, "MODEL.DEVICE": str,
    "MODEL.PIXEL_MEAN": list, "MODEL.PIXEL_STD": list,
    "MODEL.BACKBONE.NAME": str, "MODEL.BACKBONE.FREEZE_AT": int,
    "MODEL.RESNETS.DEPTH": int, "MODEL.RESNETS.NORM": str, "MODEL.RESNETS.STRIDE_IN_1X1": bool,
    "MODEL.RESNETS.OUT_FEATURES": list,
    "MODEL.FPN.IN_FEATURES": list, "MODEL.FPN.OUT_CHANNELS": int,
    "MODEL.ANCHOR_GENERATOR.SIZES": list, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": list,
    "MODEL.RPN.IN_FEATURES": list, "MODEL.RPN.PRE_NMS_TOPK_TRAIN": int, "MODEL.RPN.PRE_NMS_TOPK_TEST": int,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": int, "MODEL.RPN.POST_NMS_TOPK_TEST": int,
    "MODEL.ROI_HEADS.NAME": str, "MODEL.ROI_HEADS.IN_FEATURES": list, "MODEL.ROI_HEADS.NUM_CLASSES": int,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": int,
    "MODEL.ROI_BOX_HEAD.NAME": str, "MODEL.ROI_BOX_HEAD.NUM_FC": int, "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": int,
    "MODEL.ROI_MASK_HEAD.NAME": str, "MODEL.ROI_MASK_HEAD.NUM_CONV": int,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": int,
    "INPUT.MASK_FORMAT": str, "INPUT.FORMAT": str, "INPUT.MIN_SIZE_TRAIN": tuple, "INPUT.MAX_SIZE_TRAIN": int,
    "INPUT.MIN_SIZE_TEST": int, "INPUT.MAX_SIZE_TEST": int,
    "DATALOADER.NUM_WORKERS": int, "DATALOADER.FILTER_EMPTY_ANNOTATIONS": bool,
    "DATASETS.TRAIN": tuple, "DATASETS.TEST": tuple,
    "SOLVER.IMS_PER_BATCH": int, "SOLVER.BASE_LR": float, "SOLVER.MOMENTUM": float, "SOLVER.WEIGHT_DECAY": float,
    "SOLVER.STEPS": tuple, "SOLVER.MAX_ITER": int, "SOLVER.WARMUP_ITERS": int, "SOLVER.CHECKPOINT_PERIOD": int,
    "TEST.EVAL_PERIOD": int, "TEST.DETECTIONS_PER_IMAGE": int,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": int, "MODEL.FPN.NORM": str, "MODEL.ROI_BOX_HEAD.NUM_CONV": int,
    "MODEL.ROI_BOX_HEAD.NORM": str, "MODEL.ROI_MASK_HEAD.NORM": str,
    # ours (detection/d2_lite.py add_lite_config), not detectron2's
    "MODEL.LITE.NAME": str, "MODEL.LITE.WEIGHTS": str, "MODEL.LITE.FREEZE_BN": bool, "MODEL.LITE.OUT_FEATURES": list,
}
# config file -> number of classes of its dataset
DATASET_CONFIGS = {
    "mask_rcnn_R_50_FPN_voc_pseudo.yaml": len(VOC_CLASSES) - 1,  # VOC_CLASSES has "background" first
    "mask_rcnn_R_50_FPN_coco_pseudo.yaml": 80,
    "mask_rcnn_R_50_FPN_synthetic_pseudo.yaml": len(SYNTHETIC_CLASSES),
}


def _decode(value):
    """What yacs makes of a YAML value: strings that are Python literals become them ("(1, 2)" → a tuple)."""
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: Path) -> dict:
    """A config as detectron2's ``merge_from_file`` sees it: ``_BASE_`` (relative to the file) merged first."""
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), path
    base = raw.pop("_BASE_", None)
    cfg = {}
    if base is not None:
        base_path = (path.parent / base).resolve()
        assert base_path.is_file(), f"{path}: _BASE_ {base!r} not found"
        cfg = load_config(base_path)
    return _merge(cfg, _decode(raw))


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


# ------------------------------------------------------------------------------------------------ configs


def test_every_yaml_parses_and_bases_resolve():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.name for f in files} >= {"Base-RCNN-FPN.yaml", *DATASET_CONFIGS}
    for f in files:
        raw = yaml.safe_load(f.read_text())
        assert isinstance(raw, dict), f
        if "_BASE_" in raw:
            assert (f.parent / raw["_BASE_"]).is_file(), f
        flat = _flatten(load_config(f))
        for key, value in flat.items():
            assert key in D2_KEYS, f"{f.name}: {key} is not a detectron2 config key (or not listed here)"
            want = D2_KEYS[key]
            ok = (isinstance(value, (list, tuple)) if want in (list, tuple)
                  else type(value) is want)  # bool is not int, int is not float (yacs checks the type)
            assert ok, f"{f.name}: {key} = {value!r} is not a {want.__name__}"


@pytest.mark.parametrize("name,classes", sorted(DATASET_CONFIGS.items()))
def test_dataset_configs(name, classes, tmp_path):
    cfg = _flatten(load_config(CONFIGS / name))
    assert cfg["MODEL.MASK_ON"] is True
    assert cfg["INPUT.MASK_FORMAT"] == "bitmask"  # liid export writes RLE masks
    assert cfg["MODEL.ROI_HEADS.NUM_CLASSES"] == classes
    assert cfg["MODEL.WEIGHTS"] == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert cfg["MODEL.META_ARCHITECTURE"] == "GeneralizedRCNN"
    assert cfg["MODEL.BACKBONE.NAME"] == "build_resnet_fpn_backbone" and cfg["MODEL.RESNETS.DEPTH"] == 50
    registered = liid_dataset_paths(tmp_path)
    train, test = cfg["DATASETS.TRAIN"], cfg["DATASETS.TEST"]
    assert isinstance(train, tuple) and isinstance(test, tuple) and train and test
    for ds in (*train, *test):
        assert ds in registered, f"{name}: dataset {ds!r} is not one register_liid_datasets provides"
    assert all("pseudo" in d for d in train) and not any("pseudo" in d for d in test)
    steps = list(cfg["SOLVER.STEPS"])
    assert steps == sorted(steps) and steps[-1] < cfg["SOLVER.MAX_ITER"]
    assert cfg["SOLVER.WARMUP_ITERS"] < steps[0]
    if "synthetic" in name:
        assert cfg["MODEL.DEVICE"] == "cpu" and max(cfg["INPUT.MIN_SIZE_TRAIN"]) <= 200
        assert cfg["SOLVER.MAX_ITER"] <= 1000
    else:
        assert cfg.get("MODEL.DEVICE", "cuda") == "cuda" and cfg["SOLVER.IMS_PER_BATCH"] == 16
        assert cfg["SOLVER.BASE_LR"] == 0.02


def test_layout_names():
    paths = liid_dataset_paths("/data/liid")
    assert set(paths) == set(LAYOUT)
    assert paths["liid_voc_pseudo_train"] == ("/data/liid/voc_pseudo/instances.json", "/data/liid/voc/JPEGImages")
    assert paths["liid_synthetic_val"] == ("/data/liid/synthetic/annotations/instances_val.json",
                                           "/data/liid/synthetic/JPEGImages")


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed")
def test_register_without_detectron2(tmp_path):
    with pytest.raises(LiidError, match="detectron2 is not installed; see README"):
        register_liid_datasets(tmp_path)


@pytest.mark.skipif(not HAS_DETECTRON2, reason="detectron2 is not installed")
def test_register_with_detectron2(tmp_path):  # pragma: no cover - runs where detectron2 is installed
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = register_liid_datasets(tmp_path)
    assert set(names) <= set(DatasetCatalog.list())
    assert register_liid_datasets(tmp_path) == names  # a second call is harmless
    assert MetadataCatalog.get("liid_voc_val").evaluator_type == "coco"


# ------------------------------------------------------------------------------------ coco_json_check


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """ROOT/synthetic: a 6-image synthetic set; ROOT/synthetic_pseudo: its oracle labels (the layout of
    detection/register.py)."""
    return oracle_layout(tmp_path_factory.mktemp("d2"), images=6, size=64, seed=1)


RECORD_FIELDS = {"file_name": str, "height": int, "width": int, "image_id": int, "annotations": list}
ANNOTATION_FIELDS = {"iscrowd": int, "bbox": list, "category_id": int, "segmentation": dict, "bbox_mode": int}


def _check_records(records, coco, image_root, k):
    assert [r["image_id"] for r in records] == sorted(im["id"] for im in coco["images"])
    by_id = {im["id"]: im for im in coco["images"]}
    cat_ids = sorted(c["id"] for c in coco["categories"])
    n = 0
    for r in records:
        assert list(r) == list(RECORD_FIELDS)  # exactly load_coco_json's keys, in its order
        for key, typ in RECORD_FIELDS.items():
            assert type(r[key]) is typ, (key, r[key])
        im = by_id[r["image_id"]]
        assert r["file_name"] == str(Path(image_root) / im["file_name"]) and Path(r["file_name"]).is_file()
        assert (r["height"], r["width"]) == (im["height"], im["width"])
        for a in r["annotations"]:
            assert set(a) == set(ANNOTATION_FIELDS)
            for key, typ in ANNOTATION_FIELDS.items():
                assert type(a[key]) is typ, (key, a[key])
            assert a["bbox_mode"] == 1 and a["iscrowd"] == 0
            assert len(a["bbox"]) == 4 and all(type(v) in (int, float) for v in a["bbox"])  # as in the JSON
            assert a["bbox"][2] > 0 and a["bbox"][3] > 0
            assert 0 <= a["category_id"] < k
            assert set(a["segmentation"]) == {"size", "counts"} and isinstance(a["segmentation"]["counts"], str)
            assert a["segmentation"]["size"] == [r["height"], r["width"]]
            n += 1
    assert n == len(coco["annotations"])
    # contiguous: dataset category id c -> its rank among the sorted ids
    want = sorted((cat_ids.index(a["category_id"]), a["bbox"]) for a in coco["annotations"])
    got = sorted((a["category_id"], a["bbox"]) for r in records for a in r["annotations"])
    assert got == want


def test_coco_json_check_on_oracle_export(layout):
    paths = liid_dataset_paths(layout)
    for name in ("liid_synthetic_pseudo_train", "liid_synthetic_val"):
        json_file, image_root = paths[name]
        coco = json.loads(Path(json_file).read_text())
        assert coco["annotations"], name
        records = coco_json_check(json_file, image_root)
        _check_records(records, coco, image_root, len(SYNTHETIC_CLASSES))


def _broken(coco: dict, how: str) -> dict:
    c = copy.deepcopy(coco)
    a = c["annotations"][0]
    if how == "image_file":
        c["images"][0]["file_name"] = "missing.jpg"
    elif how == "image_id":
        a["image_id"] = 999999
    elif how == "zero_width":
        a["bbox"][2] = 0.0
    elif how == "bbox_length":
        a["bbox"] = []
    elif how == "ann_id":
        c["annotations"][1]["id"] = a["id"]
    elif how == "category":
        a["category_id"] = 77
    elif how == "rle_size":
        a["segmentation"]["size"] = [1, 1]
    elif how == "no_segmentation":
        del a["segmentation"]
    elif how == "ignore":
        a["ignore"] = 1
    elif how == "no_categories":
        c["categories"] = []
    elif how == "image_size":
        del c["images"][0]["height"]
    return c


@pytest.mark.parametrize("how,words", [
    ("image_file", ["missing.jpg", "not found"]), ("image_id", ["image_id 999999", "not in 'images'"]),
    ("zero_width", ["positive area"]), ("bbox_length", ["4 numbers"]), ("ann_id", ["annotations id", "more than once"]),
    ("category", ["category_id 77"]), ("rle_size", ["RLE size [1, 1]"]), ("no_segmentation", ["no segmentation"]),
    ("ignore", ["'ignore'"]), ("no_categories", ["no categories"]), ("image_size", ["'height' and 'width'"]),
])
def test_coco_json_check_refuses(layout, tmp_path, how, words):
    json_file, image_root = liid_dataset_paths(layout)["liid_synthetic_pseudo_train"]
    coco = json.loads(Path(json_file).read_text())
    assert len(coco["annotations"]) >= 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(coco, how)))
    with pytest.raises(LiidError) as err:
        coco_json_check(bad, image_root)
    msg = str(err.value)
    assert msg.startswith(str(bad)) and "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_coco_json_check_refuses_non_coco(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("[1, 2]")
    with pytest.raises(LiidError, match="not a COCO instances JSON"):
        coco_json_check(f, tmp_path)
    f.write_text('{"images": []}')
    with pytest.raises(LiidError, match="no 'annotations' list"):
        coco_json_check(f, tmp_path)
    f.write_text("{not json")
    with pytest.raises(LiidError):
        coco_json_check(f, tmp_path)


# ---------------------------------------------------------------------------------------------- train_net


@pytest.mark.skipif(HAS_DETECTRON2, reason="detectron2 is installed")
def test_train_net_without_detectron2():
    res = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "detectron2 is not installed" in lines[0], res.stderr
    assert "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'" in lines[0]
    assert res.stdout == ""


def test_dataset_to_coco_for_liid_voc_val(tmp_path):
    """tools/dataset_to_coco.py: a VOC-layout root's val split as the COCO JSON that liid_voc_val reads —
    detectron2's records (coco_json_check) hold every ground-truth instance of every val image."""
    root = tmp_path / "voc"
    write_synthetic(root, 6, seed=2, config=SyntheticConfig(size=48), val_fraction=0.5, progress=False)
    out = tmp_path / "ROOT" / LAYOUT["liid_voc_val"][0]
    cmd = [sys.executable, str(REPO / "tools" / "dataset_to_coco.py"), str(root), "--split", "val", "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ds = open_dataset(str(root), split="val")
    records = coco_json_check(out, root / "JPEGImages")
    assert sorted(Path(r["file_name"]).name for r in records) == sorted(im.file.name for im in ds.images)
    for r in records:
        inst = ds.instances(Path(r["file_name"]).stem)
        assert len(r["annotations"]) == len(inst)
        assert sorted(a["category_id"] + 1 for a in r["annotations"]) == sorted(inst.classes.tolist())
        assert sum(a["bbox"][2] > 0 for a in r["annotations"]) == len(inst)
    stamp = out.stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)  # kept without --overwrite
    assert again.returncode == 2 and str(out) in again.stderr and out.stat().st_mtime_ns == stamp


def test_config_datasets_checked_before_training(layout, tmp_path):
    """tools/train_net.py's check before any training: NUM_CLASSES against the JSON's categories, a training
    set without annotations, a named LIID dataset whose file is missing; the user's own names pass through."""
    from liid.detection.register import check_config_datasets

    train, test = ["liid_synthetic_pseudo_train"], ["liid_synthetic_val"]
    check_config_datasets(6, train, test, layout)
    check_config_datasets(6, [*train, "my_own_dataset"], test, layout)
    with pytest.raises(LiidError, match=r"instances\.json: 6 categories, but the config's MODEL\.ROI_HEADS\.NUM_CL"):
        check_config_datasets(20, train, test, layout)
    with pytest.raises(LiidError, match="not found"):
        check_config_datasets(20, ["liid_voc_pseudo_train"], [], layout)
    import shutil

    root = tmp_path / "root"
    shutil.copytree(layout / "synthetic", root / "synthetic")
    shutil.copytree(layout / "synthetic_pseudo", root / "synthetic_pseudo")
    pseudo = root / "synthetic_pseudo" / "instances.json"
    doc = json.loads(pseudo.read_text())
    pseudo.write_text(json.dumps({**doc, "annotations": []}))
    with pytest.raises(LiidError, match="no annotations to train on"):
        check_config_datasets(6, train, test, root)
    check_config_datasets(6, [], ["liid_synthetic_pseudo_train"], root)  # an empty test set is not an error


def test_register_spec_needs_no_code(layout, tmp_path):
    """--register NAME=JSON:IMAGES: parsed at the last ':', refused with one line naming what is wrong,
    and checked before training like the standard names."""
    from liid.detection.register import check_config_datasets, parse_register_spec

    js = layout / "synthetic_pseudo" / "instances.json"
    images = layout / "synthetic" / "JPEGImages"
    assert parse_register_spec(f"mine={js}:{images}") == ("mine", str(js), str(images))
    for bad, what in ((f"{js}:{images}", "expected NAME=JSON:IMAGES"), (f"mine={js}", "expected NAME=JSON:IMAGES"),
                      (f"liid_voc_val={js}:{images}", "standard name"),
                      (f"mine={tmp_path / 'no.json'}:{images}", "no.json: not found"),
                      (f"mine={js}:{tmp_path / 'nowhere'}", "nowhere: not a folder")):
        with pytest.raises(LiidError, match=what):
            parse_register_spec(bad)
    extra = {"mine": (str(js), str(images))}
    check_config_datasets(6, ["mine"], [], layout, extra)
    with pytest.raises(LiidError, match="6 categories, but the config's"):
        check_config_datasets(3, ["mine"], [], layout, extra)
