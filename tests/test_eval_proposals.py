"""Proposal evaluation: best overlaps against IoUs computed by hand, the summary numbers (ABO, MABO, recall at
the 0.5 / 0.7 boundaries), and ``liid eval-proposals`` end to end on a tiny COCO dataset written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, invoke
from PIL import Image
from pycocotools import mask as mask_util

from liid.datasets import Dataset, ImageInfo, Instances, open_dataset, register_dataset, unregister_dataset
from liid.errors import LiidError
from liid.proposals.evaluate import ProposalScores, best_overlaps, format_table
from liid.proposals.store import masks_to_proposals, write_proposal_store


def _rect(h: int, w: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    """bool [h, w] with rows y1..y2-1 and columns x1..x2-1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _rles(masks: np.ndarray) -> list[dict]:
    return masks_to_proposals(masks, np.zeros(len(masks))).rles


def _expected_best(props: np.ndarray, scores: np.ndarray, gts: np.ndarray, top: int | None) -> np.ndarray:
    """Best IoU of the top-N proposals (by score, ties in list order) with each GT mask, by numpy."""
    order = sorted(range(len(props)), key=lambda i: -float(scores[i]))  # sorted() is stable
    chosen = order if top is None else order[:top]
    return np.array([max([_iou(props[i], g) for i in chosen], default=0.0) for g in gts])


# --- best_overlaps -----------------------------------------------------------------------------------------


def test_best_overlaps_random_masks_match_numpy() -> None:
    for seed in range(4):
        rng = np.random.default_rng(seed)
        h, w = 9 + seed, 13
        props = rng.random((17, h, w)) > rng.uniform(0.3, 0.8, (17, 1, 1))
        props[3] = False  # an empty proposal: IoU 0 with everything
        gts = rng.random((4, h, w)) > 0.5
        gts[1] = props[5]  # an exact match
        scores = rng.random(17).round(1)  # ties: list order decides
        tops = (1, 3, 17, 40, None)
        got = best_overlaps(_rles(props), scores, gts, tops)
        assert set(got) == set(tops)
        for t in tops:
            assert got[t].shape == (4,) and got[t].dtype == np.float64
            np.testing.assert_allclose(got[t], _expected_best(props, scores, gts, t), rtol=0, atol=1e-12)
        assert got[None][1] == 1.0


def test_top_n_follows_the_score_order_not_the_list_order() -> None:
    h, w = 10, 10
    gt = _rect(h, w, 0, 10, 0, 5)[None]  # 50 pixels
    props = np.stack([gt[0],  # exact, but scored lowest
                      _rect(h, w, 0, 10, 0, 4),  # 40 / 50 = 0.8, best score
                      _rect(h, w, 0, 5, 0, 5)])  # 25 / 50 = 0.5, middle score
    got = best_overlaps(_rles(props), np.array([0.1, 0.9, 0.5]), gt, (1, 2, 3, None))
    assert got[1][0] == pytest.approx(0.8) and got[2][0] == pytest.approx(0.8)
    assert got[3][0] == 1.0 and got[None][0] == 1.0


def test_best_overlaps_edge_cases() -> None:
    gts = np.stack([_rect(6, 7, 0, 3, 0, 3), _rect(6, 7, 2, 6, 2, 7)])
    none = best_overlaps([], np.zeros(0), gts, (20, None))
    assert all(v.shape == (2,) and not v.any() for v in none.values())
    empty_gt = best_overlaps(_rles(gts), np.ones(2), np.zeros((0, 6, 7), bool), (20, None))
    assert all(v.shape == (0,) for v in empty_gt.values())
    with pytest.raises(LiidError, match="size"):
        best_overlaps(_rles(gts), np.ones(2), np.zeros((1, 7, 6), bool), (None,))
    with pytest.raises(LiidError, match="positive"):
        best_overlaps(_rles(gts), np.ones(2), gts, (0,))
    with pytest.raises(LiidError, match="scores"):
        best_overlaps(_rles(gts), np.ones(3), gts, (None,))


# --- ProposalScores ----------------------------------------------------------------------------------------


