"""The report of a ``liid run``: which of the run's folders feed which section of ``liid.pipeline.report``, the
inspected graph neighbourhoods, and the closing table printed on the terminal."""

from __future__ import annotations

from pathlib import Path

from liid.pipeline.runner import RunPaths, Stage, datasets, labeling_key

TABLE_METRICS = ("ap", "ap50", "ap75", "map_r50", "abo", "miou")


def report_run(cfg: dict, todo: list[Stage], metrics: dict) -> Path:
    """OUT/report.html of the run (sections for what the run has made)."""
    from liid.datasets import open_dataset
    from liid.pipeline.report import write_report

    out = Path(cfg["RUN"]["OUTPUT_DIR"]).resolve()
    p = RunPaths(out)
    train, test = datasets(cfg, p)
    ds = open_dataset(train.path, split=train.split, images=train.images)
    method = cfg["LABELER"]["METHOD"]
    names = [method, *[b for b in cfg["LABELER"]["BASELINES"] if b != method]]
    labelings = {m: p.labels(m) for m in names if p.labels(m).is_dir()}
    evaluations = {m: p.evaluation(m) for m in names if p.evaluation(m).is_file()}
    seg = cfg["SEGMENTER"]["NAME"]
    segmenter = p.segmenter(seg) if seg != "none" and (p.segmenter(seg) / "train.json").is_file() else None
    eval_ds = None
    if segmenter is not None and test is not None:
        eval_ds = open_dataset(test.path, split=test.split, images=test.images)
    curves = {name: folder for name, folder in (("train-cls", p.cls), ("train-mil", p.mil),
                                                 (f"train-{seg}", p.segmenter(seg)))
              if (folder / "log.jsonl").is_file()}
    figures = inspect_figures(cfg, p, ds) if method == "liid" else {}
    title = f"LIID run {out.name}: {cfg['LABELER']['METHOD']} on {ds.source} ({len(ds.images):,} images)"
    return write_report(
        out, title=title, dataset=ds, metrics=metrics, proposals=p.top if p.top.is_dir() else None,
        labelings=labelings, evaluations=evaluations, graph=p.graph if p.graph.is_dir() else None,
        cams=p.cls if (p.cls / "checkpoint.pt").is_file() else None, segmenter=segmenter, eval_dataset=eval_ds,
        curves=curves, stage_seconds=metrics.get("work_seconds"), warnings=metrics.get("warnings"),
        figures=figures, n_images=cfg["REPORT"]["IMAGES"], seed=cfg["REPORT"]["SEED"])


def inspect_figures(cfg: dict, p: RunPaths, ds) -> dict[str, Path]:
    """``liid inspect`` pictures (and GraphML) of a few proposals whose label the graph decided, under
    OUT/inspect/."""
    n = cfg["REPORT"]["INSPECT"]
    if not n or not (p.graph / "graph.json").is_file() or not p.cut.is_dir():
        return {}
    import networkx as nx

    from liid.graph.neighbourhood import draw_neighbourhood, inspect_node, pick_nodes, to_networkx

    folder = p.out / "inspect"
    folder.mkdir(exist_ok=True)
    figures = {}
    for node in pick_nodes(p.graph, p.cut, n, cfg["REPORT"]["SEED"]):
        nb = inspect_node(p.graph, p.cut, ds, p.top, int(node))
        png = folder / f"node_{int(node)}.png"
        draw_neighbourhood(nb, png)
        graphml = folder / f"node_{int(node)}.graphml"
        nx.write_graphml(to_networkx(nb), graphml)
        why = f"why proposal {int(node)} got its label: its graph neighbourhood (`liid inspect --node {int(node)}`)"
        figures[why] = png
        figures[f"proposal {int(node)}'s neighbourhood as GraphML (Gephi, Cytoscape)"] = graphml
    return figures


def results_table(metrics: dict) -> str:
    """The run's closing table (plain text): each labeling, then the segmenter."""
    rows = [(f"pseudo-labels: {name}", vals) for name, vals in metrics.get("labelings", {}).items()]
    seg = metrics.get("segmenter")
    if seg:
        rows.append((f"{seg['name']} on the pseudo-labels (held out)", seg))
    shown = [k for k in TABLE_METRICS if any(k in v for _, v in rows)]
    lines = [f"{'':44} " + " ".join(f"{k.upper():>7}" for k in shown)]
    for title, vals in rows:
        lines.append(f"{title:44} " + " ".join(f"{vals[k]:7.3f}" if isinstance(vals.get(k), float) else f"{'-':>7}"
                                               for k in shown))
    if "seconds" in metrics:
        lines.append(f"{'seconds (this run)':44} {metrics['seconds']:7.0f}")
    if "pipeline_seconds" in metrics:
        lines.append(f"{'seconds (every stage doing its work)':44} {metrics['pipeline_seconds']:7.0f}")
    return "\n".join(lines)


__all__ = ["labeling_key", "report_run", "results_table"]
