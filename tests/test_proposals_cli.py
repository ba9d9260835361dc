"""`liid proposals` and `liid filter-proposals` end to end on tiny image folders written here: the store
they write, resume after an interruption, the up-to-date rule, unreadable images, the importers through the
CLI, and the real PRM demo proposals when ``../shared/data/prm-mcg-demo`` is present."""

from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_util

import liid.proposals.generate as generate
from liid.cli import main
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.proposals.store import read_image_proposals, read_proposal_index, read_proposal_meta

# pycocotools' decode under NumPy 2 warns about __array__(copy=); not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

PRM_DEMO = Path(__file__).resolve().parents[1].parent / "shared/data/prm-mcg-demo"
H, W = 64, 80
IDS = ["img10", "img2", "img3", "img4", "img5"]  # sorted by name: img10 comes first
SUMMARY = re.compile(r": (\d+) images, [\d.]+ proposals/image \((\d+) skipped, (\d+) empty\), [\d.]+ s/image$")


# ----------------------------------------------------------------------------------------------- fixtures


def shapes_image(seed: int) -> np.ndarray:
    """A 64x80 RGB image: a noisy background with a rectangle and an ellipse of random colours."""
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.int64)
    img[:] = rng.integers(60, 200, 3)
    y0, x0 = rng.integers(2, 20, 2)
    img[y0:y0 + rng.integers(15, 35), x0:x0 + rng.integers(15, 35)] = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[:H, :W]
    cy, cx = rng.integers(25, 50), rng.integers(35, 65)
    img[((yy - cy) / 12.0) ** 2 + ((xx - cx) / 15.0) ** 2 <= 1] = rng.integers(0, 256, 3)
    return np.clip(img + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An image folder of 5 JPEGs."""
    d = tmp_path / "images"
    d.mkdir()
    for k, i in enumerate(IDS):
        Image.fromarray(shapes_image(k)).save(d / f"{i}.jpg", quality=95)
    return d


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 3])


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def run_ok(*args) -> object:
    res = invoke(*args)
    assert res.exit_code == 0, (res.output, res.stderr, repr(res.exception))
    return res


def assert_error(res, *words: str) -> None:
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w in err, err


def store_files(path: Path) -> dict[str, bytes]:
    """The per-image files of a store by name, and the index's image list."""
    files = {p.name: p.read_bytes() for p in sorted((path / "images").iterdir())}
    files["index.images"] = json.dumps(read_proposal_index(path)).encode()
    return files


def rle(mask: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def box_masks(boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Bool masks [n, H, W] of filled boxes (y1, x1, y2, x2), half-open."""
    m = np.zeros((len(boxes), H, W), bool)
    for j, (y1, x1, y2, x2) in enumerate(boxes):
        m[j, y1:y2, x1:x2] = True
    return m


def prm_entry(mask: np.ndarray) -> dict:
    """A mask in the PRM run-length JSON format: base64 of little-endian uint32 (1-based C-order start,
    length) pairs."""
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    starts = np.flatnonzero(np.diff(flat) == 1)
    ends = np.flatnonzero(np.diff(flat) == -1)
    raw = b"".join(struct.pack("<II", int(s) + 1, int(e - s)) for s, e in zip(starts, ends, strict=True))
    return {"data": base64.b64encode(raw).decode("ascii"), "shape": list(mask.shape)}


MASK_BOXES = [(5, 5, 30, 40), (30, 40, 60, 75), (0, 0, 20, 20)]


def crash_after(n: int, monkeypatch) -> list[str]:
    """Make the n+1-th image's work raise (a simulated crash); returns the ids of the images done before it."""
    real, calls = generate.process_image, []

    def dies(job, task):
        if len(calls) == n:
            raise LiidError("simulated crash")
        calls.append(task.image_id)
        return real(job, task)

    monkeypatch.setattr(generate, "process_image", dies)
    return calls


# ----------------------------------------------------------------------------------------------- generation


def test_generate_store(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "props"
    res = run_ok("proposals", folder, "--out", out, "--top", 5)
    m = SUMMARY.search(res.stdout.strip().splitlines()[-1])
    assert m and m.groups() == ("5", "0", "0"), res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith(f"{out}: ")
    index = read_proposal_index(out)
    assert [e["id"] for e in index] == [im.id for im in open_dataset(folder).images] == sorted(IDS)
    assert [e["file_name"] for e in index] == [f"{i}.jpg" for i in sorted(IDS)]
    for e in index:
        props = read_image_proposals(out, e)
        assert (e["height"], e["width"]) == (H, W)
        assert 1 <= len(props) <= 5
        assert props.decode().shape == (len(props), H, W)
        assert np.all(np.diff(props.scores) <= 0)
    meta = read_proposal_meta(out)
    assert meta["counts"]["images"] == 5 and meta["method"] == "selective-search"
    assert meta["inputs"]["settings"]["filter"]["top"] == 5
    assert not (tmp_path / "props.partial").exists()


def test_workers_give_the_same_store(folder: Path, tmp_path: Path) -> None:
    run_ok("proposals", folder, "--out", tmp_path / "a", "--top", 8, "--workers", 1)
    run_ok("proposals", folder, "--out", tmp_path / "b", "--top", 8, "--workers", 2)
    assert store_files(tmp_path / "a") == store_files(tmp_path / "b")


def test_resume_after_interruption(folder: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "props"
    real = generate.process_image
    calls = crash_after(2, monkeypatch)
    assert_error(invoke("proposals", folder, "--out", out, "--top", 5), "simulated crash")
    assert not out.exists()
    partial = tmp_path / "props.partial"
    assert sorted(p.stem for p in (partial / "images").glob("*.json")) == sorted(calls)

    redone: list[str] = []
    monkeypatch.setattr(generate, "process_image", lambda job, task: redone.append(task.image_id) or real(job, task))
    res = run_ok("proposals", folder, "--out", out, "--top", 5)
    assert "2 of 5 images already done, reused" in res.stdout
    assert sorted(redone) == sorted(set(IDS) - set(calls))
    assert read_proposal_meta(out)["counts"]["reused"] == 2
    assert not partial.exists()
    monkeypatch.setattr(generate, "process_image", real)
    run_ok("proposals", folder, "--out", tmp_path / "fresh", "--top", 5)
    assert store_files(out) == store_files(tmp_path / "fresh")


def test_unfinished_run_with_other_settings_is_refused(folder: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "props"
    real = generate.process_image

    def dies_on_third(job, task):
        if task.image_id == sorted(IDS)[2]:
            raise LiidError("simulated crash")
        return real(job, task)

    monkeypatch.setattr(generate, "process_image", dies_on_third)
    assert_error(invoke("proposals", folder, "--out", out, "--top", 5))
    monkeypatch.setattr(generate, "process_image", real)
    assert_error(invoke("proposals", folder, "--out", out, "--top", 3), "props.partial", "--overwrite")
    res = run_ok("proposals", folder, "--out", out, "--top", 3, "--overwrite")
    assert "reused" not in res.stdout
    assert read_proposal_meta(out)["counts"]["reused"] == 0
    assert not (tmp_path / "props.partial").exists()


def test_rerun_skips_same_and_refuses_other_settings(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "props"
    run_ok("proposals", folder, "--out", out, "--top", 5, "--limit", 2)
    before = store_files(out)
    assert len(read_proposal_index(out)) == 2
    res = run_ok("proposals", folder, "--out", out, "--top", 5, "--limit", 2, "--workers", 2)
    assert "up to date" in res.stdout
    assert_error(invoke("proposals", folder, "--out", out, "--top", 4, "--limit", 2), "--overwrite")
    assert_error(invoke("proposals", folder, "--out", out, "--top", 5, "--limit", 3), "--overwrite")
    assert store_files(out) == before
    run_ok("proposals", folder, "--out", out, "--top", 4, "--limit", 3, "--overwrite")
    assert len(read_proposal_index(out)) == 3


def test_unreadable_image_is_skipped(folder: Path, tmp_path: Path) -> None:
    truncate(folder / "img3.jpg")
    out = tmp_path / "props"
    res = run_ok("proposals", folder, "--out", out, "--top", 5)
    assert "img3.jpg" in res.stderr and "skipping" in res.stderr
    m = SUMMARY.search(res.stdout.strip().splitlines()[-1])
    assert m and m.groups() == ("4", "1", "0"), res.stdout
    assert [e["id"] for e in read_proposal_index(out)] == [i for i in sorted(IDS) if i != "img3"]
    meta = read_proposal_meta(out)
    assert [s["id"] for s in meta["skipped"]] == ["img3"] and "img3.jpg" in meta["skipped"][0]["reason"]


def test_every_image_unreadable_is_an_error(folder: Path, tmp_path: Path) -> None:
    for f in folder.iterdir():
        truncate(f)
    out = tmp_path / "props"
    assert_error(invoke("proposals", folder, "--out", out), "no image could be read")
    assert not out.exists() and not (tmp_path / "props.partial").exists()


def test_from_must_match_the_method(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "props"
    assert_error(invoke("proposals", folder, "--out", out, "--from", folder), "--from")
    assert_error(invoke("proposals", folder, "--out", out, "--method", "prm-json"), "--from")
    assert_error(invoke("proposals", folder, "--out", out, "--method", "prm-json", "--from", folder, "--seed", 1),
                 "--seed")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- importers


def write_prm(folder: Path, ids=IDS) -> np.ndarray:
    masks = box_masks(MASK_BOXES)
    for i in ids:
        (folder / f"{i}.json").write_text(json.dumps([prm_entry(m) for m in masks]))
    return masks


def test_prm_json_import(folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "prm"
    src.mkdir()
    masks = write_prm(src)
    out = tmp_path / "props"
    run_ok("proposals", folder, "--out", out, "--method", "prm-json", "--from", src, "--min-area", 0,
           "--nms-iou", 1)
    index = read_proposal_index(out)
    assert [e["id"] for e in index] == sorted(IDS)
    for e in index:
        props = read_image_proposals(out, e)
        assert np.array_equal(props.decode(), masks)  # file order kept: scores 1 - j/N
        assert props.rles == [rle(m) for m in masks]
        assert np.allclose(props.scores, [1, 2 / 3, 1 / 3])


def test_mcg_mat_import(folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "mcg"
    src.mkdir()
    sp = np.ones((H, W), np.uint16)  # superpixels 1 (left), 2 (top right), 3 (bottom right)
    sp[:, 40:] = 2
    sp[32:, 40:] = 3
    cells = [[1.0], [2.0, 3.0], [1.0, 3.0]]
    labels = np.empty((3, 1), dtype=object)
    for j, c in enumerate(cells):
        labels[j, 0] = np.asarray(c).reshape(1, -1)
    scores = np.array([[0.5], [0.9], [0.1]])
    for i in IDS:
        scipy.io.savemat(src / f"{i}.mat", {"superpixels": sp, "labels": labels, "scores": scores})
    out = tmp_path / "props"
    run_ok("proposals", folder, "--out", out, "--method", "mcg-mat", "--from", src, "--nms-iou", 1,
           "--max-area", 1, "--top", 2)
    for e in read_proposal_index(out):
        props = read_image_proposals(out, e)
        assert np.allclose(props.scores, [0.9, 0.5])  # best first, cut to --top
        assert np.array_equal(props.decode(), np.stack([sp >= 2, sp == 1]))


def test_missing_per_image_file_is_an_error(folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "prm"
    src.mkdir()
    write_prm(src, [i for i in IDS if i != "img4"])
    out = tmp_path / "props"
    assert_error(invoke("proposals", folder, "--out", out, "--method", "prm-json", "--from", src),
                 str(src / "img4.json"))
    assert not out.exists() and not (tmp_path / "props.partial").exists()


@pytest.mark.parametrize("bad", ["wrong size", "empty file"])
def test_bad_per_image_file_is_an_error(folder: Path, tmp_path: Path, bad: str) -> None:
    src = tmp_path / "prm"
    src.mkdir()
    write_prm(src)
    if bad == "wrong size":
        (src / "img4.json").write_text(json.dumps([prm_entry(np.ones((H, W + 1), bool))]))
    else:
        (src / "img4.json").write_text("")
    out = tmp_path / "props"
    assert_error(invoke("proposals", folder, "--out", out, "--method", "prm-json", "--from", src),
                 str(src / "img4.json"))
    assert not out.exists()


def test_coco_results_import(folder: Path, tmp_path: Path) -> None:
    """A COCO dataset (ids from the JSON) and one results file; an image without results is kept empty."""
    ann = tmp_path / "instances.json"
    images = [{"id": 100 + k, "file_name": f"{i}.jpg", "height": H, "width": W} for k, i in enumerate(IDS)]
    ann.write_text(json.dumps({"images": images, "annotations": [],
                               "categories": [{"id": 1, "name": "thing"}]}))
    masks = box_masks(MASK_BOXES)
    results = [{"image_id": 100 + k, "category_id": 1, "segmentation": rle(masks[j]), "score": float(j)}
               for k in range(len(IDS) - 1) for j in range(3)]
    res_file = tmp_path / "results.json"
    res_file.write_text(json.dumps(results))
    out = tmp_path / "props"
    res = run_ok("proposals", ann, "--images", folder, "--out", out, "--method", "coco-results", "--from", res_file,
                 "--min-area", 0, "--nms-iou", 1)
    m = SUMMARY.search(res.stdout.strip().splitlines()[-1])
    assert m and m.groups() == ("5", "0", "1"), res.stdout
    assert "img5" in res.stderr
    index = read_proposal_index(out)
    assert [e["coco_id"] for e in index] == [100 + IDS.index(e["id"]) for e in index]
    for e in index:
        props = read_image_proposals(out, e)
        if e["id"] == "img5":
            assert len(props) == 0
        else:
            assert np.array_equal(props.decode(), masks[::-1]) and np.allclose(props.scores, [2, 1, 0])


def test_prm_demo_import(tmp_path: Path) -> None:
    if not PRM_DEMO.is_dir():
        pytest.skip(f"{PRM_DEMO} not present (the PRM demo's 5 images with 200 MCG proposals each)")
    out = tmp_path / "prm"
    res = run_ok("proposals", PRM_DEMO, "--out", out, "--method", "prm-json", "--from", PRM_DEMO, "--top", 20)
    index = read_proposal_index(out)
    assert [e["id"] for e in index] == [f"sample{k}" for k in range(5)]
    for e in index:
        props = read_image_proposals(out, e)
        assert len(props) == 20 and np.all(np.diff(props.scores) <= 0)
    assert SUMMARY.search(res.stdout.strip().splitlines()[-1]).groups() == ("5", "0", "0")


# ----------------------------------------------------------------------------------------------- filter-proposals


def test_filter_proposals_top_is_a_prefix(folder: Path, tmp_path: Path) -> None:
    full, top = tmp_path / "full", tmp_path / "top3"
    run_ok("proposals", folder, "--out", full)
    res = run_ok("filter-proposals", full, "--out", top, "--top", 3)
    assert res.stdout.strip().startswith(f"{top}: 5 images")
    a, b = read_proposal_index(full), read_proposal_index(top)
    assert a == b
    for ea, eb in zip(a, b, strict=True):
        pa, pb = read_image_proposals(full, ea), read_image_proposals(top, eb)
        assert len(pa) > 3 and len(pb) == 3
        assert pb.rles == pa.rles[:3]
        assert np.array_equal(pb.boxes, pa.boxes[:3]) and np.array_equal(pb.scores, pa.scores[:3])
    assert read_proposal_meta(top)["source_meta"]["method"] == "selective-search"
    assert "up to date" in run_ok("filter-proposals", full, "--out", top, "--top", 3).stdout
    assert_error(invoke("filter-proposals", full, "--out", top, "--top", 2), "--overwrite")
    assert_error(invoke("filter-proposals", tmp_path / "nope", "--out", tmp_path / "x"), "nope")
