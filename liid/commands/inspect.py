"""``liid inspect --graph GRAPH --cut CUT --dataset DATASET --proposals P --node N --out DIR``: why did this
proposal get this label? Its neighbourhood in the kNN graph, with the cut's labels, as a picture, GraphML and JSON.

A thin command over ``graph.neighbourhood`` (``inspect_node``, ``figure``, ``to_networkx``, ``to_json``).
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import numpy as np

from liid.atomic import check_output, check_parent, write_bytes, write_json
from liid.commands.options import images_option
from liid.errors import LiidError
from liid.graph.neighbourhood import graph_store, graphml_bytes, inspect_node, open_graph, png_bytes, to_json

SUFFIXES = (".png", ".graphml", ".json")


def _cost(c: float) -> str:
    return "-" if not np.isfinite(c) else f"{c:.4f}"


def summary_lines(nb) -> list[str]:
    """What the command prints: the centre, its terminal weights and local costs, its heaviest neighbours."""
    best = int(nb.terminal_argmax[0])
    lines = [f"node {nb.centre}: {nb.describe(0)}, cut label {nb.label_name(0)}, terminal argmax "
             f"{nb.label_name(0, best)}" + ("" if best == nb.label else "  (the graph changed its mind)")]
    ks = [k for k in range(len(nb.classes)) if nb.allowed[0, k] or nb.terminal[0, k] > 0]
    lines.append("  label            terminal   local cost")
    for k in ks:
        mark = "*" if k == nb.label else " "
        lines.append(f" {mark}{nb.classes[k][:16]:<16} {nb.terminal[0, k]:9.4f}   {_cost(nb.local_cost[k])}")
    lines.append(f"  {len(nb.neighbours)} edges; {len(nb.nodes)} nodes and {len(nb.edges)} edges within {nb.hops} "
                 f"hop(s)")
    for p in range(min(len(nb.neighbours), nb.max_neighbours or len(nb.neighbours), 5)):
        lines.append(f"    w {nb.neighbour_weights[p]:.4f}  node {int(nb.neighbours[p])}  {nb.neighbour_describe(p)}  "
                     f"cut {nb.neighbour_label_name(p)}")
    return lines


@click.command("inspect")
@click.option("--graph", "graph_dir", required=True, type=click.Path(path_type=Path),
              help="Graph directory from `liid build-graph`.")
@click.option("--cut", "cut_dir", required=True, type=click.Path(path_type=Path),
              help="Cut directory from `liid solve-cut` on that graph.")
@click.option("--dataset", "dataset", required=True, help="The dataset of the proposals (VOC root, COCO JSON, ...).")
@click.option("--split", default=None, help="VOC roots: the image set that holds the inspected images.")
@images_option
@click.option("--proposals", "proposals", required=True, type=click.Path(path_type=Path), help="Proposal store.")
@click.option("--features", type=click.Path(path_type=Path), default=None,
              help="Feature store the graph was built from (node u is its row u); default: the one graph.json records.")
@click.option("--node", type=int, default=None, help="The graph node (feature-store row) to inspect.")
@click.option("--image", "image_id", default=None, help="With --proposal: inspect this image's proposal instead.")
@click.option("--proposal", type=int, default=None, help="With --image: the proposal's index in its image.")
@click.option("--hops", default=1, show_default=True, type=click.IntRange(0),
              help="Neighbourhood radius in edges (the GraphML and JSON; the picture shows the direct neighbours).")
@click.option("--max-neighbours", default=12, show_default=True, type=click.IntRange(0),
              help="Each node follows (and the picture shows) at most this many of its heaviest edges; 0: all.")
@click.option("--terminals/--no-terminals", default=True, show_default=True,
              help="GraphML: the classes as nodes of kind \"terminal\", joined by the terminal weights.")
@click.option("--name", default=None, help="Output file stem (default: node_<N>).")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Folder for <name>.png, <name>.graphml and <name>.json (made if missing; it may hold others).")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def command(graph_dir: Path, cut_dir: Path, dataset: str, split: str | None, images_dir: Path | None, proposals: Path,
            features: Path | None, node: int | None, image_id: str | None, proposal: int | None, hops: int,
            max_neighbours: int, terminals: bool, name: str | None, out: Path, overwrite: bool) -> None:
    """Show why a proposal got its label: its crop with its terminal weights, the cut's label and the local cost of
    every label (the cut value the node adds with every other label fixed: the cut's label has the least), and its
    heaviest neighbours' crops with the edge weights and their labels.

    Writes OUT/<name>.png (the picture), OUT/<name>.graphml (the neighbourhood within --hops for Gephi or
    Cytoscape: node attributes image_id, proposal, cut_label_name, terminal_<class>, is_centre; edge weight) and
    OUT/<name>.json (the same as numbers). Choose the node with --node N or --image ID --proposal J.
    """
    if (node is None) == (image_id is None and proposal is None):
        raise click.UsageError("give either --node N or --image ID --proposal J")
    if node is None and (image_id is None or proposal is None):
        raise click.UsageError("--image and --proposal go together")
    if name is not None and (not name or os.sep in name or name.startswith(".")):
        raise LiidError(f"--name {name!r}: must be a plain file name (no '{os.sep}', no leading '.')")
    check_parent(out)
    if out.exists() and not out.is_dir():
        raise LiidError(f"{out}: exists and is not a folder")
    if node is None:
        g = open_graph(graph_dir)
        node = graph_store(graph_dir, g, features).node_of(image_id, proposal)
    stem = name or f"node_{node}"
    files = [out / f"{stem}{s}" for s in SUFFIXES]
    if out.is_dir():
        for f in files:
            check_output(f, overwrite, kind="file")
    from liid.datasets import open_dataset

    ds = open_dataset(dataset, split=split, images=images_dir)
    nb = inspect_node(graph_dir, cut_dir, ds, proposals, node, hops=hops, max_neighbours=max_neighbours,
                      features=features)
    record = {**to_json(nb), "terminals_in_graphml": terminals}
    png, graphml = png_bytes(nb), graphml_bytes(nb, terminals)  # everything made before anything is written
    out.mkdir(exist_ok=True)
    write_bytes(files[0], png, overwrite=overwrite)
    write_bytes(files[1], graphml, overwrite=overwrite)
    write_json(files[2], record, overwrite=overwrite)
    for line in summary_lines(nb):
        click.echo(line)
    click.echo(f"wrote {', '.join(str(f) for f in files)}")
