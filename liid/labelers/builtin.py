"""The built-in methods of ``liid label``, each one ``Labeler`` registered here: mil-argmax, oracle, cam (they
define instances) and the semantic-only oaa, oaa+, am-saliency, dsrg, vit-sm.

Imported by the registry at its first access (``liid.labelers.registry``), never by hand. The math of each method
is in its own module (``liid.labelers.cam``, ``oracle`` ...); here is how each reads its options, what it records
as its inputs (the skip rule of every stage) and how it writes the export of ``liid export``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from liid.atomic import check_output
from liid.datasets import open_dataset
from liid.datasets.base import Dataset
from liid.detection.export import ImageLabels, export_labeled, export_pseudo_labels, proposal_entries
from liid.errors import LiidError
from liid.labelers.cam import THRESHOLD, cam_instances, cam_semantic
from liid.labelers.mil_argmax import mil_argmax_labels
from liid.labelers.oracle import IOU, oracle_labels
from liid.labelers.registry import Labeler, register_labeler
from liid.labelers.saliency import BUILTIN
from liid.labelers.semantic import (
    SemanticFn,
    am_saliency_semantic_fn,
    dsrg_semantic_fn,
    export_semantic,
    oaa_plus_semantic,
    oaa_semantic,
    vit_sm_semantic_fn,
)
from liid.models.checkpoint import checkpoint_file
from liid.proposals.store import masks_to_proposals
from liid.stage import input_fingerprints, up_to_date

DATA = frozenset({"dataset", "split", "images_dir"})  # the options that open a dataset (--dataset/--split/--images)
# What an option left unset means, for the methods whose default is not the click default (None: "unset").
DEFAULTS = {"cam_threshold": THRESHOLD, "saliency": BUILTIN, "crf": True, "rounds": 3}


def resolved(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each unset option (None) that has a method default (``DEFAULTS``) at that default."""
    return {k: DEFAULTS[k] if v is None and k in DEFAULTS else v for k, v in params.items()}


def store_entries(ds: Dataset, proposals: Path) -> list[dict]:
    """The proposal store's entries of the dataset's images, in the dataset's order, sizes checked."""
    entries = proposal_entries(proposals, [im.id for im in ds.images], f"the dataset {ds.source}",
                               str(ds.source))
    for e, im in zip(entries, ds.images, strict=True):
        if (e["height"], e["width"]) != (im.height, im.width):
            raise LiidError(f"{proposals}/index.json: image {im.id!r} is {e['height']}x{e['width']} in the "
                            f"proposal store but {im.height}x{im.width} in the dataset {ds.source}")
    return entries


# --------------------------------------------------------------------------------------------- mil-argmax


