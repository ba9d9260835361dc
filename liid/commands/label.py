"""``liid label --method NAME ...``: pseudo-labels from a labeler other than the full LIID pipeline.

Writes what ``liid export`` writes (OUT/instances.json, OUT/semantic/*.png, OUT/export.json), so
``liid evaluate`` and the segmenter trainers take every method's output alike.
"""

from __future__ import annotations

from pathlib import Path

import click

from detection.export import export_pseudo_labels
from graph.feature_store import read_feature_store
from liid.atomic import check_output
from liid.errors import LiidError
from liid.labelers import METHODS, mil_argmax_labels


@click.command("label")
@click.option("--method", required=True, type=click.Choice(METHODS),
              help="mil-argmax: the MIL network's own argmax per proposal, no graph (LIID's ablation).")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="mil-argmax: the feature store written by `liid extract`.")
@click.option("--proposals", required=True, type=click.Path(path_type=Path), help="Proposal store.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--any-label", is_flag=True,
              help="mil-argmax: argmax over all classes, not only the image's labels and background.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Per-class NMS IoU threshold on proposal boxes (as in `liid export`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(method: str, features: Path | None, proposals: Path, out: Path, any_label: bool, nms_iou: float,
            overwrite: bool) -> None:
    """Label proposals with METHOD and write COCO instances JSON + semantic PNGs to OUT."""
    check_output(out, overwrite)
    if method == "mil-argmax":
        if features is None:
            raise LiidError("--method mil-argmax needs --features STORE (from `liid extract`)")
        store = read_feature_store(features)
        labels = mil_argmax_labels(store, restrict_to_image_labels=not any_label)
        summary = export_pseudo_labels(
            labels, store, proposals, out, nms_iou=nms_iou, overwrite=overwrite, labels_name=f"{method} labels",
            inputs={"method": method, "features": str(features), "proposals": str(proposals),
                    "restrict_to_image_labels": not any_label})
    else:  # pragma: no cover - click.Choice guards this
        raise LiidError(f"unknown method {method!r}")
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")
