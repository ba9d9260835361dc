"""``liid export CUT --proposals P --out X``: the cut's labels → COCO instances JSON + VOC-palette PNGs.

A thin command over ``detection.export.export_pseudo_labels``: it finds the feature store the cut was
computed from (``CUT/summary.json`` → ``"graph"`` → ``GRAPH/graph.json`` → ``"source"`` →
``"feature_store"``, or ``--features``), reads and validates the inputs, and writes OUT atomically.
"""

from __future__ import annotations

from pathlib import Path

import click

from liid.atomic import check_output, load_npy, read_json
from liid.detection.export import export_pseudo_labels
from liid.errors import LiidError
from liid.graph.feature_store import read_feature_store
from liid.stage import input_fingerprints, up_to_date


def _recorded_path(value, json_file: Path, key: str) -> Path:
    """A path recorded in a JSON file: absolute as is; relative first against the current directory
    (what the user typed when the earlier stage ran), else against the JSON file's directory."""
    if not isinstance(value, str) or not value:
        raise LiidError(f"{json_file}: missing path {key!r}")
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    beside = json_file.parent / p
    if beside.exists():
        return beside
    raise LiidError(f"{json_file}: {key} {value!r} not found (neither from the current directory nor "
                    f"beside {json_file.name}); pass --features")


def find_feature_store(cut: Path) -> Path:
    """The feature store a cut directory was computed from, via its graph directory."""
    summary_file = cut / "summary.json"
    summary = read_json(summary_file)
    graph = _recorded_path(summary.get("graph"), summary_file, "graph")
    graph_file = graph / "graph.json"
    source = read_json(graph_file).get("source")
    if not isinstance(source, dict):
        raise LiidError(f"{graph_file}: missing object 'source'; pass --features")
    return _recorded_path(source.get("feature_store"), graph_file, "source.feature_store")


@click.command("export")
@click.argument("cut", type=click.Path(path_type=Path))
@click.option("--proposals", "proposals", required=True, type=click.Path(path_type=Path),
              help="Proposal store directory (index.json + images/).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="Feature store; default: the one recorded by the cut's graph.")
@click.option("--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.4, show_default=True,
              help="Per-class NMS IoU threshold on proposal boxes.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--palette-pngs/--no-palette-pngs", default=True, show_default=True,
              help="Also write semantic/<image id>.png (VOC palette, pixel = class index).")
def command(cut: Path, proposals: Path, out: Path, features: Path | None, nms_iou: float, overwrite: bool,
            palette_pngs: bool) -> None:
    """Drop background, per-class NMS, write COCO instances JSON and semantic PNGs to OUT.

    Skipped when OUT already holds the export of the same cut, features, proposals and settings.
    """
    if not cut.is_dir():
        raise LiidError(f"{cut}: cut directory not found")
    features = features if features is not None else find_feature_store(cut)
    inputs = {"cut": str(cut), "features": str(features), "proposals": str(proposals),
              "fingerprints": input_fingerprints(cut / "labels.npy", features, proposals),
              "nms_iou": nms_iou, "palette_pngs": palette_pngs}
    if up_to_date(out, "export.json", "inputs", inputs, overwrite):
        return
    check_output(out, overwrite)
    labels = load_npy(cut / "labels.npy")
    store = read_feature_store(features)
    summary = export_pseudo_labels(
        labels, store, proposals, out, nms_iou=nms_iou, palette_pngs=palette_pngs, overwrite=overwrite,
        labels_name=str(cut / "labels.npy"), inputs=inputs)
    click.echo(f"{out}: {summary['instances']} instances in {summary['images']} images "
               f"({summary['dropped_background']} background, {summary['suppressed_nms']} suppressed by NMS)")