def run_mil_argmax(params: dict[str, Any], out: Path, overwrite: bool) -> dict | None:
    """The MIL network's own argmax per proposal (no graph): the export of ``liid export`` from those labels."""
    from liid.graph.feature_store import read_feature_store

    features, proposals, any_label, nms_iou = (params[k] for k in ("features", "proposals", "any_label", "nms_iou"))
    inputs = {"method": "mil-argmax", "features": str(features), "proposals": str(proposals),
              "restrict_to_image_labels": not any_label, "nms_iou": nms_iou,
              "fingerprints": input_fingerprints(features, proposals)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None
    check_output(out, overwrite)
    store = read_feature_store(features)
    labels = mil_argmax_labels(store, restrict_to_image_labels=not any_label)
    return export_pseudo_labels(labels, store, proposals, out, nms_iou=nms_iou, overwrite=overwrite,
                                labels_name="mil-argmax labels", inputs=inputs)


# ------------------------------------------------------------------------------------------------- oracle


def run_oracle(params: dict[str, Any], out: Path, overwrite: bool) -> dict | None:
    """The ground truth labels the store's proposals (box IoU > 0.5); a note counts the images without any."""
    dataset, split, images_dir, proposals, nms_iou = (
        params[k] for k in ("dataset", "split", "images_dir", "proposals", "nms_iou"))
    ds = open_dataset(dataset, split=split, images=images_dir)
    inputs = {"method": "oracle", "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir), "proposals": str(proposals),
              "iou": IOU, "nms_iou": nms_iou, "dataset_description": ds.describe(),
              "fingerprints": input_fingerprints(proposals)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None
    check_output(out, overwrite)
    if not ds.has_instances:
        raise LiidError(f"{ds.source}: --method oracle needs ground-truth instances; this {ds.kind} dataset "
                        f"has none")
    entries = store_entries(ds, proposals)
    no_gt = 0

    def label(image_id: str, load) -> ImageLabels | None:
        nonlocal no_gt
        inst = ds.instances(image_id)
        if inst is None:
            no_gt += 1
            return None
        props = load()
        gt_boxes = masks_to_proposals(inst.masks, [0.0] * len(inst)).boxes
        labels, scores = oracle_labels(props.boxes, gt_boxes, inst.classes, IOU, gt_iscrowd=inst.iscrowd)
        return ImageLabels(np.arange(len(props)), labels, scores)

    summary = export_labeled(
        entries, ds.classes, proposals, label, out, nms_iou=nms_iou, overwrite=overwrite,
        score_name="gt box IoU", row_name="proposal", description="LIID oracle pseudo instances (liid label)",
        inputs=inputs)
    if no_gt:
        click.echo(f"note: {no_gt} images have no ground-truth instances; exported without instances")
    return summary


# ---------------------------------------------------------------------------------------------------- cam


def run_cam(params: dict[str, Any], out: Path, overwrite: bool) -> dict | None:
    """The CAM baseline's export of the dataset's images (None when OUT is up to date).

    Semantic PNGs: ``cam_semantic`` of each image's CAMs over its labels. Instances: ``cam_instances``, as the
    store's proposals (``kind="proposal"``, the oracle's path) or as their own masks (rect, ellipse). The
    --instances/--proposals rule is checked first, before anything is read (after the required inputs).
    """
    p = resolved(params)
    cams, dataset, split, images_dir, proposals = (p[k] for k in ("cams", "dataset", "split", "images_dir",
                                                                  "proposals"))
    threshold, nms_iou, device = p["cam_threshold"], p["nms_iou"], p["device"]
    kind = p["kind"] or "rect"
    if kind == "proposal" and proposals is None:
        raise LiidError("--instances proposal needs --proposals STORE (the proposals to pick from)")
    if kind != "proposal" and proposals is not None:
        raise LiidError(f"--proposals is used by --instances proposal only, not --instances {kind}")
    ds = open_dataset(dataset, split=split, images=images_dir)
    file = checkpoint_file(cams)
    inputs = {"method": "cam", "cams": str(cams), "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir),
              "proposals": None if proposals is None else str(proposals), "cam_threshold": threshold,
              "instances": kind, "nms_iou": nms_iou, "dataset_description": ds.describe(),
              "fingerprints": input_fingerprints(file, *([] if proposals is None else [proposals]))}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None
    check_output(out, overwrite)
    if not ds.has_labels:
        raise LiidError(f"{ds.source}: --method cam needs image labels; this {ds.kind} dataset has none")
    if not file.is_file():
        raise LiidError(f"{file}: CAM classifier checkpoint not found (train one with `liid train-cls`)")
    if proposals is not None:
        entries = store_entries(ds, proposals)
    else:
        from liid.proposals.generate import store_entry  # the entry a proposal store would hold for the image

        entries = [store_entry(ds, im) for im in ds.images]
    from liid.models import pick_device
    from liid.training.attention import load_classifier
    from liid.training.cams import compute_cams

    model, size = load_classifier(file, ds, pick_device(device))

    def label(image_id: str, load) -> ImageLabels:
        cam = compute_cams(model, ds, [image_id], size)[image_id].astype(np.float32)
        present = ds.labels(image_id)
        semantic = cam_semantic(cam, present, threshold)
        found = cam_instances(cam, present, threshold, kind, load() if kind == "proposal" else None)
        labels = np.array([i.label for i in found], dtype=np.int64)
        scores = np.array([i.score for i in found], dtype=np.float32)
        if kind == "proposal":
            return ImageLabels(np.array([i.proposal for i in found], dtype=np.int64), labels, scores,
                               semantic=semantic)
        masks = np.stack([i.mask for i in found]) if found else np.zeros((0, *semantic.shape), dtype=bool)
        return ImageLabels(np.arange(len(found)), labels, scores, proposals=masks_to_proposals(masks, scores),
                           semantic=semantic)

    return export_labeled(
        entries, ds.classes, proposals, label, out, nms_iou=nms_iou, overwrite=overwrite,
        score_name="CAM peak", row_name="CAM instance",
        description=f"CAM + {kind} pseudo instances (liid label)", inputs=inputs)


# ----------------------------------------------------------------------------------- semantic-only methods


def semantic_run(method: str, description: str, settings: tuple[str, ...],
                 files: Callable[[dict[str, Any]], list[Path]],
                 build: Callable[[dict[str, Any], Dataset], SemanticFn]) -> Callable[[dict, Path, bool], dict | None]:
    """The ``run`` of a semantic-only method: its recorded inputs (dataset, its model or maps, ``settings``, the
    fingerprints of ``files(params)``), the skip rule, then ``export_semantic`` of ``build(params, dataset)``."""

    def run(params: dict[str, Any], out: Path, overwrite: bool) -> dict | None:
        p = resolved(params)
        dataset, split, images_dir = p["dataset"], p["split"], p["images_dir"]
        ds = open_dataset(dataset, split=split, images=images_dir)
        source = p["model"] if "model" in p else p["cams"]
        inputs = {"method": method, "dataset": str(dataset), "split": split,
                  "images": None if images_dir is None else str(images_dir), "model": str(source),
                  **{k: p[k] for k in settings}, "dataset_description": ds.describe(),
                  "fingerprints": input_fingerprints(*files(p))}
        if up_to_date(out, "export.json", "inputs", inputs, overwrite):
            return None
        check_output(out, overwrite)
        if not ds.has_labels:
            raise LiidError(f"{ds.source}: --method {method} needs image labels; this {ds.kind} dataset has none")
        return export_semantic(description, ds, build(p, ds), out, inputs, overwrite)

    run.__doc__ = f"{description}: semantic PNGs of the dataset's images (None when OUT is up to date)."
    return run


def _oaa_files(p: dict[str, Any]) -> list[Path]:
    """OAA's recorded input: the cumulative maps of a ``train-cls --oaa`` folder (its oaa.npz) or the file."""
    return [p["cams"] / "oaa.npz" if p["cams"].is_dir() else p["cams"]]


def _am_saliency_files(p: dict[str, Any]) -> list[Path]:
    """am-saliency's recorded inputs: the classifier, and a saliency folder when one is given."""
    return [checkpoint_file(p["cams"]), *([] if p["saliency"] == BUILTIN else [Path(p["saliency"])])]


def _dsrg_files(p: dict[str, Any]) -> list[Path]:
    """DSRG's recorded input: the retrained network once there is one, else the first one."""
    from liid.training.dsrg import dsrg_checkpoint

    return [dsrg_checkpoint(p["model"])]


def _am_saliency_checks(params: dict[str, Any]) -> None:
    """--rounds is for the built-in detector: a folder of saliency maps is read as it is."""
    if params["rounds"] is not None and (params["saliency"] or BUILTIN) != BUILTIN:
        raise LiidError("--rounds: successive erasing runs the built-in detector (--saliency opencv) only; a "
                        "folder of saliency maps is read as it is")


def _register_builtins() -> None:
    """Register the 8 built-in methods, in the order of the ``--method`` help."""
    data_in = frozenset({"dataset"})
    register_labeler(Labeler(
        name="mil-argmax", summary="the MIL network's own argmax per proposal, no graph (LIID's ablation)",
        options={"features", "proposals", "any_label", "nms_iou"},
        required={"features": "--features STORE (from `liid extract`)", "proposals": "--proposals STORE"},
        inputs={"features", "proposals"}, run=run_mil_argmax))
    register_labeler(Labeler(
        name="oracle", summary="the ground truth labels the proposals (box IoU > 0.5 with a GT instance box; "
                               "LIID's upper bound, Table 7)",
        options=DATA | {"proposals", "nms_iou"},
        required={"dataset": "--dataset DATASET (the ground truth that labels the proposals)",
                  "proposals": "--proposals STORE"},
        inputs={"dataset", "proposals"}, run=run_oracle))
    register_labeler(Labeler(
        name="cam", summary="a `liid train-cls` classifier's CAMs: semantic maps by argmax over the image's labels, "
                            "instances from CAM regions (rect, ellipse or best-IoU proposal; LIID Table 9)",
        options=DATA | {"proposals", "cams", "cam_threshold", "kind", "nms_iou", "device"},
        required={"cams": "--cams CLS (a `liid train-cls` folder)",
                  "dataset": "--dataset DATASET (its images and labels)"},
        inputs={"cams", "dataset", "proposals"}, run=run_cam))
    semantic = (
        ("oaa", "the cumulative maps of `train-cls --oaa`", "OAA cumulative attention maps (paper 003)",
         {"cams", "cam_threshold"}, {"cams": "--cams CLS (a `liid train-cls --oaa max` folder)"},
         ("cam_threshold",), _oaa_files, lambda p, ds: oaa_semantic(p["cams"], ds, p["cam_threshold"]), None),
        ("oaa+", "the integral attention model of `train-cls --oaa-targets`",
         "OAA+ integral attention model (paper 003)",
         {"cams", "cam_threshold", "device"}, {"cams": "--cams INT (a `liid train-cls --oaa-targets CLS` folder)"},
         ("cam_threshold",), lambda p: [checkpoint_file(p["cams"])],
         lambda p, ds: oaa_plus_semantic(p["cams"], ds, p["cam_threshold"], p["device"]), None),
        ("am-saliency", "attention maps + successive-erasing saliency + CRF",
         "attention maps + successive-erasing saliency (paper 000)",
         {"cams", "saliency", "cam_threshold", "crf", "rounds", "device"},
         {"cams": "--cams CLS (a `liid train-cls` folder)"}, ("cam_threshold", "saliency", "crf", "rounds"),
         _am_saliency_files,
         lambda p, ds: am_saliency_semantic_fn(p["cams"], ds, p["saliency"], p["cam_threshold"], p["crf"],
                                               p["rounds"], p["device"]), _am_saliency_checks),
        ("dsrg", "a `train-dsrg` network", "DSRG segmentation network (paper 004)",
         {"model", "crf", "device"}, {"model": "--model DIR (a `liid train-dsrg` folder)"}, ("crf",), _dsrg_files,
         lambda p, ds: dsrg_semantic_fn(p["model"], ds, p["crf"], p["device"]), None),
        ("vit-sm", "the Final-CAMs of a `train-vit` model", "ViT semantic modulation Final-CAM (paper 002)",
         {"model", "cam_threshold", "device"}, {"model": "--model DIR (a `liid train-vit` folder)"},
         ("cam_threshold",), lambda p: [checkpoint_file(p["model"])],
         lambda p, ds: vit_sm_semantic_fn(p["model"], ds, p["cam_threshold"], p["device"]), None),
    )
    for name, summary, description, options, required, settings, files, build, checks in semantic:
        product = "model" if "model" in options else "cams"
        register_labeler(Labeler(
            name=name, summary=summary, options=DATA | options,
            required={**required, "dataset": "--dataset DATASET"}, instances=False,
            inputs=data_in | {product}, run=semantic_run(name, description, settings, files, build),
            extra_checks=checks))


_register_builtins()
