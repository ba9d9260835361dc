"""``liid eval-proposals DATASET STORE``: how well a proposal store covers the dataset's ground-truth instances.

A thin command over ``proposals.evaluate``: for every image of the store, the best mask IoU of its top-N
proposals (by score) with each non-crowd ground-truth instance; ABO, MABO and recall at IoU 0.5 / 0.7 for
N = 20 and 40 (what LIID keeps on VOC and COCO), any further ``--top`` values, and all proposals. Prints a
per-class table, then as the last stdout line one JSON object with the overall numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from liid.atomic import check_output, write_json
from liid.commands.options import images_option
from liid.datasets import open_dataset
from liid.errors import LiidError
from liid.progress import progress as progress_bar
from liid.proposals.evaluate import ProposalScores, format_table
from liid.proposals.store import read_image_proposals, read_proposal_index

DEFAULT_TOPS = (20, 40)


def evaluate_store(dataset: str, store: Path, split: str | None = None, images: Path | None = None,
                   tops: tuple[int, ...] = (), progress: bool = True) -> dict:
    """The full summary (``ProposalScores.summary`` plus counts and inputs) of STORE against DATASET."""
    entries = read_proposal_index(store)
    ds = open_dataset(dataset, split=split, images=images)
    if not ds.has_instances:
        raise LiidError(f"{dataset} has no ground-truth instances (a {ds.kind} dataset); "
                        f"proposals are evaluated against instance masks")
    if not entries:
        raise LiidError(f"{store}: the proposal store has no images")
    by_id = {im.id: im for im in ds.images}
    for e in entries:
        im = by_id.get(e["id"])
        if im is None:
            raise LiidError(f"{store}: image {e['id']!r} is not in the dataset {dataset}")
        if (e["height"], e["width"]) != (im.height, im.width):
            raise LiidError(f"{store}: image {e['id']!r} is {e['height']}x{e['width']} in the store, "
                            f"{im.height}x{im.width} in the dataset {dataset}")
    all_tops = (*sorted({*DEFAULT_TOPS, *tops}), None)
    scores = ProposalScores(tops=all_tops)
    skipped = crowd = 0
    for e in progress_bar(entries, desc="eval-proposals", unit="img", enabled=progress):
        props = read_image_proposals(store, e)
        inst = ds.instances(e["id"])
        if inst is None:
            skipped += 1
            continue
        crowd += int(inst.iscrowd.sum())
        scores.add(props.rles, props.scores, inst.masks, inst.classes, inst.iscrowd)
    if not scores.counts:
        raise LiidError(f"{store}: none of its {len(entries)} images has ground-truth instances in {dataset}")
    summary = scores.summary(ds.classes)
    per_class = summary.pop("per_class")
    summary.update({"crowd_excluded": crowd, "skipped_no_gt": skipped,
                    "missing_from_store": len(ds.images) - len(entries), "dataset_images": len(ds.images),
                    "tops": [t if t is not None else "all" for t in all_tops],
                    "dataset": str(dataset), "store": str(store), "per_class": per_class})
    return summary


@click.command("eval-proposals")
@click.argument("dataset")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--split", default=None, help="VOC roots: the image set (e.g. val) or a file listing image ids.")
@images_option
@click.option("--top", "tops", multiple=True, type=click.IntRange(1),
              help="Also score the top N proposals by score (repeatable); 20, 40 and all are always scored.")
@click.option("--json", "json_file", type=click.Path(path_type=Path), default=None,
              help="Also write the full summary, per class included, to this JSON file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --json file.")
def command(dataset: str, store: Path, split: str | None, images_dir: Path | None, tops: tuple[int, ...],
            json_file: Path | None, overwrite: bool) -> None:
    """Score the proposals of STORE against the ground-truth instances of DATASET (a VOC root, a COCO
    instances JSON or a registered name): ABO (mean best mask IoU), MABO (mean of per-class ABOs) and recall at
    IoU 0.5 / 0.7, for the top 20, top 40 and all proposals of each image; crowd instances are not counted.

    Every store image must be in DATASET; dataset images missing from the store are excluded (and counted).
    The last line printed is one JSON object with the overall numbers (abo_top20, recall50_top40, ...).
    """
    if json_file is not None:
        check_output(json_file, overwrite)
    summary = evaluate_store(dataset, store, split=split, images=images_dir, tops=tops)
    click.echo(f"{store}: {summary['images']} images, {summary['instances']} instances "
               f"({summary['crowd_excluded']} crowd excluded), {summary['proposals_per_image']:.1f} proposals "
               f"per image")
    if summary["missing_from_store"]:
        click.echo(f"note: {summary['missing_from_store']} of the {summary['dataset_images']} dataset images are "
                   f"not in the store; they are excluded")
    if summary["skipped_no_gt"]:
        click.echo(f"note: {summary['skipped_no_gt']} store images have no ground truth in the dataset; "
                   f"they are skipped")
    table_tops = [None if t == "all" else t for t in summary["tops"]]
    click.echo(format_table(summary, table_tops))
    if json_file is not None:
        write_json(json_file, summary, overwrite=overwrite)
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "per_class"}))
