"""Selective search through its public functions: exact per-label RLEs, 4-connected neighbour pairs, and the
generator on a small synthetic image (valid, sorted, unique, deterministic, finds the objects, full size)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.selective_search import SelectiveSearchConfig, label_rles, neighbour_pairs, selective_search

H, W = 60, 80
RECTS = [(5, 25, 5, 30, (220, 30, 30)), (30, 55, 10, 35, (30, 200, 40)), (10, 45, 45, 75, (30, 40, 220))]

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools

# the paper's ranking (position × a seeded random factor); the default may be a deterministic one
RANDOM_RANKING = {"ranking": "uijlings"} if "ranking" in {f.name for f in dataclasses.fields(SelectiveSearchConfig)} \
    else {}


def synthetic_image(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB [60, 80, 3]: red, green and blue rectangles (slightly noisy) on a noisy grey background;
    and the rectangles' masks [3, 60, 80]."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(128, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    masks = np.zeros((len(RECTS), H, W), dtype=bool)
    for k, (y1, y2, x1, x2, colour) in enumerate(RECTS):
        patch = np.asarray(colour) + rng.normal(0, 6, (y2 - y1, x2 - x1, 3))
        img[y1:y2, x1:x2] = np.clip(patch, 0, 255).astype(np.uint8)
        masks[k, y1:y2, x1:x2] = True
    return img, masks


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa, fb = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@pytest.fixture(scope="module")
def image() -> tuple[np.ndarray, np.ndarray]:
    return synthetic_image()


@pytest.fixture(scope="module")
def props(image):
    return selective_search(image[0], SelectiveSearchConfig(), image_key="img_0")


# --- label_rles, neighbour_pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 9), (1, 1), (1, 12), (11, 1), (16, 5)])
@pytest.mark.parametrize("seed", range(3))
def test_label_rles_decode_exactly(shape: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, shape).astype(np.int32)
    if seed == 1:  # long runs crossing column boundaries
        labels = np.repeat(rng.integers(0, 5, (shape[0] * shape[1] + 3) // 4), 4)[: labels.size].reshape(shape)
    n = 7  # labels 5 and 6 never occur (and maybe others): their masks are empty
    rles = label_rles(labels, n)
    assert len(rles) == n
    for k, r in enumerate(rles):
        assert list(r["size"]) == list(shape)
        dec = mask_util.decode(r).astype(bool)
        np.testing.assert_array_equal(dec, labels == k, err_msg=f"label {k}")
        assert int(mask_util.area(r)) == int((labels == k).sum())


def test_label_rles_are_canonical() -> None:
    """The same string pycocotools' ``encode`` gives for the dense mask (selective search dedupes by it)."""
    labels = np.array([[0, 0], [1, 1]])
    for k, r in enumerate(label_rles(labels, 2)):
        assert r["counts"] == mask_util.encode(np.asfortranarray((labels == k).astype(np.uint8)))["counts"], k


def test_neighbour_pairs_hand_made() -> None:
    labels = np.array([[0, 0, 1, 1],
                       [0, 2, 2, 1],
                       [3, 3, 2, 4],
                       [3, 3, 4, 4]])
    got = neighbour_pairs(labels)
    assert got.dtype == np.int64 and got.shape[1] == 2
    assert got.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 4], [2, 3], [2, 4], [3, 4]]  # not (0,4), (1,3)
    diagonal = np.array([[0, 1], [2, 3]])  # 0-3 and 1-2 touch only at a corner: not neighbours
    assert neighbour_pairs(diagonal).tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert neighbour_pairs(np.zeros((4, 5), np.int32)).shape == (0, 2)


# --- selective_search ----------------------------------------------------------------------------------------


def _check_valid(p, h: int, w: int, dense_unique: bool = True) -> np.ndarray:
    """The common checks of a result; returns the decoded masks."""
    assert (p.height, p.width) == (h, w) and len(p) > 0
    masks = p.decode()
    assert masks.shape == (len(p), h, w)
    assert masks.any(axis=(1, 2)).all()  # no empty mask
    assert all(list(r["size"]) == [h, w] and isinstance(r["counts"], str) for r in p.rles)
    ys, xs = masks.any(axis=2), masks.any(axis=1)
    extents = np.stack([xs.argmax(1), ys.argmax(1), w - xs[:, ::-1].argmax(1), h - ys[:, ::-1].argmax(1)], axis=1)
    np.testing.assert_array_equal(p.boxes, extents.astype(np.float32))  # XYXY, x2/y2 exclusive
    assert p.scores.dtype == np.float32 and (p.scores > 0).all() and np.isfinite(p.scores).all()
    assert np.all(np.diff(p.scores) <= 0)  # best first
    assert len({r["counts"] for r in p.rles}) == len(p)  # no duplicate masks
    if dense_unique:
        assert len(np.unique(np.packbits(masks.reshape(len(p), -1), axis=1), axis=0)) == len(p)
    assert masks.all(axis=(1, 2)).any()  # the whole image (the last merge)
    return masks


