"""Proposal importers: MCG .mat (segments, boxes), PRM run-length JSON, COCO results; exactness and errors."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from pycocotools import mask as mask_util

from liid.errors import LiidError
from liid.proposals.importers import (
    FORMATS,
    PER_IMAGE_FORMATS,
    import_image_proposals,
    read_coco_results,
    read_mcg_boxes,
    read_mcg_mat,
    read_prm_json,
)
from liid.proposals.importers._common import label_rles, rle_counts_from_string, runs_to_rles
from liid.proposals.store import masks_to_proposals

PRM_DIR = Path(__file__).resolve().parents[1].parent / "shared/data/prm-mcg-demo"


# ---------------------------------------------------------------- helpers (independent of the importers)

def _encode(mask: np.ndarray) -> str:
    """pycocotools' canonical compressed counts of a dense mask."""
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths, starting with a (possibly empty) run of zeros: a plain Python loop."""
    counts, current, n = [], False, 0
    for v in mask.ravel(order="F").tolist():
        if v != current:
            counts.append(n)
            current, n = v, 0
        n += 1
    counts.append(n)
    return counts


def _superpixels(rng, h: int, w: int, k: int) -> np.ndarray:
    """A 1-based label image with k labels, blocky and ragged (labels recur in several places)."""
    coarse = rng.integers(1, k + 1, size=(h // 4 + 1, w // 4 + 1))
    sp = np.kron(coarse, np.ones((4, 4), dtype=np.int64))[:h, :w]
    noise = rng.random((h, w)) < 0.1
    sp[noise] = rng.integers(1, k + 1, size=int(noise.sum()))
    sp[0, :k] = np.arange(1, k + 1)  # every id 1..k occurs (needs w >= k)
    return sp


def _write_mcg(path: Path, superpixels: np.ndarray, cells: list, scores=None, **extra) -> Path:
    """An MCG segment file with MATLAB conventions: N x 1 cell of 1 x k double rows, N x 1 scores."""
    labels = np.empty((len(cells), 1), dtype=object)
    for j, ids in enumerate(cells):
        labels[j, 0] = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=np.float64).reshape(1, -1)
    variables = {"superpixels": superpixels, "labels": labels, **extra}
    if scores is not None:
        variables["scores"] = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    scipy.io.savemat(path, variables)
    return path


def _prm_entry(runs: list[tuple[int, int]], h: int, w: int) -> dict:
    raw = b"".join(struct.pack("<II", s, n) for s, n in runs)
    return {"data": base64.b64encode(raw).decode("ascii"), "shape": [h, w]}


def _slow_prm_decode(entry: dict) -> np.ndarray:
    """Pixel-by-pixel reference decoder: 1-based C-order starts, uint32 little-endian pairs."""
    h, w = entry["shape"]
    raw = base64.b64decode(entry["data"])
    flat = [False] * (h * w)
    for k in range(0, len(raw), 8):
        start, length = struct.unpack("<II", raw[k:k + 8])
        for p in range(start - 1, start - 1 + length):
            flat[p] = True
    return np.array(flat, dtype=bool).reshape(h, w)


def _err(excinfo, *parts: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ---------------------------------------------------------------- RLE building blocks

@pytest.mark.parametrize("kind", ["random", "sparse", "empty", "full", "first_pixel", "last_pixel"])
def test_dense_rle_dense_identity(kind):
    rng = np.random.default_rng(1)
    h, w = 13, 17
    mask = {
        "random": rng.random((h, w)) > 0.5,
        "sparse": rng.random((h, w)) > 0.95,
        "empty": np.zeros((h, w), bool),
        "full": np.ones((h, w), bool),
        "first_pixel": np.pad(np.ones((1, 1), bool), ((0, h - 1), (0, w - 1))),
        "last_pixel": np.pad(np.ones((1, 1), bool), ((h - 1, 0), (w - 1, 0))),
    }[kind]
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat.astype(np.int8), [0]])))
    (rle,) = runs_to_rles([(edges[0::2], edges[1::2])], h, w)
    assert rle["counts"].decode("ascii") == _encode(mask)  # canonical: byte-identical to encode
    assert np.array_equal(mask_util.decode(rle).astype(bool), mask)
    counts = rle_counts_from_string(rle["counts"])
    assert counts.tolist() == _uncompressed_counts(mask)
    assert rle_counts_from_string(_encode(mask)).tolist() == _uncompressed_counts(mask)


def test_rle_string_parser_rejects_garbage():
    assert rle_counts_from_string("0\x7f") is None  # char outside '0'..'o'
    assert rle_counts_from_string("0h") is None  # last char has the continuation bit
    assert rle_counts_from_string("\u00e9") is None  # not ASCII
    assert rle_counts_from_string("").tolist() == []


def test_label_rles_match_dense_label_masks():
    rng = np.random.default_rng(2)
    sp = _superpixels(rng, 23, 31, 9)
    values, rles = label_rles(sp)
    assert values.tolist() == sorted(set(sp.ravel().tolist()))
    for v, rle in zip(values, rles, strict=True):
        assert rle["counts"].decode("ascii") == _encode(sp == v)


# ---------------------------------------------------------------- MCG segment .mat

@pytest.mark.parametrize("sp_dtype", [np.uint16, np.float64])
def test_mcg_mat_masks_are_exact_superpixel_unions(tmp_path, sp_dtype):
    rng = np.random.default_rng(3)
    h, w, k = 37, 45, 12
    sp = _superpixels(rng, h, w, k)
    cells = [[3], [1, 2, 5], list(range(1, k + 1)), [k, 7, 7, 4], [6, 8]]
    cells.append(np.array([[9.0], [10.0], [11.0]]))  # a k x 1 column cell
    cells.append(np.array([[2.0]]))  # a 1 x 1 scalar cell
    scores = [0.9, 0.8, 0.75, 0.5, 0.5, 0.2, -1.5]
    path = _write_mcg(tmp_path / "2008_000123.mat", sp.astype(sp_dtype), cells, scores)
    props = read_mcg_mat(path, h, w)
    assert (props.height, props.width, len(props)) == (h, w, len(cells))
    dense = np.stack([np.isin(sp, np.asarray(c).ravel()) for c in cells])
    assert np.array_equal(props.decode(), dense)
    assert [r["counts"] for r in props.rles] == [_encode(m) for m in dense]
    ref = masks_to_proposals(dense, scores)
    assert np.array_equal(props.boxes, ref.boxes)  # the mask extents, x2/y2 exclusive
    for j, m in enumerate(dense):
        ys, xs = np.nonzero(m)
        assert props.boxes[j].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert props.scores.dtype == np.float32
    assert np.array_equal(props.scores, np.asarray(scores, np.float32))

    first3 = read_mcg_mat(path, h, w, max_proposals=3)
    assert len(first3) == 3 and first3.rles == props.rles[:3]
    assert np.array_equal(first3.scores, props.scores[:3])
    assert np.array_equal(import_image_proposals(path, "mcg-mat", h, w).decode(), dense)


def test_mcg_mat_many_superpixels_and_proposals(tmp_path):
    """Over 255 RLEs in one pycocotools call (merge, toBbox, frPyObjects): some of its calls overflow there."""
    rng = np.random.default_rng(6)
    h, w, k = 30, 40, 600
    sp = rng.integers(1, k + 1, size=(h, w))
    sp[0, :] = np.arange(1, w + 1)
    cells = [list(range(1, k + 1))] + [rng.choice(np.arange(1, w + 1), size=3, replace=False).tolist()
                                       for _ in range(299)]
    path = _write_mcg(tmp_path / "many.mat", sp.astype(np.uint16), cells, np.linspace(1, 0, 300))
    props = read_mcg_mat(path, h, w)
    dense = np.stack([np.isin(sp, c) for c in cells])
    assert dense[0].all() and np.array_equal(props.decode(), dense)
    assert np.array_equal(props.boxes, masks_to_proposals(dense, props.scores).boxes)


def test_mcg_mat_candidates_struct_and_default_scores(tmp_path):
    """`save(f, 'candidates')` of im2mcg's output: one 1x1 struct; no scores -> 1 - j/N."""
    sp = np.array([[1, 1, 2], [3, 3, 2]], dtype=np.uint16)
    labels = np.empty((2, 1), dtype=object)
    labels[0, 0] = np.array([[1.0, 2.0]])
    labels[1, 0] = np.array([[3.0]])
    scipy.io.savemat(tmp_path / "c.mat", {"candidates": {"superpixels": sp, "labels": labels}})
    props = read_mcg_mat(tmp_path / "c.mat", 2, 3)
    assert props.decode().astype(int).tolist() == [[[1, 1, 1], [0, 0, 1]], [[0, 0, 0], [1, 1, 0]]]
    assert props.scores.tolist() == [1.0, 0.5]


