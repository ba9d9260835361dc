"""``liid run --config-file CFG [KEY VALUE ...]``: the whole pipeline from one config (``liid.pipeline.runner``)."""

from __future__ import annotations

from pathlib import Path

import click

from liid.config import Schema, absolute_paths, config_file, describe_keys, load_config, plugins_of


def _root_group() -> click.Group:
    ctx = click.get_current_context()
    root = ctx.find_root().command
    if not isinstance(root, click.Group):  # `liid run` invoked on its own (tests): the liid group
        from liid.cli import main as root
    return root


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--config-file", "config_name", default=None, metavar="CFG",
              help="The config: a YAML file, or a shipped one by name (configs/synthetic_demo.yaml, "
                   "configs/voc_liid.yaml, configs/coco_liid.yaml). OUT/config.yaml of a run reproduces it.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--out", "output_dir", default=None, type=click.Path(path_type=Path),
              help="The run's folder (sets RUN.OUTPUT_DIR).")
@click.option("--stages", default=None, metavar="LIST",
              help="Run only these stages: names separated by commas, FROM:TO, FROM: (FROM and every later one), "
                   ":TO. Stages: dataset, proposals, filter, cls, mil, extract, graph, cut, export, label, "
                   "baselines, evaluate, segmenter, report (the ones this config has).")
@click.option("--overwrite", is_flag=True,
              help="Redo the selected stages even where their output is up to date, replacing it (trainers start "
                   "over). Without it a stage whose output was made from other inputs or settings stops the run.")
@click.option("--dry-run", is_flag=True, help="Print the stages' commands (the unselected ones commented out) and "
              "stop.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and stop.")
@click.option("--list-keys", is_flag=True, help="Print every config key with its default and help, and stop.")
def command(config_name: str | None, overrides: tuple[str, ...], output_dir: Path | None, stages: str | None,
            overwrite: bool, dry_run: bool, print_config: bool, list_keys: bool) -> None:
    """Run the whole pipeline from a config: dataset → proposals → classifier → MIL → extract → graph → cut →
    export (or any `liid label` method: LABELER.METHOD) → baselines → evaluation → segmenter → report.

    \b
    KEY VALUE pairs override the config (detectron2 style), e.g.
      liid run --config-file configs/coco_liid.yaml DATASET.TRAIN annotations/instances_train.json MIL.EPOCHS 3
    Every key is a stage's command option (GRAPH.DELTA is `liid build-graph --delta`); --list-keys prints them.

    \b
    Each stage skips what is up to date and resumes what was interrupted, as the single commands do, so a
    rerun only does what changed. OUT gets config.yaml (the resolved config: `liid run --config-file
    OUT/config.yaml` reproduces the run), run.log (everything printed, with each command line), metrics.json
    and report.html.
    """
    from liid.errors import LiidError

    group = _root_group()
    schema = Schema(group)  # the commands' options (again below, once plugins may have added some)
    if list_keys:
        click.echo(describe_keys(schema))
        return
    if config_name is None:
        raise LiidError("--config-file CFG is required (a YAML file or a shipped config: configs/synthetic_demo.yaml, "
                        "configs/voc_liid.yaml, configs/coco_liid.yaml)")
    source = config_file(config_name)
    pairs = list(overrides)
    if len(pairs) % 2:
        raise LiidError(f"overrides come in KEY VALUE pairs; {pairs[-1]!r} has no value")
    if output_dir is not None:
        pairs += ["RUN.OUTPUT_DIR", str(output_dir)]
    plugins = plugins_of(source, pairs)
    if plugins:  # before the schema: a plugin may add options (a labeler's own), which are then config keys
        from liid.pipeline.runner import import_plugins

        import_plugins(plugins)
        schema = Schema(group)
    cfg = absolute_paths(load_config(schema, source, pairs))
    if print_config:
        from liid.config import dump_config

        click.echo(dump_config(cfg), nl=False)
        return
    from liid.pipeline.report_run import report_run
    from liid.pipeline.runner import run_pipeline

    metrics = run_pipeline(cfg, schema, group, stages=stages, overwrite=overwrite, dry_run=dry_run,
                           config_source=str(source), report=report_run)
    if dry_run:
        return
    from liid.pipeline.report_run import results_table

    click.echo("\n" + results_table(metrics))
    out = Path(cfg["RUN"]["OUTPUT_DIR"])
    if metrics.get("report"):
        click.echo(f"\nreport: {metrics['report']}")
    click.echo(f"metrics: {out / 'metrics.json'}")
