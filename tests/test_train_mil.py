"""train-mil: reading the proposal set (and its one-line errors), MILData's scaled/flipped boxes, eq. 3's CAM
pseudo labels on hand-made maps and their JSON cache, the training run's outputs, exact resume on CPU, and
the CLI's refusals. resnet18 from scratch on 64×64 synthetic images; proposals are the ground-truth masks
plus a few shifted/whole-image/corner masks (no selective search)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, invoke
from PIL import Image

import liid.training.attention as att
import liid.training.train_mil as tm
from liid.datasets import Dataset, ImageInfo, open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.models import MultiLabelClassifier, build_backbone, save_checkpoint
from liid.proposals.store import ImageProposals, masks_to_proposals, read_image_proposals, write_proposal_store
from liid.training.attention import attention_labels, image_attention_labels, load_classifier
from liid.training.data import to_input
from liid.training.mil_data import MILData, ProposalSet, collate, read_proposal_set
from liid.training.train_cls import TrainClsConfig, train_classifier
from liid.training.train_mil import TrainMilConfig, train_mil

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--backbone", "resnet18", "--from-scratch", "--size", "64", "--device", "cpu"]
CONFIG = TrainMilConfig(backbone="resnet18", from_scratch=True, size=64, epochs=2, top=4, device="cpu")
QUIET = {"progress": False, "echo": lambda s: None}


# --- fixtures --------------------------------------------------------------------------------------------
def gt_proposals(ds: Dataset, iid: str) -> ImageProposals:
    """The image's ground-truth instance masks, then the first one shifted, the whole image, a corner block."""
    m = ds.instances(iid).masks
    h, w = m.shape[1:]
    corner = np.zeros((h, w), bool)
    corner[:12, :12] = True
    masks = np.concatenate([m, np.stack([np.roll(m[0], 6, axis=1), np.ones((h, w), bool), corner])])
    return masks_to_proposals(masks, np.linspace(1.0, 0.1, len(masks)))