def _mcg_case(tmp_path, case):
    rng = np.random.default_rng(4)
    sp = _superpixels(rng, 20, 24, 8)
    cells, scores, size = [[1, 2], [3], [4, 5], [6]], [0.9, 0.8, 0.7, 0.6], (20, 24)
    if case == "size":
        size = (24, 20)
    elif case == "range":
        cells[2] = [4, 9]
    elif case == "zero":
        cells[2] = [0]
    elif case == "empty":
        cells[2] = np.zeros((1, 0))
    elif case == "fraction":
        cells[2] = [2.5]
    elif case == "scores":
        scores = scores[:3]
    elif case == "nan":
        scores[2] = float("nan")
    elif case == "no_labels":
        path = tmp_path / "x.mat"
        scipy.io.savemat(path, {"superpixels": sp, "scores": np.array(scores)})
        return path, size
    return _write_mcg(tmp_path / "x.mat", sp, cells, scores), size


@pytest.mark.parametrize("case,parts", [
    ("size", ["superpixels are 20x24 but the image is 24x20"]),
    ("range", ["proposal 2 (labels{3})", "superpixel id 9 out of range 1..8"]),
    ("zero", ["proposal 2 (labels{3})", "superpixel id 0 out of range 1..8"]),
    ("empty", ["proposal 2 (labels{3})", "empty proposal"]),
    ("fraction", ["proposal 2", "integers"]),
    ("scores", ["4 proposals but 3 scores"]),
    ("nan", ["proposal 2", "NaN"]),
    ("no_labels", ["no variable 'labels'", "superpixels"]),
])
def test_mcg_mat_errors_name_file_and_proposal(tmp_path, case, parts):
    path, (h, w) = _mcg_case(tmp_path, case)
    with pytest.raises(LiidError) as e:
        read_mcg_mat(path, h, w)
    _err(e, str(path), *parts)


