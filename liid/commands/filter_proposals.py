"""``liid filter-proposals STORE --out DIR``: the proposal filter applied to an existing store (an imported one,
or a store cut to its top N). A thin command over ``proposals.generate.filter_proposal_store``."""

from __future__ import annotations

from pathlib import Path

import click

from liid.commands.proposals import filter_options
from liid.proposals.filtering import FilterConfig
from liid.proposals.generate import filter_proposal_store


@click.command("filter-proposals")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Proposal store directory to write.")
@filter_options
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(store: Path, out: Path, top: int | None, min_area: float, max_area: float, nms_iou: float,
            overwrite: bool) -> None:
    """Filter every image's proposals of the proposal store STORE into a new store DIR.

    Per image: drop masks outside [--min-area, --max-area] of the image, suppress near-duplicates (mask
    IoU > --nms-iou, best score first), keep the --top best. On a store already filtered with the same
    thresholds, --top N keeps exactly the first N proposals of each image. The proposal order (best first)
    and the image order are kept. DIR made from the same store and settings is skipped; a different one is
    refused unless --overwrite.
    """
    summary = filter_proposal_store(store, out, FilterConfig(top, min_area, max_area, nms_iou),
                                    overwrite=overwrite, echo=click.echo,
                                    warn=lambda msg: click.echo(msg, err=True))
    if summary.get("up_to_date"):
        return
    c = summary["counts"]
    click.echo(f"{out}: {c['images']} images, {c['proposals'] / max(c['images'], 1):.1f} proposals/image "
               f"(of {c['proposals_in'] / max(c['images'], 1):.1f}; {c['empty']} empty)")