def _boundary_scores(tops=(1, None)) -> ProposalScores:
    """Best IoUs (all proposals): cat 0.5, 0.49, 0.0; dog 1.0, 0.7; one badly covered crowd instance."""
    h, w = 20, 20
    cat1, dog1 = _rect(h, w, 0, 10, 0, 10), _rect(h, w, 10, 20, 10, 20)  # 100 pixels each
    crowd = _rect(h, w, 0, 20, 0, 20)
    s = ProposalScores(tops=tops)
    # image 1: the top-1 proposal is half of cat1 (IoU exactly 0.5), the exact dog1 copy comes second
    props1 = np.stack([_rect(h, w, 0, 10, 10, 20), dog1, _rect(h, w, 0, 5, 0, 10)])  # first: covers no GT
    s.add(_rles(props1), np.array([0.2, 0.3, 0.9]), np.stack([cat1, dog1, crowd]), np.array([1, 2, 1]),
          np.array([False, False, True]))
    # image 2: 49 of cat2's 100 pixels (0.49), 70 of dog2's (exactly 0.7), cat3 uncovered
    cat2, dog2, cat3 = _rect(h, w, 0, 10, 0, 10), _rect(h, w, 10, 20, 0, 10), _rect(h, w, 0, 4, 15, 20)
    inner49 = _rect(h, w, 0, 7, 0, 7)
    inner70 = _rect(h, w, 10, 17, 0, 10)
    s.add(_rles(np.stack([inner49, inner70])), np.array([0.5, 0.6]), np.stack([cat2, dog2, cat3]),
          np.array([1, 2, 1]))
    return s


def test_summary_abo_mabo_recall_boundaries() -> None:
    summary = _boundary_scores().summary(["background", "cat", "dog"])
    best_all = {"cat": [0.5, 0.49, 0.0], "dog": [1.0, 0.7]}
    flat = sum(best_all.values(), [])
    assert summary["images"] == 2 and summary["instances"] == 5  # the crowd instance is not counted
    assert summary["proposals_per_image"] == pytest.approx(2.5)
    assert summary["abo_all"] == pytest.approx(np.mean(flat))
    assert summary["recall50_all"] == pytest.approx(3 / 5)  # 0.5 counts, 0.49 does not
    assert summary["recall70_all"] == pytest.approx(2 / 5)  # 0.7 counts
    assert summary["mabo_all"] == pytest.approx((np.mean(best_all["cat"]) + np.mean(best_all["dog"])) / 2)
    assert summary["mabo_all"] != pytest.approx(summary["abo_all"])
    cat, dog = summary["per_class"]["cat"], summary["per_class"]["dog"]
    assert cat["instances"] == 3 and dog["instances"] == 2
    assert cat["abo_all"] == pytest.approx(0.33) and dog["abo_all"] == pytest.approx(0.85)
    assert cat["recall50_all"] == pytest.approx(1 / 3) and dog["recall70_all"] == 1.0
    # top 1: image 1 keeps only the half-cat proposal (dog1 → 0); image 2 keeps inner70 (cat2 → 0)
    assert summary["abo_top1"] == pytest.approx((0.5 + 0 + 0 + 0.7 + 0) / 5)
    assert summary["recall50_top1"] == pytest.approx(2 / 5) and summary["recall70_top1"] == pytest.approx(1 / 5)
    assert summary["mabo_top1"] == pytest.approx((0.5 / 3 + 0.7 / 2) / 2)
    table = format_table(summary, (1, None))
    assert "overall" in table and "ABO@top1" in table and "R70@all" in table
    assert table.splitlines()[2].startswith("cat") and table.splitlines()[3].startswith("dog")


def test_summary_empty_and_bad_tops() -> None:
    s = ProposalScores()
    summary = s.summary(["background"])
    assert summary["images"] == 0 and summary["abo_top20"] == 0.0 and summary["mabo_all"] == 0.0
    s.add([], np.zeros(0), np.zeros((2, 4, 4), bool), np.array([1, 1]))
    assert s.summary(["background", "x"])["abo_all"] == 0.0  # an image with no proposals scores 0
    for bad in [(0,), (20, 20), (-3, None)]:
        with pytest.raises(LiidError):
            ProposalScores(tops=bad)


# --- the CLI ----------------------------------------------------------------------------------------------

H_A, W_A, H_B, W_B = 24, 32, 20, 20


