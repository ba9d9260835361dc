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
from liid.labelers.oracle import IOU
from proposals.store import masks_to_proposals


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
    entries = proposal_entries(proposals, [im.id for im in ds.images], f"the dataset {ds.source}",
                               str(ds.source))
    for e, im in zip(entries, ds.images, strict=True):
        if (e["height"], e["width"]) != (im.height, im.width):
            raise LiidError(f"{proposals}/index.json: image {im.id!r} is {e['height']}x{e['width']} in the "
                            f"proposal store but {im.height}x{im.width} in the dataset {ds.source}")
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


@click.command("label")
@click.option("--method", required=True, type=click.Choice(METHODS),
              help="mil-argmax: the MIL network's own argmax per proposal, no graph (LIID's ablation). "
                   "oracle: the ground truth labels the proposals (box IoU > 0.5 with a GT instance box; "
                   "LIID's upper bound, Table 7).")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="mil-argmax: the feature store written by `liid extract`.")
@click.option("--dataset", default=None,
              help="oracle: the dataset whose ground-truth instances label the proposals (VOC root, COCO "
                   "JSON or registered name); its images are the exported images.")
@click.option("--split", default=None, help="oracle, VOC roots: the image set (e.g. train) or a list file.")
@click.option("--images", "images_dir", type=click.Path(path_type=Path), default=None,
              help="oracle, COCO JSONs: the image folder (default: found from the JSON's location).")
@click.option("--proposals", required=True, type=click.Path(path_type=Path), help="Proposal store.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--any-label", is_flag=True,
              help="mil-argmax: argmax over all classes, not only the image's labels and background.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Per-class NMS IoU threshold on proposal boxes (as in `liid export`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(method: str, features: Path | None, dataset: str | None, split: str | None, images_dir: Path | None,
            proposals: Path, out: Path, any_label: bool, nms_iou: float, overwrite: bool) -> None:
    """Label proposals with METHOD and write COCO instances JSON + semantic PNGs to OUT.

    \b
    Skipped when OUT already holds the labels of the same method, inputs and settings.

    \b
    oracle: a proposal whose box has IoU > 0.5 with a non-crowd ground-truth instance box takes the
    class of the box it overlaps most, with that IoU as its score; the others are background. Then the
    export of `liid export` (per-class NMS, COCO JSON, PNGs), so `liid evaluate` scores it alike.
    """
    if method == "mil-argmax":
        if dataset is not None or split is not None or images_dir is not None:
            raise LiidError("--dataset, --split and --images are for --method oracle only")
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
    else:  # pragma: no cover - click.Choice guards this
        raise LiidError(f"unknown method {method!r}")
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")
