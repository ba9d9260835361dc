"""``liid evaluate DATASET PRED``: pseudo-labels or predictions against the dataset's ground truth.

A thin command over ``detection.evaluate``: PRED is a COCO JSON (instances: mask AP, AP50, AP75, ABO), a
folder of ``<image id>.png`` (semantic: mIoU, pixel accuracy), or a ``liid export`` folder (``instances.json``
and/or ``semantic/``: both). Prints a table per part, then as the last stdout line one JSON object with the
headline numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from liid.atomic import check_output, write_json
from liid.commands.options import images_option
from liid.datasets import open_dataset
from liid.detection.evaluate import evaluate_instances, evaluate_semantic, format_table
from liid.errors import LiidError
from liid.stage import input_fingerprints

HEADLINE = {"instances": ("ap", "ap50", "ap75", "abo"), "semantic": ("miou", "pixel_accuracy")}


def resolve_prediction(pred: Path) -> tuple[Path | None, Path | None]:
    """(instances JSON or None, semantic PNG folder or None) for what PRED names."""
    if pred.is_file():
        return pred, None
    if not pred.is_dir():
        raise LiidError(f"{pred}: not found; expected a COCO JSON, a folder of PNGs or a liid export folder")
    inst, sem = pred / "instances.json", pred / "semantic"
    if inst.is_file() or sem.is_dir():
        return (inst if inst.is_file() else None), (sem if sem.is_dir() else None)
    if any(p.suffix.lower() == ".png" for p in pred.iterdir()):
        return None, pred
    raise LiidError(f"{pred}: no instances.json, no semantic/ folder and no PNG files")


def _recorded(json_file: Path, inputs: dict) -> dict | None:
    """The results already in ``json_file`` when they were computed from the same ``inputs`` (the stage
    rule: the evaluation is then skipped and its table printed again), else None."""
    if not json_file.is_file():
        return None
    try:
        old = json.loads(json_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(old, dict) and old.get("inputs") == json.loads(json.dumps(inputs)):
        click.echo(f"{json_file}: up to date (same prediction and ground truth), not recomputed; --overwrite to redo")
        return old
    return None


@click.command("evaluate")
@click.argument("dataset")
@click.argument("pred", type=click.Path(path_type=Path))
@click.option("--split", default=None, help="VOC roots: the image set (e.g. val) or a file listing image ids.")
@images_option
@click.option("--json", "json_file", type=click.Path(path_type=Path), default=None,
              help="Also write the full results (per class, confusion matrix) to this JSON file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
def command(dataset: str, pred: Path, split: str | None, images_dir: Path | None, json_file: Path | None,
            overwrite: bool) -> None:
    """Evaluate PRED against the ground truth of DATASET (a VOC root, a COCO instances JSON or a registered
    name).

    \b
    PRED is one of:
      a COCO JSON     instances (what `liid export` writes) or a COCO results list:
                      mask AP 0.5:0.95, AP50, AP75, AP small/medium/large (pycocotools), per-class
                      AP50, VOC's mAP^r at IoU 0.25/0.5/0.7/0.75 (as PRM, IRNet, BESTIE report), and
                      ABO (mean over GT instances of the best IoU with a prediction of its class)
      a PNG folder    <image id>.png, pixel = class index, 255 = no prediction:
                      per-class IoU, mIoU, pixel accuracy (255 in the ground truth is ignored)
      an export dir   instances.json and/or semantic/: both of the above

    The images of an instances JSON are matched to the dataset by file name, else id, else COCO id; its
    categories by name. Crowd instances are ignored. The last line printed is one JSON object with the
    headline numbers (ap, ap50, ap75, abo; miou, pixel_accuracy). With --json, an evaluation already
    written there from the same prediction and ground truth is printed again, not recomputed.
    """
    inst_json, sem_dir = resolve_prediction(pred)
    ds = open_dataset(dataset, split=split, images=images_dir)
    inputs = {"dataset": ds.describe(), "split": split,
              "fingerprints": input_fingerprints(*(p for p in (inst_json, sem_dir) if p is not None))}
    results = _recorded(json_file, inputs) if json_file is not None and not overwrite else None
    if results is None:
        if json_file is not None:
            check_output(json_file, overwrite)
        results = {"dataset": str(dataset), "prediction": str(pred), "inputs": inputs}
        if inst_json is not None:
            results["instances"] = evaluate_instances(ds, inst_json)
        if sem_dir is not None:
            results["semantic"] = evaluate_semantic(ds, sem_dir)
    for kind, source in (("instances", inst_json), ("semantic", sem_dir)):
        if kind in results:
            r = results[kind]
            click.echo(f"{source}: {kind}, {r['images']} images")
            if r["skipped_no_gt"]:
                click.echo(f"note: {r['skipped_no_gt']} images have no ground truth in the dataset; skipped")
            click.echo(format_table(r))
    if json_file is not None and results.get("inputs") is inputs:
        write_json(json_file, results, overwrite=overwrite)
    click.echo(json.dumps({k: results[kind][k] for kind, keys in HEADLINE.items() if kind in results
                           for k in keys}))
