"""The proposal filter's invariants on random proposals (checked with dense numpy masks): a unique,
score-ordered subset of at most ``top``, inside the area bounds, no kept pair overlapping by more than
``nms_iou``, greedy maximality, and the prefix property; plus config validation."""

from __future__ import annotations

import numpy as np
import pytest

from liid.errors import LiidError
from liid.proposals.filtering import FilterConfig, filter_indices, filter_proposals, select
from liid.proposals.store import ImageProposals, masks_to_proposals

H, W = 24, 32
SEEDS = range(6)


def random_proposals(seed: int, m: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Bool masks [m, H, W] and scores [m]: rectangles (tiny to whole-image), elliptic blobs, random pixel sets,
    near-duplicates (one-pixel shifts), exact duplicates and empty masks; scores with ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:H, :W]
    masks = np.zeros((m, H, W), dtype=bool)
    for i in range(m):
        kind = rng.integers(0, 6)
        if kind == 0:  # rectangle
            y1, x1 = rng.integers(0, H), rng.integers(0, W)
            masks[i, y1:y1 + rng.integers(1, H + 1), x1:x1 + rng.integers(1, W + 1)] = True
        elif kind == 1:  # ellipse
            cy, cx, ry, rx = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(1, H), rng.uniform(1, W)
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif kind == 2 and i > 0:  # a shifted copy of an earlier one
            j = rng.integers(0, i)
            masks[i] = np.roll(masks[j], rng.choice([-1, 1]), axis=int(rng.integers(0, 2)))
        elif kind == 3 and i > 0:  # an exact duplicate
            masks[i] = masks[rng.integers(0, i)]
        elif kind == 4:  # random pixels
            masks[i] = rng.random((H, W)) < rng.uniform(0.01, 0.95)
        # kind 5 (and 2/3 at i = 0): empty
    masks[rng.integers(0, m)] = True  # at least one whole-image mask
    masks[rng.integers(0, m)] = False  # at least one empty one
    scores = rng.random(m).round(1).astype(np.float32)  # round: many ties
    return masks, scores


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa, fb = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


CONFIGS = [FilterConfig(), FilterConfig(top=5), FilterConfig(top=20, nms_iou=0.5),
           FilterConfig(min_area=0.05, max_area=0.5, nms_iou=0.3), FilterConfig(min_area=0.0, max_area=1.0),
           FilterConfig(top=1, nms_iou=0.95), FilterConfig(nms_iou=1.0)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"top{c.top}-{c.min_area}-{c.max_area}-{c.nms_iou}")
def test_filter_invariants(seed: int, config: FilterConfig) -> None:
    masks, scores = random_proposals(seed)
    props = masks_to_proposals(masks, scores)
    kept = filter_indices(props.rles, props.scores, H, W, config)
    m = len(masks)
    assert kept.dtype == np.int64 and kept.ndim == 1
    assert len(set(kept.tolist())) == len(kept) and all(0 <= i < m for i in kept)  # unique subset
    assert np.all(np.diff(scores[kept]) <= 0)  # best first
    for a, b in zip(kept[:-1], kept[1:], strict=True):  # ties keep the input order
        if scores[a] == scores[b]:
            assert a < b
    if config.top is not None:
        assert len(kept) <= config.top
    frac = masks.sum(axis=(1, 2)) / (H * W)
    passes = (frac >= config.min_area) & (frac <= config.max_area)
    assert passes[kept].all()
    iou = iou_matrix(masks, masks)
    sub = iou[np.ix_(kept, kept)]
    np.fill_diagonal(sub, 0.0)
    assert not (sub > config.nms_iou).any()  # no kept pair overlaps by more than nms_iou
    # greedy maximality: every examined proposal that was dropped overlaps a better-ranked kept one
    order = [i for i in sorted(range(m), key=lambda i: -float(scores[i])) if passes[i]]
    rank = {i: r for r, i in enumerate(order)}
    full = config.top is not None and len(kept) == config.top
    cutoff = rank[int(kept[-1])] if full else len(order)
    kept_set = set(kept.tolist())
    for i in order[:cutoff]:
        if i not in kept_set:
            better = [j for j in kept if rank[int(j)] < rank[i]]
            assert better and iou[i, better].max() > config.nms_iou, (i, rank[i])
    if config.top is None and config.nms_iou == 1.0:
        assert kept.tolist() == order  # nothing suppressed: every proposal within the bounds, by score


