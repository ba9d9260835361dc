"""``liid build-graph STORE --out GRAPH``: the knowledge graph of LIID section 5.2 (eq. 10, 12)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import click

from liid.atomic import check_parent
from liid.errors import LiidError
from liid.fingerprint import fingerprint
from liid.graph.build import LABEL_RULES, NEIGHBOURS, GraphConfig, build_graph
from liid.graph.feature_store import read_feature_store
from liid.graph.graph_file import save_graph
from liid.graph.knn import METHODS, RERANKS, KnnConfig
from liid.parallel import BACKENDS, Backend
from liid.stage import up_to_date


def format_stats(stats: dict) -> str:
    knn = stats["knn"]
    lines = [
        f"nodes {stats['nodes']:,}  edges {stats['edges']:,}  components {stats['components']:,}  "
        f"largest {stats['largest_component']:,}",
        f"kNN: {knn['method']} k={knn['k']}" + (f" nlist={knn['nlist']} nprobe={knn['nprobe']}"
                                                 if "nlist" in knn else "")
        + (f" shards={knn['shards']} on {knn['backend']}" if "shards" in knn else "")
        + (" out of core" if knn.get("out_of_core") else "")
        + f" in {knn['seconds']:.1f} s",
    ]
    if "recall_at_k" in knn:
        lines.append(f"recall@{knn['k']} {knn['recall_at_k']:.4f} on {knn['recall_sample']} sampled queries "
                     f"(vs exact search)")
    if stats.get("same_image_edges") is not None:
        lines.append(f"edges within one image {100 * stats['same_image_edges']:.1f} %, median edge cosine "
                     f"{stats['edge_cosine_median']:.3f}")
    if stats.get("pairs_dropped_no_shared_label"):
        lines.append(f"pairs dropped (images share no label): {stats['pairs_dropped_no_shared_label']:,}")
    lines.append("component sizes:")
    width = max(stats["component_sizes"].values())
    for size, count in stats["component_sizes"].items():
        lines.append(f"  {size:>13}  {count:>7,}  " + "#" * max(1, round(40 * count / width)))
    return "\n".join(lines)


@click.command("build-graph")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Graph directory to write.")
@click.option("--k", "k", default=3, show_default=True, type=click.IntRange(1, 64),
              help="Most similar other proposals linked to each proposal (LIID: 3).")
@click.option("--delta", default=0.5, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Eq. (10) balance factor: pair weight = delta * cosine. The paper's 5 (Table 6) is for its "
                   "neighbours; on centred cross-image neighbours 0.5-1 measured best on the synthetic set, and 1 "
                   "already let the one large component of coco-mini collapse to background, 0.5 did not "
                   "(BENCHMARKS.md, ImageNet features and the graph).")
@click.option("--knn", "method", default="auto", show_default=True, type=click.Choice(METHODS),
              help="auto: exact up to --exact-max proposals (or on a GPU), IVF above.")
@click.option("--exact-max", default=30_000, show_default=True, type=click.IntRange(0),
              help="Largest store searched exactly by --knn auto on a CPU.")
@click.option("--nlist", default=0, type=click.IntRange(0), help="IVF lists (0: 2.3*sqrt(N)).")
@click.option("--nprobe", default=0, type=click.IntRange(0),
              help="IVF lists probed per query (0: 3*nlist/64, measured at VOC scale; at COCO scale, 5e6 "
                   "proposals, BENCHMARKS.md measures --nlist 8192 --nprobe 12..96).")
@click.option("--pca-dim", default=384, show_default=True, type=click.IntRange(0),
              help="IVF: search candidates in this many principal components (0: full dimension).")
@click.option("--candidates", default=16, show_default=True, type=click.IntRange(2),
              help="IVF/HNSW: approximate candidates per proposal, re-ranked by exact cosine.")
@click.option("--rerank", default="full", show_default=True, type=click.Choice(RERANKS),
              help="IVF: full: the candidates re-ranked by exact cosine in the full dimension (rows read from the "
                   "store); pca: by their cosine in the PCA space searched (no full-dimension read: for stores "
                   "larger than the memory that caches them; recall measured with --recall-sample).")
@click.option("--recall-sample", default=0, show_default=True, type=click.IntRange(0),
              help="Measure recall@k against exact search on this many random queries and print it.")
@click.option("--same-label-pairs", is_flag=True,
              help="Keep a pair only if the two images share a foreground label (reference-code rule).")
@click.option("--neighbours", default="cross-image", show_default=True, type=click.Choice(NEIGHBOURS),
              help="cross-image: the k most similar proposals of other images; all: of any image, the paper's (72-90 "
                   "% of them are then overlapping proposals of the same image, near-duplicates that carry no "
                   "knowledge across the dataset; BENCHMARKS.md).")
@click.option("--centre/--no-centre", default=True, show_default=True,
              help="Subtract the dataset's mean feature before the cosine (spreads the cosines of features that "
                   "share a large common component).")
@click.option("--labels", "label_rule", default="image", show_default=True, type=click.Choice(LABEL_RULES),
              help="image: a proposal may only take its image's labels or background; all: eq. 10 as written "
                   "(only p is masked; a label off the image is exported as noise).")
@click.option("--mutual", is_flag=True,
              help="Keep a pair only when each proposal is among the other's k neighbours (default: either).")
@click.option("--seed", default=0, show_default=True, help="Seed of the IVF training sample and recall sample.")
@click.option("--in-memory-gb", default=4.0, show_default=True, type=click.FloatRange(min=0),
              help="Hold the unit features as one float32 matrix when it fits in this many GB; above, work out of "
                   "core (rows made chunk by chunk from the memory-mapped store; the exact re-rank reads it in "
                   "column slabs of at most this size: the same graph to float32 rounding, more time).")
@click.option("--shards", default=1, show_default=True, type=click.IntRange(1),
              help="Split the search (--knn exact or ivf) into this many shards of the store, one task each, and "
                   "merge their top-k; the neighbours depend on this number, never on --backend.")
@click.option("--backend", default=None, type=click.Choice(BACKENDS),
              help="Where the shards run: serial | process | ray (default: process when --workers > 1, else serial).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Parallel shard tasks (processes, or CPUs of a local Ray).")
@click.option("--ray-address", default=None, help="Address of an existing Ray cluster (with --backend ray).")
@click.option("--scratch", default=None, type=click.Path(path_type=Path),
              help="Folder for the rows the shard tasks read (default: beside --out). On a Ray cluster it must be "
                   "one every node sees.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
def command(store: Path, out: Path, k: int, delta: float, method: str, exact_max: int, nlist: int,
            nprobe: int, pca_dim: int, candidates: int, recall_sample: int, same_label_pairs: bool,
            neighbours: str, centre: bool, label_rule: str, mutual: bool, seed: int, rerank: str,
            in_memory_gb: float, shards: int,
            backend: str | None, workers: int, ray_address: str | None, scratch: Path | None,
            overwrite: bool) -> None:
    """Build the kNN graph of all proposals with the classes as terminals, and its components.

    STORE is a feature store directory (docs/FORMATS.md). Writes GRAPH/ with terminal weights (p masked
    by the image's labels), symmetrised kNN edges of weight delta*cos, and the connected components.
    The defaults are what measured best (centred cosine, neighbours from other images, delta 0.5); the
    paper's graph is --neighbours all --no-centre --delta 5.
    """
    t0 = time.perf_counter()
    cfg = GraphConfig(knn=KnnConfig(k=k, method=method, exact_max=exact_max, nlist=nlist, nprobe=nprobe,
                                    pca_dim=pca_dim, candidates=candidates, seed=seed, shards=shards,
                                    rerank=rerank),
                      delta=delta, same_label_pairs=same_label_pairs, neighbours=neighbours, centre=centre,
                      labels=label_rule, mutual=mutual)
    check_parent(out)
    source = {"feature_store": str(Path(store).resolve()), "fingerprint": fingerprint(store)
              if Path(store).is_dir() else None}
    expected = {"config": cfg.to_json(), "source": source}
    if up_to_date(out, "graph.json", "inputs", expected, overwrite):
        return
    fs = read_feature_store(store)
    click.echo(f"{store}: {fs.num_proposals:,} proposals, {len(fs.images):,} images, "
               f"{len(fs.classes)} classes, feature dim {fs.features.shape[1]}")
    if shards > 1 and method == "hnsw":
        raise LiidError("--shards works with --knn exact and ivf, not hnsw")
    run_on = Backend(backend or ("process" if workers > 1 else "serial"), workers, ray_address)
    work = None
    if shards > 1:  # removed afterwards, whatever happens
        base = scratch if scratch is not None else out.resolve().parent
        base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.knn-", dir=base))
    try:
        g, stats = build_graph(fs, cfg, recall_sample=recall_sample, backend=run_on, scratch=work,
                               in_memory_gb=in_memory_gb)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    g.meta.update(source=source, inputs=expected)
    save_graph(out, g, overwrite=overwrite)
    click.echo(format_stats(stats))
    click.echo(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