def _write_coco(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO JSON with a polygon, a compressed RLE, an uncompressed RLE and a crowd instance; three images
    written with PIL (``img_c`` will be missing from the store)."""
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"img_a": (H_A, W_A), "img_b": (H_B, W_B), "img_c": (16, 16)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"{name}.png")
    dog_rle = mask_util.encode(np.asfortranarray(_rect(H_A, W_A, 12, 22, 16, 30).astype(np.uint8)))
    dog_rle["counts"] = dog_rle["counts"].decode("ascii")
    col_major = _rect(H_B, W_B, 5, 15, 2, 9).T.reshape(-1).astype(np.int64)  # uncompressed RLE counts
    cuts = np.flatnonzero(np.diff(col_major)) + 1
    runs = np.diff(np.concatenate([[0], cuts, [col_major.size]])).tolist()
    coco = {
        "images": [{"id": 1, "file_name": "img_a.png", "height": H_A, "width": W_A},
                   {"id": 2, "file_name": "img_b.png", "height": H_B, "width": W_B},
                   {"id": 3, "file_name": "img_c.png", "height": 16, "width": 16}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],  # → classes cat (1), dog (2)
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "iscrowd": 0,
             "segmentation": [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]},
            {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": dog_rle},
            {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 1,
             "segmentation": [[0.0, 0.0, 31.0, 0.0, 31.0, 23.0, 0.0, 23.0]]},
            {"id": 13, "image_id": 2, "category_id": 3, "iscrowd": 0,
             "segmentation": {"size": [H_B, W_B], "counts": runs}},
            {"id": 14, "image_id": 3, "category_id": 7, "iscrowd": 0,
             "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0, 1.0, 9.0]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path, img_dir


def _write_store(tmp_path: Path, coco: Path, img_dir: Path) -> tuple[Path, dict]:
    """Proposals for img_a and img_b: exact GT copies (ranked 31st and 45th), shifted copies (ranked 1st), and
    small filler rectangles. Returns the store and the expected summary numbers, computed with numpy."""
    ds = open_dataset(coco, images=img_dir)
    rng = np.random.default_rng(1)
    props, classes = [], []
    expected: dict[str, list] = {"best_top20": [], "best_top40": [], "best_all": []}
    for image_id, (h, w) in [("img_a", (H_A, W_A)), ("img_b", (H_B, W_B))]:
        inst = ds.instances(image_id)
        gts = inst.masks[~inst.iscrowd]
        classes += inst.classes[~inst.iscrowd].tolist()
        masks, scores = [], []
        for _ in range(43):  # filler: small rectangles, scores 0.5..0.99
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            masks.append(_rect(h, w, y, y + 3, x, x + 3))
            scores.append(rng.uniform(0.5, 0.99))
        masks.append(np.roll(gts[0], 2, axis=1))  # shifted first GT, best score
        scores.append(1.0)
        masks.append(gts[0])  # exact first GT, 45th by score
        scores.append(0.1)
        if len(gts) > 1:  # the exact second GT, 31st by score
            masks.append(gts[1])
            scores.append(float(np.sort(scores[:43])[::-1][28]) - 1e-4)
        masks, scores = np.stack(masks), np.asarray(scores)
        props.append(masks_to_proposals(masks, scores))
        for name, top in (("top20", 20), ("top40", 40), ("all", None)):
            expected[f"best_{name}"] += _expected_best(masks, scores.astype(np.float32), gts, top).tolist()
    meta = [{"id": "img_a", "file_name": "img_a.png", "height": H_A, "width": W_A},
            {"id": "img_b", "file_name": "img_b.png", "height": H_B, "width": W_B}]
    store = write_proposal_store(tmp_path / "store", meta, props)
    out = {"classes": classes, "proposals_per_image": float(np.mean([len(p) for p in props]))}
    for name in ("top20", "top40", "all"):
        b = np.asarray(expected[f"best_{name}"])
        out[f"abo_{name}"] = float(b.mean())
        out[f"recall50_{name}"] = float((b >= 0.5).mean())
        out[f"recall70_{name}"] = float((b >= 0.7).mean())
        cls = np.asarray(classes)
        out[f"mabo_{name}"] = float(np.mean([b[cls == k].mean() for k in np.unique(cls)]))
        out[f"best_{name}"] = b
    return store, out


@pytest.fixture
def coco_and_store(tmp_path: Path):
    coco, img_dir = _write_coco(tmp_path)
    store, expected = _write_store(tmp_path, coco, img_dir)
    return coco, img_dir, store, expected


def test_cli_end_to_end(coco_and_store, tmp_path: Path) -> None:
    coco, img_dir, store, exp = coco_and_store
    # GT order: img_a cat, img_a dog, img_b cat. Exact copies: img_a's dog in the top 40 but not the top 20,
    # the cats only beyond the top 40 (their shifted copies rank first)
    np.testing.assert_allclose(exp["best_all"], [1.0, 1.0, 1.0])
    assert exp["best_top20"][1] < 0.5 and exp["best_top40"][1] == 1.0
    assert 0.5 < exp["best_top40"][0] < 1.0 and 0.5 < exp["best_top40"][2] < 1.0
    out_json = tmp_path / "eval.json"
    res = invoke("eval-proposals", coco, store, "--images", img_dir, "--json", out_json)
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    line = json.loads(lines[-1])
    assert "per_class" not in line
    for key in ("abo_top20", "abo_top40", "abo_all", "recall50_top20", "recall70_top20", "recall50_top40",
                "recall70_top40", "recall50_all", "recall70_all", "mabo_top20", "mabo_top40", "mabo_all"):
        assert line[key] == pytest.approx(exp[key], abs=1e-9), key
    assert line["abo_all"] == 1.0 and line["recall70_all"] == 1.0
    assert line["images"] == 2 and line["instances"] == 3 and line["crowd_excluded"] == 1
    assert line["proposals_per_image"] == pytest.approx(exp["proposals_per_image"])
    assert line["missing_from_store"] == 1
    text = res.stdout
    assert "1 of the 3 dataset images are not in the store" in text and "excluded" in text
    assert "overall" in text and "cat" in text and "dog" in text
    full = json.loads(out_json.read_text())
    assert full["per_class"]["cat"]["instances"] == 2 and full["per_class"]["dog"]["instances"] == 1
    assert {k: v for k, v in full.items() if k != "per_class"} == line
    # the --json file is not replaced without --overwrite; more tops keep the required keys
    res = invoke("eval-proposals", coco, store, "--images", img_dir, "--json", out_json)
    assert_one_line_error(res, str(out_json), "--overwrite")
    res = invoke("eval-proposals", coco, store, "--images", img_dir, "--json", out_json, "--overwrite",
                 "--top", "5", "--top", "20")
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"abo_top5", "abo_top20", "abo_top40", "abo_all", "recall50_top40"} <= set(line)
    assert line["tops"] == [5, 20, 40, "all"]
    assert json.loads(out_json.read_text())["abo_top5"] == line["abo_top5"]


def test_cli_store_image_not_in_dataset(coco_and_store, tmp_path: Path) -> None:
    coco, img_dir, _, _ = coco_and_store
    meta = [{"id": "img_z", "file_name": "img_z.png", "height": 16, "width": 16}]
    store = write_proposal_store(tmp_path / "other", meta, [masks_to_proposals(np.ones((1, 16, 16), bool), [1])])
    res = invoke("eval-proposals", coco, store, "--images", img_dir)
    assert_one_line_error(res, "'img_z'", "not in the dataset")


def test_cli_size_mismatch(coco_and_store, tmp_path: Path) -> None:
    coco, img_dir, _, _ = coco_and_store
    meta = [{"id": "img_c", "file_name": "img_c.png", "height": 16, "width": 17}]
    store = write_proposal_store(tmp_path / "other", meta, [masks_to_proposals(np.ones((1, 16, 17), bool), [1])])
    res = invoke("eval-proposals", coco, store, "--images", img_dir)
    assert_one_line_error(res, "'img_c'", "16x17")


def test_cli_dataset_without_ground_truth(coco_and_store, tmp_path: Path) -> None:
    _, img_dir, store, _ = coco_and_store
    out_json = tmp_path / "never.json"
    res = invoke("eval-proposals", img_dir, store, "--json", out_json)
    assert_one_line_error(res, str(img_dir), "has no ground-truth instances")
    assert not out_json.exists()


def test_cli_missing_store(coco_and_store, tmp_path: Path) -> None:
    coco, img_dir, _, _ = coco_and_store
    res = invoke("eval-proposals", coco, tmp_path / "nope", "--images", img_dir)
    assert_one_line_error(res, "nope")


class _HalfAnnotated(Dataset):
    """Two 8x8 images; only ``a`` has ground truth (one cat square)."""

    kind = "voc"
    has_instances = True

    def __init__(self) -> None:
        self.source = Path("half-annotated")
        self.classes = ["background", "cat"]
        self.images = [ImageInfo(i, Path(f"{i}.png"), 8, 8, k + 1) for k, i in enumerate("ab")]

    def labels(self, image_id: str) -> np.ndarray:
        return np.array([1] if image_id == "a" else [], np.int64)

    def instances(self, image_id: str) -> Instances | None:
        if image_id != "a":
            return None
        return Instances(_rect(8, 8, 0, 4, 0, 4)[None], np.array([1]), np.array([False]))


def test_cli_skips_images_without_ground_truth(tmp_path: Path) -> None:
    name = "test-eval-proposals-half"
    register_dataset(name, _HalfAnnotated)
    try:
        masks = np.stack([_rect(8, 8, 0, 4, 0, 2), _rect(8, 8, 0, 8, 0, 8)])  # IoU 0.5 and 0.25 with the GT
        meta = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in "ab"]
        store = write_proposal_store(tmp_path / "store", meta, [masks_to_proposals(masks, [0.2, 0.9])] * 2)
        res = invoke("eval-proposals", name, store, "--top", "1")
    finally:
        unregister_dataset(name)
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["images"] == 1 and line["skipped_no_gt"] == 1 and line["missing_from_store"] == 0
    assert line["abo_top1"] == pytest.approx(0.25) and line["abo_all"] == pytest.approx(0.5)
    assert line["recall50_all"] == 1.0 and line["recall50_top1"] == 0.0 and line["proposals_per_image"] == 2.0
    assert "1 store images have no ground truth" in res.stdout
