"""``liid label --method NAME ...``: pseudo-labels from a labeler other than the full LIID pipeline.

Writes what ``liid export`` writes (OUT/instances.json, OUT/semantic/*.png, OUT/export.json), so
``liid evaluate`` and the segmenter trainers take every method's output alike.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from detection.export import ImageLabels, export_labeled, export_pseudo_labels, proposal_entries
from graph.feature_store import read_feature_store
from liid.atomic import check_output
from liid.commands.stage import input_fingerprints, up_to_date
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.labelers import METHODS, mil_argmax_labels, oracle_labels
from liid.labelers.cam import KINDS, THRESHOLD, cam_instances, cam_semantic
from liid.labelers.oracle import IOU
from proposals.store import masks_to_proposals


def _store_entries(ds, proposals: Path) -> list[dict]:
    """The proposal store's entries of the dataset's images, in the dataset's order, sizes checked."""
    entries = proposal_entries(proposals, [im.id for im in ds.images], f"the dataset {ds.source}",
                               str(ds.source))
    for e, im in zip(entries, ds.images, strict=True):
        if (e["height"], e["width"]) != (im.height, im.width):
            raise LiidError(f"{proposals}/index.json: image {im.id!r} is {e['height']}x{e['width']} in the "
                            f"proposal store but {im.height}x{im.width} in the dataset {ds.source}")
    return entries


def _export_oracle(dataset: str, split: str | None, images_dir: Path | None, proposals: Path, out: Path,
                   nms_iou: float, overwrite: bool) -> tuple[dict | None, int]:
    """The oracle's export of the dataset's images (None when OUT is up to date); also how many images
    had no ground truth."""
    ds = open_dataset(dataset, split=split, images=images_dir)
    inputs = {"method": "oracle", "dataset": str(dataset), "split": split,
              "images": None if images_dir is None else str(images_dir), "proposals": str(proposals),
              "iou": IOU, "nms_iou": nms_iou, "dataset_description": ds.describe(),
              "fingerprints": input_fingerprints(proposals)}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return None, 0
    check_output(out, overwrite)
    if not ds.has_instances:
        raise LiidError(f"{ds.source}: --method oracle needs ground-truth instances; this {ds.kind} dataset "
                        f"has none")
    entries = _store_entries(ds, proposals)
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
    return summary, no_gt


def _export_cam(cams: Path, dataset: str, split: str | None, images_dir: Path | None, proposals: Path | None,
                out: Path, threshold: float, kind: str, nms_iou: float, device: str | None,
                overwrite: bool) -> dict | None:
    """The CAM baseline's export of the dataset's images (None when OUT is up to date).

    Semantic PNGs: ``cam_semantic`` of each image's CAMs over its labels. Instances: ``cam_instances``, as the
    store's proposals (``kind="proposal"``, the oracle's path) or as their own masks (rect, ellipse).
    """
    ds = open_dataset(dataset, split=split, images=images_dir)
    file = cams / "checkpoint.pt" if cams.is_dir() else cams
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
        entries = _store_entries(ds, proposals)
    else:
        from proposals.generate import store_entry  # the entry a proposal store would hold for the image

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


@click.command("label")
@click.option("--method", required=True, type=click.Choice(METHODS),
              help="mil-argmax: the MIL network's own argmax per proposal, no graph (LIID's ablation). "
                   "oracle: the ground truth labels the proposals (box IoU > 0.5 with a GT instance box; "
                   "LIID's upper bound, Table 7). cam: a `liid train-cls` classifier's CAMs: semantic maps "
                   "by argmax over the image's labels, instances from CAM regions (rect, ellipse or best-IoU "
                   "proposal; LIID Table 9).")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="mil-argmax: the feature store written by `liid extract`.")
@click.option("--dataset", default=None,
              help="oracle, cam: the dataset (VOC root, COCO JSON or registered name) whose ground-truth "
                   "instances (oracle) or image labels (cam) are used; its images are the exported images.")