def test_mcg_mat_zero_proposals_and_corrupt_files(tmp_path):
    sp = np.ones((4, 5), np.uint16)
    path = _write_mcg(tmp_path / "none.mat", sp, [])
    with pytest.raises(LiidError) as e:
        read_mcg_mat(path, 4, 5)
    _err(e, str(path), "no proposals")

    good = _write_mcg(tmp_path / "good.mat", np.arange(1, 401, dtype=np.uint16).reshape(20, 20), [[1], [2, 3]])
    raw = good.read_bytes()
    for name, data in [("truncated.mat", raw[: len(raw) // 2]), ("empty.mat", b""), ("junk.mat", b"x" * 300)]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LiidError) as e:
            read_mcg_mat(tmp_path / name, 20, 20)
        _err(e, str(tmp_path / name))
    with pytest.raises(LiidError) as e:
        read_mcg_mat(tmp_path / "missing.mat", 20, 20)
    _err(e, str(tmp_path / "missing.mat"), "not found")


def test_mcg_mat_v73_is_refused_with_a_conversion_hint(tmp_path):
    """A v7.3 header (version 0x0200): scipy cannot read HDF5 .mat files."""
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    path = tmp_path / "v73.mat"
    path.write_bytes(header.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
    with pytest.raises(LiidError) as e:
        read_mcg_mat(path, 5, 5)
    _err(e, str(path), "v7.3", "'-v7'")


# ---------------------------------------------------------------- MCG box files

def test_mcg_boxes_one_based_inclusive_round_trip(tmp_path):
    h, w = 6, 8
    boxes = np.array([[1, 1, 2, 3],  # rows 0..1, cols 0..2
                      [3, 2, 6, 4],
                      [1, 1, h, w],  # the whole image
                      [1, 5, h, 5],  # a full-height column
                      [h, w, h, w]], dtype=np.float64)  # the last pixel
    scipy.io.savemat(tmp_path / "b.mat", {"boxes": boxes})
    props = read_mcg_boxes(tmp_path / "b.mat", h, w)
    expect = np.zeros((len(boxes), h, w), bool)
    for j, (y1, x1, y2, x2) in enumerate(boxes.astype(int)):
        expect[j, y1 - 1:y2, x1 - 1:x2] = True
    assert expect[0].astype(int)[:3, :4].tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]]
    assert np.array_equal(props.decode(), expect)
    assert [r["counts"] for r in props.rles] == [_encode(m) for m in expect]
    assert props.boxes.tolist() == [[x1 - 1, y1 - 1, x2, y2] for y1, x1, y2, x2 in boxes.tolist()]
    assert np.allclose(props.scores, [1.0, 0.8, 0.6, 0.4, 0.2])

    scipy.io.savemat(tmp_path / "s.mat", {"bboxes": boxes[:2].astype(np.int32), "scores": np.array([[0.3], [0.7]])})
    props = import_image_proposals(tmp_path / "s.mat", "mcg-boxes", h, w, max_proposals=1)
    assert props.boxes.tolist() == [[0, 0, 3, 2]] and props.scores.tolist() == [pytest.approx(0.3)]


@pytest.mark.parametrize("box,parts", [
    ([0, 1, 2, 2], ["proposal 1", "not inside the 6x8 image"]),
    ([1, 1, 7, 2], ["proposal 1", "not inside"]),
    ([3, 1, 2, 2], ["proposal 1", "y1 <= y2"]),
    ([1, 3, 2, 2], ["proposal 1", "x1 <= x2"]),
    ([1, 1.5, 2, 2], ["proposal 1", "not integer"]),
])
def test_mcg_boxes_errors(tmp_path, box, parts):
    path = tmp_path / "b.mat"
    scipy.io.savemat(path, {"boxes": np.array([[1, 1, 2, 2], box], dtype=np.float64)})
    with pytest.raises(LiidError) as e:
        read_mcg_boxes(path, 6, 8)
    _err(e, str(path), *parts)


def test_mcg_boxes_shape_and_empty(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"boxes": np.ones((2, 3))})
    with pytest.raises(LiidError) as e:
        read_mcg_boxes(tmp_path / "a.mat", 6, 8)
    _err(e, str(tmp_path / "a.mat"), "N x 4")
    scipy.io.savemat(tmp_path / "e.mat", {"boxes": np.zeros((0, 4))})
    with pytest.raises(LiidError) as e:
        read_mcg_boxes(tmp_path / "e.mat", 6, 8)
    _err(e, str(tmp_path / "e.mat"), "no proposals")


# ---------------------------------------------------------------- PRM run-length JSON

def test_prm_hand_written_runs(tmp_path):
    h, w = 3, 4
    data = [
        _prm_entry([(1, 2)], h, w),  # 1-based start 1: pixels (0,0), (0,1)
        _prm_entry([(4, 2), (12, 1)], h, w),  # a run wrapping rows (0,3),(1,0); the last pixel (2,3)
        _prm_entry([(6, 3), (7, 3)], h, w),  # overlapping runs: union (1,1)..(2,0)
        _prm_entry([(1, 12)], h, w),  # everything
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    props = read_prm_json(path, h, w)
    assert props.decode().astype(int).tolist() == [
        [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]],
        [[0, 0, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]],
        [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]],
    ]
    assert props.boxes.tolist() == [[0, 0, 2, 1], [0, 0, 4, 3], [0, 1, 4, 3], [0, 0, 4, 3]]
    assert props.scores.tolist() == [1.0, 0.75, 0.5, 0.25]
    assert read_prm_json(path, h, w, max_proposals=2).scores.tolist() == [1.0, 0.75]