@pytest.mark.parametrize("seed", SEEDS)
def test_prefix_property(seed: int) -> None:
    masks, scores = random_proposals(seed)
    props = masks_to_proposals(masks, scores)
    for base in (FilterConfig(), FilterConfig(min_area=0.02, max_area=0.6, nms_iou=0.4)):
        untruncated = filter_indices(props.rles, props.scores, H, W, base)
        for n in range(1, len(untruncated) + 3):
            cfg = FilterConfig(top=n, min_area=base.min_area, max_area=base.max_area, nms_iou=base.nms_iou)
            np.testing.assert_array_equal(filter_indices(props.rles, props.scores, H, W, cfg), untruncated[:n])


@pytest.mark.parametrize("seed", SEEDS)
def test_keep_everything(seed: int) -> None:
    masks, scores = random_proposals(seed)
    props = masks_to_proposals(masks, scores)
    by_score = np.argsort(-scores, kind="stable")
    nonempty = masks.any(axis=(1, 2))
    # min_area = 0 keeps the empty masks too (0 >= 0); any positive minimum drops them
    everything = filter_indices(props.rles, props.scores, H, W, FilterConfig(min_area=0.0, max_area=1.0, nms_iou=1.0))
    np.testing.assert_array_equal(everything, by_score)
    tiny = FilterConfig(min_area=1e-9, max_area=1.0, nms_iou=1.0)
    np.testing.assert_array_equal(filter_indices(props.rles, props.scores, H, W, tiny), by_score[nonempty[by_score]])


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools decode
def test_filter_proposals_and_select_match_indices() -> None:
    masks, scores = random_proposals(3)
    props = masks_to_proposals(masks, scores)
    cfg = FilterConfig(top=7, nms_iou=0.5)
    idx = filter_indices(props.rles, props.scores, H, W, cfg)
    out = filter_proposals(props, cfg)
    assert isinstance(out, ImageProposals) and (out.height, out.width) == (H, W) and len(out) == len(idx)
    np.testing.assert_array_equal(out.boxes, props.boxes[idx])
    np.testing.assert_array_equal(out.scores, props.scores[idx])
    np.testing.assert_array_equal(out.decode(), masks[idx])
    none = select(props, np.zeros(0, np.int64))
    assert len(none) == 0 and none.boxes.shape == (0, 4)


def test_no_proposals() -> None:
    got = filter_indices([], np.zeros(0), H, W, FilterConfig(top=3))
    assert got.dtype == np.int64 and got.shape == (0,)
    empty = masks_to_proposals(np.zeros((0, H, W), bool), np.zeros(0))
    assert len(filter_proposals(empty)) == 0


@pytest.mark.parametrize("kwargs", [
    {"top": 0}, {"top": -2}, {"min_area": -0.1}, {"min_area": 0.5, "max_area": 0.5}, {"min_area": 0.6, "max_area": 0.4},
    {"max_area": 1.5}, {"nms_iou": 0.0}, {"nms_iou": -0.2}, {"nms_iou": 1.01},
])
def test_bad_config(kwargs: dict) -> None:
    cfg = FilterConfig(**kwargs)
    with pytest.raises(LiidError, match="filter"):
        cfg.validate()
    with pytest.raises(LiidError, match="filter"):  # checked even when there is nothing to filter
        filter_indices([], np.zeros(0), H, W, cfg)