def test_proposals_valid_and_find_the_objects(image, props) -> None:
    masks = _check_valid(props, H, W)
    best = iou_matrix(masks, image[1]).max(axis=0)
    assert (best > 0.8).all(), best


@pytest.mark.parametrize("ranking", [{}, RANDOM_RANKING], ids=["default", "random"])
def test_deterministic_per_key_and_seed(image, ranking: dict) -> None:
    first = selective_search(image[0], SelectiveSearchConfig(**ranking), image_key="img_0")
    again = selective_search(image[0], SelectiveSearchConfig(**ranking), image_key="img_0")
    assert again.rles == first.rles
    np.testing.assert_array_equal(again.scores, first.scores)
    np.testing.assert_array_equal(again.boxes, first.boxes)
    masks = _check_valid(first, H, W)
    assert (iou_matrix(masks, image[1]).max(axis=0) > 0.8).all()
    for other in (selective_search(image[0], SelectiveSearchConfig(seed=1, **ranking), image_key="img_0"),
                  selective_search(image[0], SelectiveSearchConfig(**ranking), image_key="img_1")):
        _check_valid(other, H, W)
        # the ranking may change, not which regions the hierarchies find (no max_proposals cut here)
        assert len(first) < SelectiveSearchConfig().max_proposals
        assert {r["counts"] for r in other.rles} == {r["counts"] for r in first.rles}
        if ranking == RANDOM_RANKING:  # the seeded random factors reorder the proposals
            assert [r["counts"] for r in other.rles] != [r["counts"] for r in first.rles]


def test_max_proposals_keeps_the_best(image, props) -> None:
    few = selective_search(image[0], SelectiveSearchConfig(max_proposals=10), image_key="img_0")
    assert len(few) == 10
    assert few.rles == props.rles[:10]
    np.testing.assert_array_equal(few.scores, props.scores[:10])


def test_larger_than_max_side_gives_full_size_masks(image) -> None:
    p = selective_search(image[0], SelectiveSearchConfig(max_side=32), image_key="img_0")
    masks = _check_valid(p, H, W, dense_unique=True)
    assert (iou_matrix(masks, image[1]).max(axis=0) > 0.8).all()


@pytest.mark.parametrize(("seed", "max_side"), [(5, 512), (0, 32)])
def test_no_duplicate_masks(seed: int, max_side: int) -> None:
    p = selective_search(synthetic_image(seed)[0], SelectiveSearchConfig(max_side=max_side), image_key="k")
    masks = p.decode().reshape(len(p), -1)
    assert len(np.unique(np.packbits(masks, axis=1), axis=0)) == len(p)


def test_uniform_image_is_one_region() -> None:
    p = selective_search(np.full((20, 24, 3), 77, np.uint8), SelectiveSearchConfig(), image_key="flat")
    masks = _check_valid(p, 20, 24)
    assert len(p) == 1 and masks[0].all()


@pytest.mark.parametrize("bad", [
    np.zeros((H, W), np.uint8),  # grayscale 2-d
    np.zeros((H, W, 3), np.float32),  # float
    np.zeros((H, W, 4), np.uint8),  # RGBA
    np.zeros((H, W, 1), np.uint8),
])
def test_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(LiidError, match="uint8 RGB"):
        selective_search(bad, SelectiveSearchConfig(), image_key="bad")


@pytest.mark.parametrize("kwargs", [
    {"colour_spaces": ("xyz",)}, {"colour_spaces": ()}, {"strategies": ("cx",)}, {"strategies": ("",)},
    {"ks": ()}, {"ks": (0,)}, {"min_size": 0}, {"max_side": 8}, {"max_proposals": 0},
])
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises(LiidError, match="selective search"):
        selective_search(synthetic_image()[0], SelectiveSearchConfig(**kwargs), image_key="x")