@pytest.mark.skipif(not PRM_DIR.is_dir(), reason=f"shared PRM demo data not present at {PRM_DIR}")
@pytest.mark.parametrize("n", range(5))
def test_prm_real_demo_files(n):
    from PIL import Image

    with Image.open(PRM_DIR / f"sample{n}.jpg") as im:
        w, h = im.size
    path = PRM_DIR / f"sample{n}.json"
    data = json.loads(path.read_text())
    props = read_prm_json(path, h, w)
    assert len(props) == 200 and (props.height, props.width) == (h, w)
    assert all(d["shape"] == [h, w] for d in data)
    masks = props.decode()
    assert masks.reshape(200, -1).any(axis=1).all()
    assert np.array_equal(props.scores, (1 - np.arange(200) / 200).astype(np.float32))
    for j in (0, 1, 57, 199):
        assert np.array_equal(masks[j], _slow_prm_decode(data[j])), j
    ref = masks_to_proposals(masks[:10], props.scores[:10])
    assert np.array_equal(props.boxes[:10], ref.boxes) and props.rles[:10] == ref.rles


@pytest.mark.parametrize("entry,parts", [
    ({"data": "not base64!", "shape": [3, 4]}, ["proposal 1", "invalid base64"]),
    ({"data": base64.b64encode(b"\x01\0\0\0\x01\0\0").decode(), "shape": [3, 4]}, ["proposal 1", "7 bytes"]),
    (_prm_entry([(0, 1)], 3, 4), ["proposal 1", "run 0 (start 0, length 1)", "1-based"]),
    (_prm_entry([(1, 1), (11, 3)], 3, 4), ["proposal 1", "run 1 (start 11, length 3)", "3x4 = 12"]),
    (_prm_entry([(1, 1)], 4, 3), ["proposal 1", "shape [4, 3] does not match the image size [3, 4]"]),
    (_prm_entry([], 3, 4), ["proposal 1", "empty mask"]),
    ({"shape": [3, 4]}, ["proposal 1", "'data'"]),
])
def test_prm_errors_name_file_and_proposal(tmp_path, entry, parts):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([_prm_entry([(1, 2)], 3, 4), entry]))
    with pytest.raises(LiidError) as e:
        read_prm_json(path, 3, 4)
    _err(e, str(path), *parts)