def write_store(path: Path, ds: Dataset, replace: dict | None = None, overwrite: bool = False) -> Path:
    """A proposal store of ``ds``'s images; ``replace[id]``: other proposals for that image, None = leave it out."""
    replace = replace or {}
    keep = [im for im in ds.images if replace.get(im.id, True) is not None]
    metas = [{"id": im.id, "file_name": im.file.name, "height": im.height, "width": im.width} for im in keep]
    props = [replace[im.id] if replace.get(im.id) is not None else gt_proposals(ds, im.id) for im in keep]
    if any(replace.get(im.id) is not None for im in keep):  # a replaced image may have another size
        for meta, p in zip(metas, props, strict=True):
            meta["height"], meta["width"] = p.height, p.width
    return write_proposal_store(path, metas, props, overwrite=overwrite)


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "syn"
    write_synthetic(out, 10, seed=0, config=SyntheticConfig(size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def ds(syn) -> Dataset:
    return open_dataset(syn)


@pytest.fixture(scope="module")
def props(ds, tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("props") / "p", ds)


@pytest.fixture(scope="module")
def cls(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cls") / "cls"
    train_classifier(ds, out, TrainClsConfig(backbone="resnet18", from_scratch=True, size=64, batch_size=4,
                                             epochs=1, device="cpu"), **QUIET)
    return out


@pytest.fixture(scope="module")
def run_a(ds, props, cls, tmp_path_factory) -> tuple[Path, set[int]]:
    """One uninterrupted 2-epoch run; also returns the classes eq. 8 moved a centre of (argmax of p)."""
    out = tmp_path_factory.mktemp("mil") / "a"
    hit: set[int] = set()
    real = tm.update_centres

    def recording(centres, f, p, theta):
        hit.update(p.argmax(dim=1).tolist())
        return real(centres, f, p, theta)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tm, "update_centres", recording)
        train_mil(ds, props, out, CONFIG, cam_classifier=cls, **QUIET)
    return out, hit


def records(out: Path, kind: str = "step") -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == kind]


def fake_classifier(path: Path, k: int, class_names: list[str] | None = None) -> Path:
    """An untrained resnet18 CAM classifier checkpoint for ``k`` classes."""
    torch.manual_seed(0)
    trunk, ch = build_backbone("resnet18", from_scratch=True)
    names = class_names or ["background"] + [f"c{i}" for i in range(1, k + 1)]
    path.mkdir()
    save_checkpoint(path / "checkpoint.pt", MultiLabelClassifier(trunk, ch, k), None, 1,
                    {"backbone": "resnet18", "num_classes": k, "class_names": names, "config": {}, "size": 64})
    return path


# --- read_proposal_set -----------------------------------------------------------------------------------
def test_read_proposal_set_takes_top(ds, props):
    pset = read_proposal_set(ds, props, top=2, progress=False)
    assert pset.ids == [im.id for im in ds.images] and len(pset) == len(ds) and pset.top == 2
    for i, iid in enumerate(pset.ids):
        full = read_image_proposals(props, pset.entries[i])
        assert len(full) >= 4
        np.testing.assert_array_equal(pset.boxes[i], full.boxes[:2])
        assert pset.boxes[i].dtype == np.float32
        want = ds.label_vector(iid).astype(bool)
        assert pset.labels[i].tolist() == want.tolist() and pset.labels[i, 0]
        assert len(pset.load(i)) == len(full)
    assert pset.num_proposals == 2 * len(ds)
    everything = read_proposal_set(ds, props, progress=False)
    assert [len(b) for b in everything.boxes] == [len(ds.instances(i)) + 3 for i in everything.ids]
    with pytest.raises(LiidError, match="--top 0"):
        read_proposal_set(ds, props, top=0)


BROKEN = ["missing image", "file deleted", "no proposals", "other size", "no foreground label"]


def break_store(case: str, ds: Dataset, store: Path, monkeypatch) -> tuple[str, list[str]]:
    """Write a store broken for ``case`` for image 2; returns the image id and words the message must hold."""
    bad = ds.images[2].id
    file = str(store / "images" / f"{bad}.json")
    if case == "missing image":
        write_store(store, ds, {bad: None})
        return bad, [str(store / "index.json"), "no proposals in this store"]
    if case == "no proposals":
        write_store(store, ds, {bad: masks_to_proposals(np.zeros((0, 64, 64), bool), [])})
        return bad, [file, "has no proposals"]
    if case == "other size":
        m = np.zeros((2, 32, 48), bool)
        m[0, :10, :10] = m[1, 5:, 5:] = True
        write_store(store, ds, {bad: masks_to_proposals(m, [1.0, 0.5])})
        return bad, [file, "32x48", "64x64"]
    write_store(store, ds)
    if case == "file deleted":
        (store / "images" / f"{bad}.json").unlink()
        return bad, [file, "not found"]
    if case == "no foreground label":
        real = type(ds).label_vector

        def label_vector(self, iid):
            v = real(self, iid)
            if iid == bad:
                v[1:] = 0
            return v

        monkeypatch.setattr(type(ds), "label_vector", label_vector)
        return bad, [str(ds.source), "no labels"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", BROKEN)
def test_read_proposal_set_errors(case, ds, tmp_path, monkeypatch):
    store = tmp_path / "p"
    bad, words = break_store(case, ds, store, monkeypatch)
    with pytest.raises(LiidError) as e:
        read_proposal_set(ds, store, top=4, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and bad in msg, msg
    for w in words:
        assert w in msg, msg


def test_read_proposal_set_needs_labels(tmp_path, props):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "imgs" / "a.png")
    with pytest.raises(LiidError, match="no image labels"):
        read_proposal_set(open_dataset(tmp_path / "imgs"), props)


@pytest.mark.parametrize("case", ["no proposals", "missing image", "missing store"])
def test_cli_refuses_bad_proposals(case, syn, ds, cls, tmp_path, monkeypatch):
    store = tmp_path / "p"
    if case == "missing store":
        words = [str(store), "not found"]
    else:
        bad, words = break_store(case, ds, store, monkeypatch)
        words.append(bad)
    out = tmp_path / "mil"
    res = invoke("train-mil", syn, "--proposals", store, "--cams", cls, "--out", out, *FAST)
    assert res.exit_code == 2
    assert_one_line_error(res, *words)
    assert not out.exists()


# --- MILData ---------------------------------------------------------------------------------------------
class OneImage(Dataset):
    """One 40×80 (H×W) image labelled with class 1 of 2."""

    kind = "images"
    has_labels = True

    def __init__(self, root: Path):
        self.source = root
        self.classes = ["background", "a", "b"]
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (40, 80, 3), dtype=np.uint8)).save(root / "im.png")
        self.images = [ImageInfo("im", root / "im.png", 40, 80, 1)]

    def labels(self, image_id: str) -> np.ndarray:
        return np.array([1])