@click.option("--split", default=None, help="oracle, cam, VOC roots: the image set (e.g. train) or a list file.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="oracle, cam, COCO JSONs: the image folder (default: found from the JSON's location).")
@click.option("--proposals", type=click.Path(path_type=Path), default=None,
              help="Proposal store (mil-argmax, oracle, and cam with --instances proposal).")
@click.option("--cams", "cams", type=click.Path(path_type=Path), default=None,
              help="cam: the CAM classifier, a `liid train-cls` folder or its checkpoint.pt (CAMs at its "
                   "training size).")
@click.option("--cam-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help=f"cam: background below this CAM value, and the level of the CAM regions that become "
                   f"instances [default: {THRESHOLD}].")
@click.option("--instances", "kind", type=click.Choice(KINDS), default=None,
              help="cam: each CAM region's mask: its box (rect), the ellipse inscribed in it, or the proposal "
                   "whose box overlaps it most (proposal; needs --proposals) [default: rect].")
@click.option("--device", default=None, help="cam: auto (default), cpu, cuda or cuda:N.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--any-label", is_flag=True,
              help="mil-argmax: argmax over all classes, not only the image's labels and background.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Per-class NMS IoU threshold on the instances' boxes (as in `liid export`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(method: str, features: Path | None, dataset: str | None, split: str | None, images_dir: Path | None,
            proposals: Path | None, cams: Path | None, cam_threshold: float | None, kind: str | None,
            device: str | None, out: Path, any_label: bool, nms_iou: float, overwrite: bool) -> None:
    """Label the dataset's proposals (or, for cam, its images) with METHOD; write COCO instances JSON and
    semantic PNGs to OUT.

    \b
    Skipped when OUT already holds the labels of the same method, inputs and settings.

    \b
    oracle: a proposal whose box has IoU > 0.5 with a non-crowd ground-truth instance box takes the
    class of the box it overlaps most, with that IoU as its score; the others are background. Then the
    export of `liid export` (per-class NMS, COCO JSON, PNGs), so `liid evaluate` scores it alike.

    \b
    cam: the classifier's CAMs at each image's size; semantic PNG = per pixel the image's label with the
    highest CAM, background below --cam-threshold; each connected region of a label's CAM above the
    threshold is an instance scored by its peak, then the same export (per-class NMS, COCO JSON).
    """
    if method != "cam" and (cams is not None or cam_threshold is not None or kind is not None
                            or device is not None):
        raise LiidError("--cams, --cam-threshold, --instances and --device are for --method cam only")
    if method != "cam" and proposals is None:
        raise LiidError(f"--method {method} needs --proposals STORE")
    if method == "mil-argmax":
        if dataset is not None or split is not None or images_dir is not None:
            raise LiidError("--dataset, --split and --images are for --method cam or --method oracle only")
        if features is None:
            raise LiidError("--method mil-argmax needs --features STORE (from `liid extract`)")
        inputs = {"method": method, "features": str(features), "proposals": str(proposals),
                  "restrict_to_image_labels": not any_label, "nms_iou": nms_iou,
                  "fingerprints": input_fingerprints(features, proposals)}
        if up_to_date(out, "export.json", "inputs", inputs, overwrite):
            return
        check_output(out, overwrite)
        store = read_feature_store(features)
        labels = mil_argmax_labels(store, restrict_to_image_labels=not any_label)
        summary = export_pseudo_labels(
            labels, store, proposals, out, nms_iou=nms_iou, overwrite=overwrite, labels_name=f"{method} labels",
            inputs=inputs)
    elif method == "oracle":
        if dataset is None:
            raise LiidError("--method oracle needs --dataset DATASET (the ground truth that labels the proposals)")
        if features is not None or any_label:
            raise LiidError("--features and --any-label are for --method mil-argmax only")
        summary, no_gt = _export_oracle(dataset, split, images_dir, proposals, out, nms_iou, overwrite)
        if summary is None:
            return
        if no_gt:
            click.echo(f"note: {no_gt} images have no ground-truth instances; exported without instances")
    elif method == "cam":
        kind = kind or "rect"
        if cams is None:
            raise LiidError("--method cam needs --cams CLS (a `liid train-cls` folder)")
        if dataset is None:
            raise LiidError("--method cam needs --dataset DATASET (its images and image labels)")
        if features is not None or any_label:
            raise LiidError("--features and --any-label are for --method mil-argmax only")
        if kind == "proposal" and proposals is None:
            raise LiidError("--instances proposal needs --proposals STORE (the proposals to pick from)")
        if kind != "proposal" and proposals is not None:
            raise LiidError(f"--proposals is used by --instances proposal only, not --instances {kind}")
        threshold = THRESHOLD if cam_threshold is None else cam_threshold
        summary = _export_cam(cams, dataset, split, images_dir, proposals, out, threshold, kind, nms_iou, device,
                              overwrite)
        if summary is None:
            return
    else:  # pragma: no cover - click.Choice guards this
        raise LiidError(f"unknown method {method!r}")
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")
