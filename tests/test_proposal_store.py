"""The proposal store: RLE/box conventions, round trip, validation errors naming file and proposal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.store import (
    ImageProposals,
    masks_to_proposals,
    read_image_proposals,
    read_proposal_index,
    write_proposal_store,
)


def _rect(h, w, y1, y2, x1, x2):
    """bool [h, w] mask with rows y1..y2-1 and columns x1..x2-1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def _store(tmp_path, name="props"):
    rng = np.random.default_rng(0)
    masks_a = rng.random((4, 12, 17)) > 0.6
    masks_a[3] = False  # an empty proposal
    masks_b = np.stack([_rect(9, 8, 1, 5, 3, 8), _rect(9, 8, 0, 9, 0, 8)])
    meta = [{"id": "a1", "file_name": "a1.jpg", "height": 12, "width": 17, "coco_id": 7},
            {"id": "b2", "file_name": "sub/b2.png", "height": 9, "width": 8}]
    props = [masks_to_proposals(masks_a, [0.9, 0.8, 0.7, 0.1]), masks_to_proposals(masks_b, [0.5, 0.25])]
    path = write_proposal_store(tmp_path / name, meta, props)
    return path, meta, [masks_a, masks_b], props


def test_rle_round_trip_and_reading(tmp_path):
    path, meta, masks, _ = _store(tmp_path)
    index = read_proposal_index(path)
    assert [e["id"] for e in index] == ["a1", "b2"]
    assert index[0]["coco_id"] == 7 and "coco_id" not in index[1]
    assert index[1]["file"] == "images/b2.json" and index[1]["file_name"] == "sub/b2.png"
    for entry, m in zip(index, masks, strict=True):
        p = read_image_proposals(path, entry)
        assert len(p) == m.shape[0] and (p.height, p.width) == m.shape[1:]
        assert p.boxes.dtype == np.float32 and p.boxes.shape == (m.shape[0], 4)
        assert p.scores.dtype == np.float32
        assert all(isinstance(r["counts"], str) for r in p.rles)
        np.testing.assert_array_equal(p.decode(), m)
        # a third party decodes with pycocotools alone
        raw = json.loads((path / entry["file"]).read_text())
        dec = mask_util.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in raw["masks"]])
        np.testing.assert_array_equal(dec.transpose(2, 0, 1).astype(bool), m)
    np.testing.assert_allclose(read_image_proposals(path, index[0]).scores, [0.9, 0.8, 0.7, 0.1], rtol=1e-6)


def test_boxes_are_xyxy_with_exclusive_end():
    m = _rect(10, 12, 1, 5, 3, 8)  # rows 1..4, columns 3..7
    p = masks_to_proposals(m[None], [1.0])
    np.testing.assert_array_equal(p.boxes, [[3, 1, 8, 5]])
    empty = masks_to_proposals(np.zeros((1, 4, 4), bool), [0.5])
    np.testing.assert_array_equal(empty.boxes, [[0, 0, 0, 0]])
    none = masks_to_proposals(np.zeros((0, 4, 5), bool), [])
    assert len(none) == 0 and none.boxes.shape == (0, 4) and none.decode().shape == (0, 4, 5)


