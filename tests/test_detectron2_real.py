"""The real detectron2 (built by ``make test`` from ``../shared/vendor``, ``tools/build_detectron2.py``): the configs
merge in its ``get_cfg()``, ``coco_json_check`` gives ``load_coco_json``'s records, and ``tools/train_net.py``
trains a few iterations offline, writes a checkpoint and evaluates segm AP with ``COCOEvaluator``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from liid.detection.register import coco_json_check
from tests.cli_helpers import oracle_layout

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "detection" / "configs"
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
HAS_D2 = importlib.util.find_spec("detectron2") is not None
VENDOR = sorted((REPO.parent / "shared" / "vendor").glob("detectron2-*.tar.gz"))

pytestmark = pytest.mark.skipif(
    not HAS_D2, reason="detectron2 is not installed (make test builds it from ../shared/vendor; "
    + ("the tarball is there: run tools/build_detectron2.py)" if VENDOR else "no tarball there)"))


def test_every_config_merges_in_detectron2():
    from detectron2.config import get_cfg

    from liid.detection.d2_lite import add_lite_config

    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        cfg = get_cfg()
        add_lite_config(cfg)
        cfg.merge_from_file(str(f))  # yacs refuses unknown keys and values of another type
        assert cfg.MODEL.MASK_ON, f.name


def _same_records(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        for key in ("file_name", "height", "width", "image_id"):
            assert a[key] == b[key], key
        assert len(a["annotations"]) == len(b["annotations"])
        for x, y in zip(a["annotations"], b["annotations"], strict=True):
            assert x["category_id"] == y["category_id"] and x["iscrowd"] == y.get("iscrowd", 0)
            assert np.allclose(x["bbox"], y["bbox"]) and int(x["bbox_mode"]) == int(y["bbox_mode"])
            assert x["segmentation"] == y["segmentation"]


def _load(json_file, image_root, name):
    from detectron2.data.datasets import load_coco_json

    return load_coco_json(str(json_file), str(image_root), name)


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini absent")
def test_coco_json_check_equals_load_coco_json_on_coco_mini():
    """Real COCO annotations: polygons, crowd RLEs, sparse category ids."""
    js = COCO_MINI / "annotations" / "instances_train2017.json"
    images = COCO_MINI / "train2017" if (COCO_MINI / "train2017").is_dir() else COCO_MINI / "images" / "train2017"
    ours = coco_json_check(js, images)
    theirs = sorted(_load(js, images, "liid_test_coco_mini_train"), key=lambda r: r["image_id"])
    _same_records(ours, theirs)
    segs = [a["segmentation"] for r in ours for a in r["annotations"]]
    assert any(isinstance(s, list) for s in segs) and any(isinstance(s, dict) for s in segs)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """ROOT/synthetic (20 images) and ROOT/synthetic_pseudo (its oracle export), detectron2's layout."""
    return oracle_layout(tmp_path_factory.mktemp("d2real"), images=20, size=96, seed=3)


def test_coco_json_check_equals_load_coco_json_on_an_export(root):
    js = root / "synthetic_pseudo" / "instances.json"
    images = root / "synthetic" / "JPEGImages"
    _same_records(coco_json_check(js, images), sorted(_load(js, images, "liid_test_export"),
                                                      key=lambda r: r["image_id"]))


def _train_net(*args, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("config", ["mask_rcnn_lite0_FPN_synthetic_pseudo.yaml",
                                    "mask_rcnn_R_18_FPN_GN_scratch_synthetic_pseudo.yaml"])
def test_train_net_trains_offline_and_evaluates_segm(root, tmp_path, config):
    out = tmp_path / "out"
    common = ["--config-file", CONFIGS / config, "--liid-root", root]
    res = _train_net(*common, "SOLVER.MAX_ITER", 3, "SOLVER.STEPS", "(2,)", "SOLVER.WARMUP_ITERS", 1,
                     "SOLVER.CHECKPOINT_PERIOD", 3, "SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0,
                     "OUTPUT_DIR", out)
    assert res.returncode == 0, res.stderr[-3000:]
    final = out / "model_final.pth"
    assert final.is_file() and final.stat().st_size > 1_000_000
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(np.isfinite(losses))
    res = _train_net(*common, "--eval-only", "MODEL.WEIGHTS", final, "OUTPUT_DIR", tmp_path / "eval",
                     "DATALOADER.NUM_WORKERS", 0)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    # both tasks are reported even when 3 iterations give a model that predicts nothing (AP nan then)
    assert "copypaste: Task: segm" in log and "copypaste: Task: bbox" in log


def test_train_net_register_flag(root, tmp_path):
    """--register: a dataset outside the layout, by name, no code; a bad spec is one line, exit 2."""
    js = root / "synthetic_pseudo" / "instances.json"
    images = root / "synthetic" / "JPEGImages"
    res = _train_net("--config-file", CONFIGS / "mask_rcnn_lite0_FPN_synthetic_pseudo.yaml", "--liid-root", root,
                     "--register", f"mine={js}:{images}", "DATASETS.TRAIN", '("mine",)', "SOLVER.MAX_ITER", 1,
                     "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", 0, "SOLVER.IMS_PER_BATCH", 2,
                     "DATALOADER.NUM_WORKERS", 0, "TEST.EVAL_PERIOD", 0, "OUTPUT_DIR", tmp_path / "o")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "o" / "model_final.pth").is_file()
    bad = _train_net("--config-file", CONFIGS / "mask_rcnn_lite0_FPN_synthetic_pseudo.yaml",
                     "--register", f"mine={tmp_path / 'none.json'}:{images}")
    assert bad.returncode == 2 and "none.json: not found" in bad.stderr