def test_scaled_boxes_and_flip(tmp_path):
    ds = OneImage(tmp_path)
    pset = ProposalSet(tmp_path, ["im"], [{}], [np.array([[8, 4, 24, 20], [0, 0, 80, 40]], np.float32)],
                       np.array([[True, True, False]]), None)
    data = MILData(ds, pset, 64, train=True, seed=3)
    scaled = data.scaled_boxes(0)  # x * 64/80, y * 64/40
    np.testing.assert_allclose(scaled.numpy(), [[6.4, 6.4, 19.2, 32.0], [0, 0, 64, 64]], rtol=1e-6)
    flipped = data.scaled_boxes(0, flip=True)  # x1' = S - x2, x2' = S - x1
    np.testing.assert_allclose(flipped.numpy(), [[44.8, 6.4, 57.6, 32.0], [0, 0, 64, 64]], rtol=1e-6)
    assert pset.boxes[0][0].tolist() == [8, 4, 24, 20]  # the stored boxes are not modified
    # items: a flipped epoch gives the mirrored image and the flipped boxes
    plain = to_input(ds.load_image("im"), 64)
    seen = set()
    for epoch in range(8):
        data.set_epoch(epoch)
        x, b, i = data[0]
        flip = data.flipped(0)
        seen.add(flip)
        assert i == 0 and x.shape == (3, 64, 64)
        torch.testing.assert_close(x, plain.flip(-1) if flip else plain)
        torch.testing.assert_close(b, flipped if flip else scaled)
    assert seen == {True, False}
    xs, bs, idx = collate([data[0], data[0]])
    assert xs.shape == (2, 3, 64, 64) and len(bs) == 2 and idx == [0, 0]
    with pytest.raises(LiidError, match="--size 16"):
        MILData(ds, pset, 16)


def test_flips_are_a_function_of_seed_epoch_index(ds, props):
    pset = read_proposal_set(ds, props, top=1, progress=False)

    def pattern(seed: int, epoch: int, train: bool = True) -> list[bool]:
        data = MILData(ds, pset, 64, train=train, seed=seed)
        data.set_epoch(epoch)
        return [data.flipped(j) for j in range(40)]  # flipped() depends on the index only, not the images

    assert pattern(0, 1) == pattern(0, 1)
    assert pattern(0, 0) != pattern(0, 1) and pattern(0, 0) != pattern(1, 0)
    assert any(pattern(0, 0)) and not all(pattern(0, 0))
    assert not any(pattern(0, 0, train=False))


# --- eq. 3 on hand-made CAMs -----------------------------------------------------------------------------
def test_image_attention_labels_hand_made():
    cams = np.zeros((3, 20, 20), np.float32)  # K = 3
    cams[0, 0:6, 0:6] = 1.0  # A: the peak of class 1
    cams[2, 0:6, 12:18] = 0.3  # B: class 3 weak, R = 0.6 < eta
    cams[1, 12:18, 0:6] = 1.0  # C: class 2 strong, class 3 above eta
    cams[2, 12:18, 0:6] = 0.5
    cams[1, 12:18, 12:18] = 1.0  # D: only class 2
    boxes = np.array([[0, 0, 6, 6], [12, 0, 18, 6], [0, 12, 6, 18], [12, 12, 18, 18]], np.float32)
    labels_13 = np.array([True, True, False, True])  # classes 1 and 3; 2 is absent
    y = image_attention_labels(cams, boxes, labels_13, eta=0.75)
    assert y.tolist() == [1, 0, 3, 0]  # the absent class 2 never wins, not even alone above eta
    labels_123 = np.array([True, True, True, True])
    assert image_attention_labels(cams, boxes, labels_123, eta=0.75).tolist() == [1, 0, 2, 2]
    assert image_attention_labels(cams, boxes, labels_13, eta=0.5).tolist() == [1, 3, 3, 0]  # 0.6 >= 0.5