def test_random_boxes_match_mask_extent():
    rng = np.random.default_rng(1)
    masks = rng.random((6, 15, 11)) > 0.97
    p = masks_to_proposals(masks, np.ones(6))
    for m, b in zip(masks, p.boxes, strict=True):
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        np.testing.assert_array_equal(b, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_existing_output_refused_and_overwrite(tmp_path):
    path, meta, masks, props = _store(tmp_path)
    with pytest.raises(LiidError, match="output exists"):
        write_proposal_store(path, meta, props)
    write_proposal_store(path, meta[:1], props[:1], overwrite=True)
    assert [e["id"] for e in read_proposal_index(path)] == ["a1"]


def test_write_errors_leave_nothing(tmp_path):
    masks = np.stack([_rect(9, 8, 1, 5, 3, 8)])
    good = masks_to_proposals(masks, [0.5])
    meta = [{"id": "x", "file_name": "x.jpg", "height": 9, "width": 8}]
    cases = [
        ([{**meta[0], "height": 10}], [good], "x.json: proposals are for a 9x8 image"),
        (meta, [ImageProposals(good.boxes, np.array([0.5, 0.1], np.float32), good.rles, 9, 8)],
         "x.json: lengths differ: 1 boxes, 2 scores, 1 masks"),
        (meta, [ImageProposals(np.array([[0, 0, np.nan, 1]], np.float32), good.scores, good.rles, 9, 8)],
         "x.json: proposal 0 has a NaN or inf box"),
        (meta, [ImageProposals(good.boxes, np.array([np.inf], np.float32), good.rles, 9, 8)],
         "x.json: proposal 0 has a NaN or inf score"),
        (meta, [], "x.json: no proposals given"),
        (meta, [good, good], "more proposal lists"),
        (meta * 2, [good, good], "image id 'x' appears twice"),
        ([{**meta[0], "id": "../x"}], [good], "cannot be a file name"),
    ]
    for m, props, msg in cases:
        with pytest.raises(LiidError, match=msg.replace("(", r"\(")):
            write_proposal_store(tmp_path / "s", m, props)
        assert not (tmp_path / "s").exists()
        assert list(tmp_path.iterdir()) == []


def _edit(path, entry, fn):
    f = path / entry["file"]
    d = json.loads(f.read_text())
    fn(d)
    f.write_text(json.dumps(d))
    return str(f)


def test_read_errors_name_file_and_proposal(tmp_path):
    path, *_ = _store(tmp_path)
    entry = read_proposal_index(path)[1]

    def check(fn, msg):
        fresh, *_ = _store(tmp_path, name=f"p{check.n}")
        check.n += 1
        fname = _edit(fresh, entry, fn)
        with pytest.raises(LiidError) as e:
            read_image_proposals(fresh, entry)
        assert str(e.value).startswith(fname) and msg in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    check.n = 0

    check(lambda d: d["masks"][1].update(size=[8, 9]), "proposal 1: mask size [8, 9] does not match")
    check(lambda d: d["scores"].pop(), "lengths differ: 2 boxes, 1 scores, 2 masks")
    check(lambda d: d["masks"].pop(), "lengths differ: 2 boxes, 2 scores, 1 masks")
    check(lambda d: d["boxes"][1].__setitem__(2, float("nan")), "proposal 1 has a NaN or inf box")
    check(lambda d: d["scores"].__setitem__(0, float("inf")), "proposal 0 has a NaN or inf score")
    check(lambda d: d["boxes"][0].pop(), "proposal 0: box must be")
    check(lambda d: d.update(image_id="zz"), "does not match the index entry 'b2'")
    check(lambda d: d.update(height=3), "does not match the index")
    check(lambda d: d["masks"][0].update(counts=[1, 2]), "proposal 0: mask must be")

    (path / entry["file"]).write_text('{"image_id": "b2", "boxes": [')
    with pytest.raises(LiidError, match="b2.json: corrupt JSON"):
        read_image_proposals(path, entry)
    (path / entry["file"]).unlink()
    with pytest.raises(LiidError, match="b2.json: file not found"):
        read_image_proposals(path, entry)


def test_index_errors(tmp_path):
    path, *_ = _store(tmp_path)
    with pytest.raises(LiidError, match="proposal store directory not found"):
        read_proposal_index(tmp_path / "nope")
    idx = path / "index.json"
    d = json.loads(idx.read_text())
    for bad, msg in [
        ({**d, "format": "x"}, "not a proposal store"),
        ({**d, "version": 99}, "version 99"),
        ({**d, "images": d["images"] * 2}, "image id 'a1' appears twice"),
        ({**d, "images": [{**d["images"][0], "height": 0}]}, "'height' must be a positive integer"),
        ({**d, "images": [{**d["images"][0], "file": "/etc/passwd"}]}, "'file' must be a relative path"),
        ({**d, "images": [{**d["images"][0], "coco_id": "7"}]}, "'coco_id' must be an integer"),
    ]:
        idx.write_text(json.dumps(bad))
        with pytest.raises(LiidError, match=msg) as e:
            read_proposal_index(path)
        assert "index.json" in str(e.value)
    idx.write_text("{")
    with pytest.raises(LiidError, match="index.json: corrupt JSON"):
        read_proposal_index(path)