@pytest.mark.parametrize("text,part", [("[]", "no proposals"), ("{}", "expected a JSON list"),
                                       ("[{\"data\": ", "corrupt JSON"), ("", "corrupt JSON")])
def test_prm_file_errors(tmp_path, text, part):
    path = tmp_path / "f.json"
    path.write_text(text)
    with pytest.raises(LiidError) as e:
        import_image_proposals(path, "prm-json", 3, 4)
    _err(e, str(path), part)


# ---------------------------------------------------------------- COCO results

def _coco_fixture(tmp_path):
    rng = np.random.default_rng(5)
    sizes = {1: (20, 30), 7: (15, 10)}
    m0 = rng.random((20, 30)) > 0.7
    m1 = rng.random((20, 30)) > 0.4
    m2 = rng.random((15, 10)) > 0.5
    poly = [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0], [20.0, 10.0, 25.0, 10.0, 22.0, 16.0]]
    entries = [
        {"image_id": 1, "category_id": 3, "segmentation": {"size": [20, 30], "counts": _encode(m0)}, "score": 0.2},
        {"image_id": 7, "segmentation": {"size": [15, 10], "counts": _uncompressed_counts(m2)}, "score": 0.9},
        {"image_id": 1, "segmentation": {"size": [20, 30], "counts": _uncompressed_counts(m1)}, "score": 0.8,
         "bbox": [0, 0, 1, 1]},
        {"image_id": 1, "segmentation": poly, "score": 0.5},
        {"image_id": 1, "segmentation": {"size": [20, 30], "counts": _encode(m1)}, "score": 0.5},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(entries))
    m_poly = mask_util.decode(mask_util.merge(mask_util.frPyObjects(poly, 20, 30))).astype(bool)
    return path, sizes, entries, {"m0": m0, "m1": m1, "m2": m2, "poly": m_poly}


def test_coco_results_rle_uncompressed_polygons(tmp_path):
    path, sizes, _, m = _coco_fixture(tmp_path)
    out = read_coco_results(path, sizes)
    assert sorted(out) == [1, 7]
    a = out[1]
    assert a.scores.tolist() == pytest.approx([0.8, 0.5, 0.5, 0.2])  # descending; the 0.5 tie keeps file order
    assert np.array_equal(a.decode(), np.stack([m["m1"], m["poly"], m["m1"], m["m0"]]))
    assert m["poly"][3:9, 2:12].all() and m["poly"].sum() > 60 + 10
    assert a.rles[0]["counts"] == _encode(m["m1"])  # uncompressed -> canonical compressed
    assert np.array_equal(a.boxes, masks_to_proposals(a.decode(), a.scores).boxes)
    assert (out[7].height, out[7].width) == (15, 10)
    assert np.array_equal(out[7].decode()[0], m["m2"])
    top = read_coco_results(path, sizes, max_per_image=2)
    assert len(top[1]) == 2 and len(top[7]) == 1 and top[1].rles == a.rles[:2]


