"""``liid evaluate``: mask AP / ABO of instance predictions and mIoU of semantic PNGs against hand-made ground
truth with known answers, agreement with a direct pycocotools run, and one-line errors for bad inputs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from liid.datasets import open_dataset
from liid.datasets.palette import write_palette_png
from liid.detection.evaluate import confusion, evaluate_instances, evaluate_semantic, format_table, match_images
from liid.errors import LiidError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H = W = 32
GT_CATS = {"cat": 10, "dog": 20, "bird": 30}  # dataset category ids; predictions use other ids
PRED_CATS = {"cat": 1, "dog": 2, "bird": 3}


def rect(y1: int, y2: int, x1: int, x2: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


# image stem → [(class, mask, iscrowd)]; "b" has a crowd dog, "c" a single cat
GT = {
    "a": [("cat", rect(2, 12, 2, 12), False), ("dog", rect(16, 28, 16, 28), False)],
    "b": [("cat", rect(4, 14, 10, 20), False), ("dog", rect(20, 30, 0, 12), False),
          ("dog", rect(0, 3, 0, 8), True)],
    "c": [("cat", rect(8, 18, 8, 18), False)],
}


def rle(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def write_gt(root: Path, spec: dict, h: int = H, w: int = W) -> tuple[Path, Path]:
    """A COCO instances JSON (image ids 100, 101, ...) and its image folder; returns (json, folder)."""
    imgs = root / "images"
    imgs.mkdir(parents=True)
    images, anns = [], []
    for n, (stem, objs) in enumerate(spec.items()):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(imgs / f"{stem}.png")
        images.append({"id": 100 + n, "file_name": f"{stem}.png", "height": h, "width": w})
        for cls, m, crowd in objs:
            anns.append({"id": len(anns) + 1, "image_id": 100 + n, "category_id": GT_CATS[cls],
                         "segmentation": rle(m), "area": float(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": int(crowd)})
    cats = [{"id": i, "name": c} for c, i in GT_CATS.items()]
    file = root / "gt.json"
    file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return file, imgs


def pred_json(dets: list[tuple[str, str, np.ndarray, float]], stems: list[str] | None = None, h: int = H,
              w: int = W) -> dict:
    """An export-style COCO instances dict: image ids 1, 2, ... matched by file name; (stem, class, mask, score)."""
    stems = stems if stems is not None else sorted({d[0] for d in dets})
    ids = {s: n + 1 for n, s in enumerate(stems)}
    return {"images": [{"id": ids[s], "file_name": f"{s}.png", "height": h, "width": w} for s in stems],
            "annotations": [{"id": n + 1, "image_id": ids[s], "category_id": PRED_CATS[c], "segmentation": rle(m),
                             "score": sc, "iscrowd": 0} for n, (s, c, m, sc) in enumerate(dets)],
            "categories": [{"id": i, "name": c} for c, i in PRED_CATS.items()]}


@pytest.fixture(scope="module")
def gt(tmp_path_factory) -> tuple[Path, Path]:
    return write_gt(tmp_path_factory.mktemp("gt"), GT)


@pytest.fixture(scope="module")
def ds(gt):
    return open_dataset(gt[0], images=gt[1])


def perfect() -> list[tuple[str, str, np.ndarray, float]]:
    return [(s, c, m, 1.0) for s, objs in GT.items() for c, m, crowd in objs if not crowd]


# ---------------------------------------------------------------------------------------------- instances


def test_perfect_prediction(ds):
    r = evaluate_instances(ds, pred_json(perfect()), progress=False)
    assert r["ap"] == r["ap50"] == r["ap75"] == 1.0
    assert r["abo"] == r["abo_class_agnostic"] == 1.0
    assert (r["images"], r["gt_instances"], r["crowd_instances"], r["predictions"]) == (3, 5, 1, 5)
    assert r["image_match"] == "file_name"
    assert r["per_class"]["cat"] == {"ap": 1.0, "ap50": 1.0, "abo": 1.0, "map_r50": 1.0, "gt_instances": 3,
                                     "predictions": 3}
    assert r["per_class"]["bird"]["ap50"] is None and r["per_class"]["bird"]["gt_instances"] == 0
    assert r["per_class"]["bird"]["map_r50"] is None
    assert r["map_r"] == {"0.25": 1.0, "0.5": 1.0, "0.7": 1.0, "0.75": 1.0}  # VOC mAP^r, crowd ignored
    table = format_table(r)
    assert "overall" in table and "AP50" in table and "bird" in table and "VOC mAP^r @0.25 1.000  @0.5 1.000" in table


def test_shifted_mask_lowers_ap75_and_abo(ds):
    shifted = rect(8, 18, 11, 21)  # 3 columns right of the GT cat of "c": IoU 70 / 130
    r = evaluate_instances(ds, pred_json([("c", "cat", shifted, 0.9)]), progress=False)
    assert r["images"] == 1 and r["gt_instances"] == 1
    # pycocotools' precision is tp / (tp + fp + eps): 1 / (1 + eps) is a hair under 1
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == 0.0
    assert r["ap"] == pytest.approx(0.1)  # matched at IoU 0.5 only, of the ten thresholds
    assert r["abo"] == pytest.approx(70 / 130, abs=1e-12)
    assert r["abo_class_agnostic"] == pytest.approx(70 / 130, abs=1e-12)


def test_wrong_class(ds):
    m = GT["c"][0][1]
    r = evaluate_instances(ds, pred_json([("c", "dog", m, 1.0)]), progress=False)
    assert r["ap50"] == 0.0 and r["abo"] == 0.0
    assert r["abo_class_agnostic"] == 1.0
    assert r["per_class"]["dog"]["predictions"] == 1 and r["per_class"]["dog"]["ap50"] is None


def _random_dets(seed: int = 7) -> list[tuple[str, str, np.ndarray, float]]:
    """Jittered GT masks (sometimes the wrong class), false positives, distinct random scores."""
    rng = np.random.default_rng(seed)
    dets = []
    for s, objs in GT.items():
        for c, m, _crowd in objs:  # the crowd dog too: matching it is no false positive
            dy, dx = rng.integers(-4, 5, size=2)
            cls = c if rng.random() > 0.2 else ("dog" if c == "cat" else "cat")
            dets.append((s, cls, np.roll(m, (int(dy), int(dx)), axis=(0, 1)), 0.0))
        for _ in range(2):
            y, x = rng.integers(0, 24, size=2)
            dets.append((s, ["cat", "dog", "bird"][int(rng.integers(3))], rect(y, y + 8, x, x + 6), 0.0))
    scores = rng.permutation(len(dets)) / len(dets) + 0.01
    return [(s, c, m, float(sc)) for (s, c, m, _), sc in zip(dets, scores, strict=True)]


def test_numbers_equal_direct_cocoeval(ds, gt):
    dets = _random_dets()
    r = evaluate_instances(ds, pred_json(dets), progress=False)
    stem_id = {Path(im["file_name"]).stem: im["id"] for im in json.loads(gt[0].read_text())["images"]}
    results = [{"image_id": stem_id[s], "category_id": GT_CATS[c], "segmentation": rle(m), "score": sc}
               for s, c, m, sc in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt[0]))
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0 < r["ap"] < 1
    assert r["coco_stats"] == pytest.approx([float(v) for v in ev.stats], abs=1e-12)
    assert (r["ap"], r["ap50"], r["ap75"]) == pytest.approx(tuple(ev.stats[:3]), abs=1e-12)
    for k, name in enumerate(["cat", "dog"]):  # catIds sorted: 10, 20, 30
        p = ev.eval["precision"][0, :, k, 0, 2]
        assert r["per_class"][name]["ap50"] == pytest.approx(p[p > -1].mean(), abs=1e-12)
    # the same predictions as a COCO results list (dataset image and category ids) give the same numbers
    r2 = evaluate_instances(ds, results, progress=False)
    assert r2["coco_stats"] == pytest.approx(r["coco_stats"], abs=1e-12)
    assert (r2["abo"], r2["abo_class_agnostic"]) == pytest.approx((r["abo"], r["abo_class_agnostic"]))


def test_abo_by_hand(ds):
    """Two predictions on "a": the cat mask halved (IoU 0.5) and, labelled cat, the dog mask (IoU 1 with dog
    class-agnostically). ABO = (0.5 + 0) / 2; class-agnostic (0.5 + 1) / 2."""
    half = rect(2, 12, 2, 7)
    dets = [("a", "cat", half, 0.9), ("a", "cat", GT["a"][1][1], 0.8)]
    r = evaluate_instances(ds, pred_json(dets), progress=False)
    assert r["abo"] == pytest.approx(0.25) and r["abo_class_agnostic"] == pytest.approx(0.75)
    assert r["per_class"]["cat"]["abo"] == pytest.approx(0.5) and r["per_class"]["dog"]["abo"] == 0.0


def test_image_matching_rules(ds):
    assert match_images([{"id": 7, "file_name": "x/b.png"}], ds, "p")[1] == "file_name"
    found, rule = match_images([{"id": 102}, {"id": 100}], ds, "p")
    assert rule == "coco_id" and [im.id for im in found] == ["c", "a"]
    with pytest.raises(LiidError, match=r"p: 2 of its 3 images match no image of .*gt.json .* the first is image id 5"):
        match_images([{"id": 5}, {"id": 100}, {"id": 6}], ds, "p")
    with pytest.raises(LiidError, match="both the dataset image 'a'"):
        match_images([{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.png"}], ds, "p")


def test_digit_ids_win_over_coco_ids(tmp_path):
    """Image "000100" has COCO id 101 and "000007" COCO id 100: id 100 is "000100", as ``liid export``
    numbers all-digit ids."""
    file, imgs = write_gt(tmp_path, {"000007": GT["c"], "000100": GT["c"]}, H, W)
    found, rule = match_images([{"id": 100}], open_dataset(file, images=imgs), "p")
    assert rule == "digits" and found[0].id == "000100"


# ----------------------------------------------------------------------------------------------- semantic

# 8x8: cat rows 0-3 x cols 0-3 (16 px), dog rows 4-7 x cols 4-7 (16 px), crowd cat rows 0-1 x cols 6-7 → 255
# (4 px), background the other 28 px. Prediction: the cat's left half cat (8), right half dog (8); the dog
# dog (12) but its last row 255 (4, no prediction); background 0 except rows 4-5 x cols 0-1 cat (4).
SEM_GT = {"s": [("cat", rect(0, 4, 0, 4, 8, 8), False), ("dog", rect(4, 8, 4, 8, 8, 8), False),
                ("cat", rect(0, 2, 6, 8, 8, 8), True)]}


def sem_prediction() -> np.ndarray:
    p = np.zeros((8, 8), np.uint8)
    p[0:4, 0:2] = 1
    p[0:4, 2:4] = 2
    p[4:8, 4:8] = 2
    p[7, 4:8] = 255
    p[4:6, 0:2] = 1
    p[0:2, 6:8] = 1  # on the crowd (ignored) region
    return p


@pytest.fixture(scope="module")
def sem(tmp_path_factory) -> tuple[Path, Path]:
    return write_gt(tmp_path_factory.mktemp("sem"), SEM_GT, 8, 8)


def test_semantic_known_confusion(sem, tmp_path):
    ds = open_dataset(sem[0], images=sem[1])
    assert int((ds.semantic("s") == 255).sum()) == 4
    write_palette_png(tmp_path / "s.png", sem_prediction())
    r = evaluate_semantic(ds, tmp_path, progress=False)
    # confusion rows (true bg, cat, dog): bg → 24 bg + 4 cat; cat → 8 cat + 8 dog; dog → 12 dog + 4 none
    assert r["confusion"] == [[24, 4, 0, 0, 0], [0, 8, 8, 0, 0], [0, 0, 12, 0, 4], [0, 0, 0, 0, 0]]
    iou = {c: e["iou"] for c, e in r["per_class"].items()}
    assert iou["background"] == pytest.approx(24 / 28)  # union 28 + 24 - 24
    assert iou["cat"] == pytest.approx(8 / 20)  # union 16 + 12 - 8
    assert iou["dog"] == pytest.approx(12 / 24)  # union 16 + 20 - 12
    assert iou["bird"] is None  # in neither: not part of the mean
    assert r["miou"] == pytest.approx((24 / 28 + 8 / 20 + 12 / 24) / 3)
    assert r["pixel_accuracy"] == pytest.approx(44 / 60)
    assert (r["pixels"], r["unpredicted_pixels"], r["images"]) == (60, 4, 1)
    assert "mIoU" in format_table(r)


def test_confusion_ignores_gt_255():
    g = np.array([[0, 1, 255]], np.uint8)
    p = np.array([[1, 255, 1]], np.uint8)
    assert confusion(g, p, 1).tolist() == [[0, 1, 0], [0, 0, 1]]


# --------------------------------------------------------------------------------------------------- CLI


def write_pred(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_cli_export_folder(gt, ds, tmp_path):
    out = tmp_path / "export"
    (out / "semantic").mkdir(parents=True)
    write_pred(out / "instances.json", pred_json(perfect()))
    for im in ds.images:
        write_palette_png(out / "semantic" / f"{im.id}.png", ds.semantic(im.id))
    res = invoke("evaluate", gt[0], out, "--images", gt[1], "--json", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert any("AP50" in s for s in lines) and any("mIoU" in s for s in lines)
    last = json.loads(lines[-1])
    assert set(last) == {"ap", "ap50", "ap75", "abo", "miou", "pixel_accuracy"}
    assert last["ap"] == last["abo"] == last["miou"] == last["pixel_accuracy"] == 1.0
    full = json.loads((tmp_path / "r.json").read_text())
    assert full["instances"]["per_class"]["dog"]["gt_instances"] == 2 and len(full["semantic"]["confusion"]) == 4
    # the same evaluation again: printed from r.json, not recomputed; another prediction: refused
    stamp = (tmp_path / "r.json").stat().st_mtime_ns
    again = invoke("evaluate", gt[0], out, "--images", gt[1], "--json", tmp_path / "r.json")
    assert again.exit_code == 0 and "up to date" in again.output, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1]) == last
    assert (tmp_path / "r.json").stat().st_mtime_ns == stamp
    preds = pred_json(perfect())
    preds["annotations"] = preds["annotations"][:1]
    write_pred(out / "instances.json", preds)
    again = invoke("evaluate", gt[0], out, "--images", gt[1], "--json", tmp_path / "r.json")
    assert_one_line_error(again, "r.json", "--overwrite")
    res = invoke("evaluate", gt[0], out, "--images", gt[1], "--json", tmp_path / "r.json", "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["ap"] < 1
    write_pred(out / "instances.json", pred_json(perfect()))
    # a JSON file alone / a PNG folder alone: only the keys that apply
    res = invoke("evaluate", gt[0], out / "instances.json", "--images", gt[1])
    assert set(json.loads(res.stdout.strip().splitlines()[-1])) == {"ap", "ap50", "ap75", "abo"}
    res = invoke("evaluate", gt[0], out / "semantic", "--images", gt[1])
    assert set(json.loads(res.stdout.strip().splitlines()[-1])) == {"miou", "pixel_accuracy"}


def _bad_instances(tmp_path: Path, case: str) -> tuple[Path, tuple[str, ...]]:
    data = pred_json(perfect())
    if case == "ids":
        data["images"][1].update(id=999, file_name="zzz.png")
        for a in data["annotations"]:
            a["image_id"] = 999 if a["image_id"] == 2 else a["image_id"]
        words = ("pred.json", "1 of its 3 images", "by file_name", "999")
    elif case == "empty":
        data["annotations"] = []
        words = ("pred.json", "no annotations")
    else:
        data["categories"][0]["name"] = "horse"
        words = ("pred.json", "'horse'")
    return write_pred(tmp_path / "pred.json", data), words


@pytest.mark.parametrize("case", ["ids", "empty", "category"])
def test_cli_bad_instances(gt, tmp_path, case):
    pred, words = _bad_instances(tmp_path, case)
    res = invoke("evaluate", gt[0], pred, "--images", gt[1])
    assert res.exit_code == 2
    assert_one_line_error(res, *words)


def test_cli_bad_pngs(gt, ds, tmp_path):
    for im in ds.images[:2]:
        write_palette_png(tmp_path / f"{im.id}.png", ds.semantic(im.id))
    res = invoke("evaluate", gt[0], tmp_path, "--images", gt[1])
    assert res.exit_code == 2
    assert_one_line_error(res, "no PNG for 1 of the 3", "'c'")
    write_palette_png(tmp_path / "c.png", np.zeros((H, W + 1), np.uint8))
    res = invoke("evaluate", gt[0], tmp_path, "--images", gt[1])
    assert res.exit_code == 2
    assert_one_line_error(res, "c.png", f"{H}x{W + 1}", f"{H}x{W}")
    write_palette_png(tmp_path / "c.png", np.full((H, W), 9, np.uint8))
    res = invoke("evaluate", gt[0], tmp_path, "--images", gt[1])
    assert res.exit_code == 2
    assert_one_line_error(res, "c.png", "pixel value 9")