def test_mask_pooling_differs_from_box_pooling():
    cams = np.zeros((2, 20, 20), np.float32)
    cams[0, 0:2, 0:2] = 1.0  # class 1 only in the top-left corner of the box
    mask = np.zeros((1, 20, 20), bool)
    mask[0, 0:10, 9] = mask[0, 9, 0:10] = True  # an L along the bottom/right edges: its box is [0, 0, 10, 10]
    p = masks_to_proposals(mask, [1.0])
    assert p.boxes.tolist() == [[0, 0, 10, 10]]
    labels = np.array([True, True, False])
    assert image_attention_labels(cams, p.boxes, labels, 0.75, "box").tolist() == [1]  # mean .04 + max 1
    assert image_attention_labels(cams, p.boxes, labels, 0.75, "mask", masks=mask).tolist() == [0]


# --- the CAM classifier and the cache of eq. 3 ---------------------------------------------------------
def test_attention_labels_cache(ds, props, cls, tmp_path, monkeypatch):
    pset = read_proposal_set(ds, props, top=3, progress=False)
    calls = []
    real = att.compute_cams
    monkeypatch.setattr(att, "compute_cams", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "att.json"
    cpu = torch.device("cpu")
    y, summary = attention_labels(cls, ds, pset, 0.75, "box", cpu, cache=cache, progress=False)
    assert len(calls) == len(pset) and [len(v) for v in y] == [3] * len(pset)
    assert summary["proposals"] == 3 * len(pset) and sum(summary["per_class"]) == 3 * len(pset)
    for v, lab in zip(y, pset.labels, strict=True):
        assert all(k == 0 or lab[k] for k in v.tolist())  # only the image's own classes (or background)
    d = json.loads(cache.read_text())
    assert d["key"]["eta"] == 0.75 and set(d["labels"]) == set(pset.ids)
    # same classifier, proposals and settings: reused, no CAM computed
    y2, summary2 = attention_labels(cls, ds, pset, 0.75, "box", cpu, cache=cache, progress=False)
    assert len(calls) == len(pset) and summary2 == summary
    assert all(np.array_equal(a, b) for a, b in zip(y, y2, strict=True))
    # other settings or another top: recomputed
    attention_labels(cls, ds, pset, 1.5, "box", cpu, cache=cache, progress=False)
    assert len(calls) == 2 * len(pset) and json.loads(cache.read_text())["key"]["eta"] == 1.5
    attention_labels(cls, ds, read_proposal_set(ds, props, top=2, progress=False), 1.5, "box", cpu,
                     cache=cache, progress=False)
    assert len(calls) == 3 * len(pset)
    ym, _ = attention_labels(cls, ds, pset, 0.75, "mask", cpu, progress=False)
    assert [len(v) for v in ym] == [3] * len(pset)
    with pytest.raises(LiidError, match="--att-pooling"):
        attention_labels(cls, ds, pset, 0.75, "ellipse", cpu)
    with pytest.raises(LiidError, match="not found"):
        attention_labels(tmp_path / "nope", ds, pset, 0.75, "box", cpu)


def test_load_classifier_refuses_other_classes(ds, cls, tmp_path):
    model, size = load_classifier(cls, ds, torch.device("cpu"))
    assert size == 64 and not model.training and model.num_classes == ds.num_classes
    with pytest.raises(LiidError, match="K=3.*K=6"):
        load_classifier(fake_classifier(tmp_path / "k3", 3), ds, torch.device("cpu"))
    other = fake_classifier(tmp_path / "names", 6, ["background", "a", "b", "c", "d", "e", "f"])
    with pytest.raises(LiidError, match="trained on classes"):
        load_classifier(other, ds, torch.device("cpu"))


# --- the training run ------------------------------------------------------------------------------------
def test_run_writes_outputs(ds, run_a):
    out, hit = run_a
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json", "attention_labels.json"):
        assert (out / name).is_file(), name
    steps = records(out)
    assert len(steps) == 2 * len(ds)
    for r in steps:
        assert {"loss", "att", "mil", "cent", "lr", "epoch", "step"} <= set(r)
        assert all(math.isfinite(r[k]) for k in ("loss", "att", "mil", "cent"))
        assert r["loss"] == pytest.approx(0.5 * r["att"] + 0.5 * r["mil"] + 0.1 * r["cent"], rel=1e-5)
    assert {r["epoch"]: r["lr"] for r in records(out, "epoch")} == {1: 5e-4, 2: pytest.approx(5e-5)}
    with Image.open(out / "loss.png") as im:
        assert im.format == "PNG" and im.size == (800, 400)
        im.verify()
    rec = json.loads((out / "train.json").read_text())
    assert rec["finished"] is True and rec["epochs_done"] == 2 and rec["images"] == len(ds)
    assert rec["proposals_used"] == 4 * len(ds) and rec["settings"]["top"] == 4
    assert rec["attention_labels"]["proposals"] == 4 * len(ds)
    for k in ("loss", "att", "mil", "cent", "image_map", "seconds_per_epoch", "seconds_per_image"):
        assert math.isfinite(rec["final"][k]), k
    assert 0 <= rec["final"]["image_map"] <= 1
    cache = json.loads((out / "attention_labels.json").read_text())
    assert [len(cache["labels"][im.id]) for im in ds.images] == [4] * len(ds)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["epoch"] == 2 and ckpt["meta"]["model"] == "MILNetwork"
    assert ckpt["meta"]["top"] == 4 and ckpt["meta"]["size"] == 64 and ckpt["meta"]["num_classes"] == 6
    centres = ckpt["model"]["centres"]
    assert centres.shape == (7, 512) and torch.isfinite(centres).all()
    moved = {k for k in range(7) if centres[k].abs().sum() > 0}
    assert hit and moved == hit  # exactly the classes some proposal was assigned to (eq. 8)


def test_resume_matches_uninterrupted(ds, props, cls, run_a, tmp_path, monkeypatch):
    out = tmp_path / "b"
    real = tm.write_json

    def crash_after_first_epoch(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt  # after epoch 1's checkpoint, log and plot are written

    monkeypatch.setattr(tm, "write_json", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_mil(ds, props, out, CONFIG, cam_classifier=cls, **QUIET)
    monkeypatch.setattr(tm, "write_json", real)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    assert len(records(out)) == len(ds)
    # without --resume the folder is refused
    res = invoke("train-mil", ds.source, "--proposals", props, "--cams", cls, "--out", out, "--epochs", "2",
                 "--top", "4", *FAST)
    assert_one_line_error(res, str(out), "--resume")

    def no_cams(*a, **k):
        raise AssertionError("CAMs recomputed although attention_labels.json was there")

    monkeypatch.setattr(att, "compute_cams", no_cams)
    lines = []
    rec = train_mil(ds, props, out, CONFIG, cam_classifier=cls, resume=True, progress=False, echo=lines.append)
    assert "resuming after epoch 1/2" in lines[0] and rec["finished"]
    a, _ = run_a
    assert [r["loss"] for r in records(out)] == [r["loss"] for r in records(a)]
    assert [r["att"] for r in records(out)] == [r["att"] for r in records(a)]
    assert json.loads((out / "attention_labels.json").read_text())["labels"] == \
        json.loads((a / "attention_labels.json").read_text())["labels"]
    torch.testing.assert_close(torch.load(out / "checkpoint.pt", weights_only=True)["model"]["centres"],
                               torch.load(a / "checkpoint.pt", weights_only=True)["model"]["centres"],
                               rtol=0, atol=0)
    # other settings are refused on resume
    res = invoke("train-mil", ds.source, "--proposals", props, "--cams", cls, "--out", out, "--epochs", "2",
                 "--top", "4", "--resume", "--eta", "0.5", *FAST)
    assert_one_line_error(res, "eta")


def test_alpha_without_classifier(ds, props, tmp_path):
    with pytest.raises(LiidError, match="--cams"):
        train_mil(ds, props, tmp_path / "x", CONFIG, **QUIET)
    assert not (tmp_path / "x").exists()


def test_cli_alpha_zero_trains_without_classifier(syn, props, tmp_path):
    out = tmp_path / "noatt"
    res = invoke("train-mil", syn, "--proposals", props, "--out", out, "--alpha", "0", "--epochs", "1",
                 "--top", "2", "--no-flip", *FAST)
    assert res.exit_code == 0, res.output
    assert "final loss" in res.stdout
    assert not (out / "attention_labels.json").exists()
    steps = records(out)
    assert steps and all("att" not in r and {"mil", "cent"} <= set(r) for r in steps)
    rec = json.loads((out / "train.json").read_text())
    assert rec["finished"] and rec["attention_labels"] is None and rec["proposals_used"] == 2 * rec["images"]


def test_all_weights_zero(syn, props, tmp_path):
    with pytest.raises(LiidError, match="all loss weights are 0"):
        TrainMilConfig(alpha=0, beta=0, gamma=0)
    out = tmp_path / "z"
    res = invoke("train-mil", syn, "--proposals", props, "--out", out, "--alpha", "0", "--beta", "0",
                 "--gamma", "0", *FAST)
    assert_one_line_error(res, "all loss weights are 0")
    assert not out.exists()


def test_cli_refuses_classifier_of_other_class_count(syn, props, tmp_path):
    k3 = fake_classifier(tmp_path / "k3", 3)
    out = tmp_path / "mil"
    res = invoke("train-mil", syn, "--proposals", props, "--cams", k3, "--out", out, "--top", "2", *FAST)
    assert res.exit_code == 2
    assert_one_line_error(res, str(k3 / "checkpoint.pt"), "K=3", "K=6")
    assert not out.exists()
    res = invoke("train-mil", syn, "--proposals", props, "--cams", tmp_path / "none", "--out", out, *FAST)
    assert_one_line_error(res, str(tmp_path / "none"))
    assert not out.exists()


def test_overwrite_recomputes(ds, props, cls, run_a, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(run_a[0], out)
    cfg = TrainMilConfig(backbone="resnet18", from_scratch=True, size=64, epochs=1, top=2, device="cpu")
    with pytest.raises(LiidError, match="--overwrite"):
        train_mil(ds, props, out, cfg, cam_classifier=cls, **QUIET)
    rec = train_mil(ds, props, out, cfg, cam_classifier=cls, overwrite=True, **QUIET)
    assert rec["proposals_used"] == 2 * len(ds) and len(records(out)) == len(ds)
    labels = json.loads((out / "attention_labels.json").read_text())["labels"]
    assert all(len(v) == 2 for v in labels.values())


def test_eta_default_follows_the_rule():
    assert TrainMilConfig().eta == 0.75 and TrainMilConfig(att_pooling="mask").eta == 0.75  # the paper (Table 5)
    assert TrainMilConfig(att_pooling="soft-iou").eta == 0.3
    assert TrainMilConfig(att_pooling="soft-iou", eta=0.5).eta == 0.5


def test_soft_iou_labels_tell_object_from_surroundings():
    """One square CAM: the object's mask is labelled its class, the whole image and a background corner are not
    (eq. 3's box rule labels the whole image foreground: mean + max = 0.16 + 1 >= 0.75)."""
    cams = np.zeros((2, 20, 20), np.float32)
    cams[0, 2:10, 2:10] = 1.0
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:10, 2:10] = True
    masks[1] = True
    masks[2, 15:20, 15:20] = True
    boxes = np.array([[2, 2, 10, 10], [0, 0, 20, 20], [15, 15, 20, 20]], np.float32)
    labels = np.array([True, True, False])
    soft = image_attention_labels(cams, boxes, labels, 0.3, "soft-iou", masks)
    box = image_attention_labels(cams, boxes, labels, 0.75, "box")
    assert soft.tolist() == [1, 0, 0] and box.tolist() == [1, 1, 0]