def _bad_entry(case: str) -> dict:
    ok = {"size": [20, 30], "counts": _encode(np.zeros((20, 30), bool))}
    return {
        "size": {"image_id": 1, "segmentation": {"size": [30, 20], "counts": ok["counts"]}, "score": 0.1},
        "image": {"image_id": 3, "segmentation": ok, "score": 0.1},
        "score": {"image_id": 1, "segmentation": ok},
        "nan": {"image_id": 1, "segmentation": ok, "score": "high"},
        "sum": {"image_id": 1, "segmentation": {"size": [20, 30], "counts": [5, 5]}, "score": 0.1},
        "string": {"image_id": 1, "segmentation": {"size": [20, 30], "counts": "0Q<"}, "score": 0.1},
        "garbage": {"image_id": 1, "segmentation": {"size": [20, 30], "counts": "~~"}, "score": 0.1},
        "poly4": {"image_id": 1, "segmentation": [[1, 1, 5, 5]], "score": 0.1},
        "noseg": {"image_id": 1, "score": 0.1},
    }[case]


@pytest.mark.parametrize("case,parts", [
    ("size", ["RLE size [30, 20] does not match the image size [20, 30]"]),
    ("image", ["image_id 3 is not one of the 2 images"]),
    ("score", ["'score'"]),
    ("nan", ["'score'"]),
    ("sum", ["cover 10 pixels", "20x30 = 600"]),
    ("string", ["cover", "600"]),
    ("garbage", ["malformed"]),
    ("poly4", ["polygon 0"]),
    ("noseg", ["no 'segmentation'"]),
])
def test_coco_results_errors_name_file_and_entry(tmp_path, case, parts):
    path = tmp_path / "r.json"
    good = {"image_id": 1, "segmentation": {"size": [20, 30], "counts": _encode(np.ones((20, 30), bool))},
            "score": 0.5}
    path.write_text(json.dumps([good, good, _bad_entry(case)]))
    with pytest.raises(LiidError) as e:
        read_coco_results(path, {1: (20, 30), 7: (15, 10)})
    _err(e, str(path), "entry 2", *parts)


def test_coco_results_empty_and_not_a_list(tmp_path):
    for text, part in [("[]", "no proposals"), ('{"annotations": []}', "expected a JSON list")]:
        path = tmp_path / "r.json"
        path.write_text(text)
        with pytest.raises(LiidError) as e:
            read_coco_results(path, {1: (5, 5)})
        _err(e, str(path), part)


# ---------------------------------------------------------------- dispatch

def test_formats_and_dispatch(tmp_path):
    assert set(PER_IMAGE_FORMATS) == {"mcg-mat", "mcg-boxes", "prm-json"} <= set(FORMATS)
    assert all(isinstance(v, str) and "\n" not in v for v in FORMATS.values())
    with pytest.raises(LiidError) as e:
        import_image_proposals(tmp_path / "x", "selective-search", 5, 5)
    _err(e, "unknown proposal format 'selective-search'", "mcg-mat")
    with pytest.raises(LiidError) as e:
        import_image_proposals(tmp_path / "x.json", "coco-results", 5, 5)
    _err(e, "read_coco_results")
    for fmt in PER_IMAGE_FORMATS:
        with pytest.raises(LiidError) as e:
            import_image_proposals(tmp_path / "missing", fmt, 5, 5)
        _err(e, str(tmp_path / "missing"), "not found")
    with pytest.raises(LiidError) as e:
        import_image_proposals(tmp_path / "missing", "prm-json", 0, 5)
    _err(e, "height")
    with pytest.raises(LiidError) as e:
        import_image_proposals(tmp_path / "missing", "prm-json", 5, 5, max_proposals=0)
    _err(e, "max_proposals")
