"""``liid run``: the whole pipeline from one config, as the commands a user would type (IRNet's staged pipeline).

dataset → proposals → filter → cls → mil → extract → graph → cut → export (or one ``liid label`` method in
place of mil ... export) → baselines → evaluate → segmenter → report. Each stage is one ``liid`` command run in
this process with the options of its config section (``liid.pipeline.config``) and the folders of the stages
before it; each keeps its own rule: skipped when its output was made from the same inputs and settings, a
trainer continued with ``--resume``, a stage whose output was made otherwise refused unless ``--overwrite``.
Everything printed goes to the terminal and to ``OUT/run.log`` (with each stage's command line, so a run can be
retyped by hand); the resolved config is ``OUT/config.yaml`` and reproduces the run.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import io
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import click

from liid.atomic import check_inputs, write_json
from liid.config import OUT_PLACEHOLDER, TRAIN_PLACEHOLDER, Schema, dump_config, resolve_out
from liid.errors import LiidError

SKIP_WORDS = ("up to date", "already trained")


@dataclass
class Stage:
    """One command of the run: the stage it belongs to (``--stages`` name), what it does, the ``liid`` command
    and its arguments, and what it writes."""

    stage: str
    title: str
    command: str
    args: list[str]
    output: Path
    when: Callable[[], str | None] | None = None  # run time check: a reason to skip the command, or None
    seconds: float | None = None
    output_text: str = field(default="", repr=False)
    skipped_because: str | None = None

    @property
    def up_to_date(self) -> bool:
        """Whether the command found its output up to date (the commands' own words for it)."""
        return any(w in self.output_text for w in SKIP_WORDS)

    def line(self) -> str:
        """The command as a user would type it."""
        return "liid " + shlex.join([self.command, *(_shown(a) for a in self.args)])


def _shown(arg: str) -> str:
    """An argument as printed: paths inside the current folder relative to it."""
    if os.path.isabs(arg) and arg.startswith(os.getcwd() + os.sep):
        return os.path.relpath(arg)
    return arg


def labeling_key(method: str) -> str:
    """metrics.json's name of a labeling (``mil-argmax`` → ``mil_argmax``, ``oaa+`` → ``oaa_plus``)."""
    return method.replace("+", "_plus").replace("-", "_")


@dataclass(frozen=True)
class RunPaths:
    """Where each stage writes, under the run's folder."""

    out: Path

    synthetic = property(lambda self: self.out / "synthetic")
    proposals = property(lambda self: self.out / "proposals")
    top = property(lambda self: self.out / "proposals_top")
    proposals_eval = property(lambda self: self.out / "eval_proposals.json")
    cls = property(lambda self: self.out / "cls")
    mil = property(lambda self: self.out / "mil")
    features = property(lambda self: self.out / "features")
    graph = property(lambda self: self.out / "graph")
    cut = property(lambda self: self.out / "cut")

    def labels(self, method: str) -> Path:
        return self.out / f"labels_{labeling_key(method)}"

    def evaluation(self, method: str) -> Path:
        return self.out / f"eval_{labeling_key(method)}.json"

    def segmenter(self, name: str) -> Path:
        return self.out / name


@dataclass(frozen=True)
class DataArgs:
    """A dataset as the commands take it: the positional DATASET, --split and --images."""

    path: str
    split: str | None = None
    images: str | None = None

    def positional(self) -> list[str]:
        return [self.path, *(["--split", self.split] if self.split else []),
                *(["--images", self.images] if self.images else [])]

    def option(self) -> list[str]:
        """As ``liid label`` takes it (--dataset)."""
        return ["--dataset", *self.positional()]


def datasets(cfg: dict, p: RunPaths) -> tuple[DataArgs, DataArgs | None]:
    """The training and the held-out dataset of the config."""
    d = cfg["DATASET"]
    if d["SYNTHETIC"]:
        if d["TRAIN"] or d["TEST"]:
            raise LiidError("DATASET.SYNTHETIC true generates the data: leave DATASET.TRAIN and DATASET.TEST null")
        return DataArgs(str(p.synthetic)), DataArgs(str(p.synthetic), "val")
    if not d["TRAIN"]:
        raise LiidError("the config names no training data: set DATASET.TRAIN (a VOC root, COCO JSON, image folder "
                        "or registered name) or DATASET.SYNTHETIC true")
    train = DataArgs(str(resolve_out(d["TRAIN"], p.out)), d["TRAIN_SPLIT"], resolve_out(d["TRAIN_IMAGES"], p.out))
    test = None
    if d["TEST"]:
        path = str(resolve_out(d["TEST"], p.out)).replace(TRAIN_PLACEHOLDER, train.path)
        images = resolve_out(d["TEST_IMAGES"], p.out)
        if images is None and d["TEST"] == TRAIN_PLACEHOLDER:
            images = train.images
        test = DataArgs(path, d["TEST_SPLIT"], images)
    return train, test


def _labeler(method: str):
    from liid.labelers.registry import get_labeler

    return get_labeler(method)


def plan(cfg: dict, schema: Schema) -> list[Stage]:
    """The run's commands in order, from the resolved config."""
    out = Path(cfg["RUN"]["OUTPUT_DIR"]).resolve()
    p = RunPaths(out)
    s = str
    train, test = datasets(cfg, p)
    workers = ["--workers", s(cfg["RUN"]["WORKERS"])]
    dev = ["--device", cfg["RUN"]["DEVICE"]] if cfg["RUN"]["DEVICE"] else []

    def opts(section: str, only: Iterable[str] | None = None) -> list[str]:
        return schema.args(section, cfg[section], out, only)

    def dev_for(section: str) -> list[str]:
        return [] if cfg[section].get("DEVICE") else dev

    stages: list[Stage] = []
    if cfg["DATASET"]["SYNTHETIC"]:
        stages.append(Stage("dataset", "synthetic dataset", "make-synthetic",
                            ["--out", s(p.synthetic), *opts("SYNTHETIC")], p.synthetic))
    stages.append(Stage("proposals", "segment proposals", "proposals",
                        [*train.positional(), "--out", s(p.proposals), *workers, *opts("PROPOSALS")], p.proposals))
    top = cfg["FILTER"]["TOP"]
    stages.append(Stage("filter", f"best {top} proposals per image" if top else "filtered proposals",
                        "filter-proposals", [s(p.proposals), "--out", s(p.top), *opts("FILTER")], p.top))
    stages.append(Stage("filter", "eval-proposals (ABO of the kept proposals)", "eval-proposals",
                        [*train.positional(), s(p.top), "--json", s(p.proposals_eval)], p.proposals_eval,
                        _proposals_evaluated(train, p)))
    method = cfg["LABELER"]["METHOD"]
    baselines = [b for b in cfg["LABELER"]["BASELINES"] if b != method]
    labelers = {m: _labeler(m) for m in [method, *baselines] if m != "liid"}
    needs_features = method == "liid" or any("features" in lab.inputs for lab in labelers.values())
    needs_cams = needs_features or any("cams" in lab.inputs and not cfg["LABELER"].get("CAMS")
                                       for lab in labelers.values())
    if needs_cams:  # the classifier: L_Att's CAMs for the MIL network, --cams of the CAM labelers
        stages.append(Stage("cls", "train-cls (CAM classifier)", "train-cls",
                            [*train.positional(), "--out", s(p.cls), *opts("CLS"), *dev_for("CLS"), "--resume"],
                            p.cls))
    if needs_features:
        stages.append(Stage("mil", "train-mil (MIL network, eq. 9)", "train-mil",
                            [*train.positional(), "--proposals", s(p.top), "--cams", s(p.cls), "--out", s(p.mil),
                             *opts("MIL"), *dev_for("MIL"), "--resume"], p.mil))
        stages.append(Stage("extract", "extract (features + probabilities)", "extract",
                            [*train.positional(), "--proposals", s(p.top), "--mil", s(p.mil), "--out",
                             s(p.features), *opts("EXTRACT"), *dev_for("EXTRACT")], p.features))
    if method == "liid":
        stages.append(Stage("graph", "build-graph (kNN, eq. 10)", "build-graph",
                            [s(p.features), "--out", s(p.graph), *opts("GRAPH")], p.graph))
        stages.append(Stage("cut", "solve-cut (multiway cut, eq. 11)", "solve-cut",
                            ["--graph", s(p.graph), "--out", s(p.cut), *workers, *opts("CUT")], p.cut))
        stages.append(Stage("export", "export (LIID pseudo-labels)", "export",
                            [s(p.cut), "--proposals", s(p.top), "--out", s(p.labels("liid")), *opts("EXPORT")],
                            p.labels("liid")))

    def label_stage(stage: str, m: str) -> Stage:
        lab = labelers[m]
        wired = {"features": ["--features", s(p.features)], "proposals": ["--proposals", s(p.top)],
                 "dataset": train.option(), "cams": ["--cams", s(p.cls)]}
        args = ["--method", m, "--out", s(p.labels(m))]
        for name in lab.inputs:
            if name in wired and not cfg["LABELER"].get(name.upper()):
                args += wired[name]
        args += opts("LABELER", lab.options)
        if "device" in lab.options and not cfg["LABELER"].get("DEVICE"):
            args += dev
        missing = [k for k in lab.required if k == "model" and not cfg["LABELER"].get("MODEL")]
        if missing:
            raise LiidError(f"LABELER.METHOD {m} needs LABELER.MODEL: {lab.required['model']}")
        when = _needs_instances(train) if m == "oracle" else None
        return Stage(stage, f"label: {m}", "label", args, p.labels(m), when)

    if method != "liid":
        stages.append(label_stage("label", method))
    stages += [label_stage("baselines", m) for m in baselines]

    for m in [method, *baselines]:
        semantic_only = m != "liid" and not labelers[m].instances
        pred = p.labels(m) / ("semantic" if semantic_only else "instances.json")
        stages.append(Stage("evaluate", f"evaluate {m}", "evaluate",
                            [*train.positional(), s(pred), "--json", s(p.evaluation(m)), *opts("EVAL")],
                            p.evaluation(m), _needs_instances(train, semantic_only)))

    seg = cfg["SEGMENTER"]["NAME"]
    main_labels = p.labels(method)
    if seg == "maskrcnn":
        if method != "liid" and not labelers[method].instances:
            raise LiidError(f"SEGMENTER.NAME maskrcnn trains on instances; LABELER.METHOD {method} writes semantic "
                            f"maps only (use SEGMENTER.NAME deeplab)")
        ev = []
        if test is not None:
            ev = ["--eval-dataset", test.path, *(["--eval-split", test.split] if test.split else []),
                  *(["--eval-images", test.images] if test.images else [])]
        stages.append(Stage("segmenter", f"train-maskrcnn on the {method} labels", "train-maskrcnn",
                            [*train.positional(), "--train-json", s(main_labels / "instances.json"), "--out",
                             s(p.segmenter("maskrcnn")), *opts("MASKRCNN"), *ev, *dev_for("MASKRCNN"), "--resume"],
                            p.segmenter("maskrcnn")))
    elif seg == "deeplab":
        ev = []
        if test is not None:
            if (test.path, test.images) != (train.path, train.images) or not test.split:
                raise LiidError("SEGMENTER.NAME deeplab evaluates on a split of the training dataset "
                                "(DATASET.TEST = DATASET.TRAIN with DATASET.TEST_SPLIT), not on another dataset")
            ev = ["--eval-split", test.split]
        stages.append(Stage("segmenter", f"train-deeplab on the {method} labels", "train-deeplab",
                            [*train.positional(), "--masks", s(main_labels / "semantic"), "--out",
                             s(p.segmenter("deeplab")), *opts("DEEPLAB"), *ev, *dev_for("DEEPLAB"), "--resume"],
                            p.segmenter("deeplab")))
    return stages


def _needs_instances(data: DataArgs, semantic: bool = False) -> Callable[[], str | None]:
    """A run-time check of the oracle and of the evaluations: skipped (with why) on a dataset without the ground
    truth they need (instances; semantic masks for a semantic-only labeling), e.g. images with labels only."""
    def check() -> str | None:
        source, instances, masks = _ground_truth(data)
        if semantic:
            return None if masks else f"{source} has no ground-truth semantic masks"
        return None if instances else f"{source} has no ground-truth instances"
    return check


@functools.lru_cache(maxsize=8)
def _ground_truth(data: DataArgs) -> tuple[str, bool, bool]:
    """(source, has instances, has semantic masks) of a dataset, opened once per run."""
    from liid.datasets import open_dataset

    ds = open_dataset(data.path, split=data.split, images=data.images)
    return str(ds.source), bool(ds.has_instances), bool(ds.has_semantic)


def _proposals_evaluated(data: DataArgs, p: RunPaths) -> Callable[[], str | None]:
    """eval-proposals runs once per filtered store (its --json has no skip rule of its own), and only on a
    dataset with ground-truth instances."""
    def check() -> str | None:
        index = p.top / "index.json"
        if p.proposals_eval.is_file() and index.is_file() and \
                p.proposals_eval.stat().st_mtime >= index.stat().st_mtime:
            return f"{p.proposals_eval}: up to date (newer than the proposals it scores)"
        if p.proposals_eval.is_file():
            p.proposals_eval.unlink()  # the run's own record of an older store
        return _needs_instances(data)()
    return check


STAGE_ORDER = ("dataset", "proposals", "filter", "cls", "mil", "extract", "graph", "cut", "export", "label",
               "baselines", "evaluate", "segmenter", "report")


def select_stages(names: list[str], spec: str | None) -> set[str]:
    """The stages of ``--stages``: names separated by commas, ``a:`` (a and every later one), ``a:b``, ``:b``."""
    if not spec:
        return set(names)
    chosen: set[str] = set()
    for part in (x.strip() for x in spec.split(",")):
        if not part:
            continue
        ends = part.split(":") if ":" in part else [part, part]
        if len(ends) != 2:
            raise LiidError(f"--stages {spec}: {part!r} is not NAME or FROM:TO")
        idx = []
        for end, default in zip(ends, (0, len(names) - 1), strict=True):
            if not end:
                idx.append(default)
                continue
            if end not in names:
                close = difflib.get_close_matches(end, names, n=1, cutoff=0.4)
                raise LiidError(f"--stages: no stage {end!r} in this run" + (f" (did you mean {close[0]}?)" if close
                                                                            else "") + f"; stages: {', '.join(names)}")
            idx.append(names.index(end))
        chosen.update(names[idx[0]:idx[1] + 1])
    return chosen


class _PassOn(io.TextIOBase):
    """A text stream that passes what is written on to ``stream`` (the terminal's properties are its own) and
    hands each piece to ``keep``; bytes (click.echo may hand them) are decoded first."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str | bytes) -> int:
        if isinstance(text, bytes):
            text = text.decode(self.encoding, "replace")
        self.stream.write(text)
        self.keep(text)
        return len(text)

    def keep(self, text: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"


class Tee(_PassOn):
    """The terminal as it is, and a log file one finished line at a time (a progress bar's carriage-return
    redraws leave only their last state in the log)."""

    def __init__(self, stream: TextIO, log: TextIO):
        super().__init__(stream)
        self.log, self.pending = log, ""

    def keep(self, text: str) -> None:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.log.write(line.rsplit("\r", 1)[-1] + "\n")
        self.log.flush()

    def flush(self) -> None:
        super().flush()
        self.log.flush()


class _Capture(_PassOn):
    """Collects what a stage prints (to tell an up-to-date skip) while passing it on."""

    def __init__(self, stream: TextIO):
        super().__init__(stream)
        self.parts: list[str] = []

    def keep(self, text: str) -> None:
        self.parts.append(text)


def run_command(group: click.Group, stage: Stage) -> None:
    """One stage's command, in this process; a usage error or a failure names the stage."""
    command = group.commands[stage.command]
    capture = _Capture(sys.stdout)
    old = sys.stdout
    sys.stdout = capture  # click.echo writes to the sys.stdout of the moment
    t0 = time.perf_counter()
    try:
        command.main(list(stage.args), prog_name=f"liid {stage.command}", standalone_mode=False)
    except click.ClickException as e:
        raise LiidError(f"stage {stage.stage} (`liid {stage.command}`): {e.format_message()}") from None
    except LiidError as e:
        message = str(e)
        if "pass --overwrite" in message or "--resume to continue" in message:
            message += (f" [the run: `liid run ... --stages {stage.stage}: --overwrite` redoes this stage and "
                        f"the ones after it]")
        raise LiidError(f"stage {stage.stage} (`liid {stage.command}`): {message}") from None
    finally:
        sys.stdout = old
        stage.seconds = time.perf_counter() - t0
        stage.output_text = "".join(capture.parts)


def _with_overwrite(stage: Stage) -> list[str]:
    """The stage's arguments redoing its output: --overwrite in place of --resume."""
    return [a for a in stage.args if a != "--resume"] + ["--overwrite"]


def import_plugins(modules: Iterable[str]) -> None:
    """Import the config's RUN.PLUGINS (modules that register labelers or datasets)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure of a user's module becomes one line naming it
            raise LiidError(f"RUN.PLUGINS: cannot import {name!r}: {type(e).__name__}: {e}") from None


def run_pipeline(cfg: dict, schema: Schema, group: click.Group, *, stages: str | None = None,
                 overwrite: bool = False, dry_run: bool = False, config_source: str = "",
                 report: Callable[..., Path] | None = None) -> dict:
    """Run the config's stages (each skipping what is up to date); write config.yaml, run.log, metrics.json and
    the report. ``stages`` limits the run to some of them (``select_stages``); ``overwrite`` redoes them."""
    import_plugins(cfg["RUN"]["PLUGINS"])
    out = Path(cfg["RUN"]["OUTPUT_DIR"]).resolve()
    todo = plan(cfg, schema)
    names = [n for n in STAGE_ORDER if n == "report" or any(s.stage == n for s in todo)]
    chosen = select_stages(names, stages)
    if dry_run:
        for st in todo:
            click.echo(("  " if st.stage in chosen else "# ") + st.line())
        return {}
    check_inputs(out, run_inputs(cfg, out))  # before anything is written: OUT never holds the data it reads
    out.mkdir(parents=True, exist_ok=True)
    _write_config(out, cfg, config_source)
    with open(out / "run.log", "a") as log:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(old_out, log), Tee(old_err, log)
        try:
            click.echo(f"\n#### liid run {time.strftime('%Y-%m-%d %H:%M:%S')}: {out} "
                       f"(stages: {', '.join(n for n in names if n in chosen)})")
            t0 = time.perf_counter()
            done = []
            selected = [st for st in todo if st.stage in chosen]
            for i, st in enumerate(selected):
                click.echo(f"\n== [{i + 1}/{len(selected)}] {st.stage}: {st.title}")
                reason = st.when() if st.when else None
                if reason:
                    st.skipped_because = reason
                    click.echo(f"skipped: {reason}")
                    continue
                if overwrite:
                    st.args = _with_overwrite(st)
                click.echo(f"$ {st.line()}")
                sys.stdout.flush()
                run_command(group, st)
                done.append(st)
            metrics = collect_metrics(cfg, todo, time.perf_counter() - t0)
            if "report" in chosen and report is not None:
                click.echo(f"\n== report: {out / 'report.html'}")
                metrics["report"] = str(report(cfg, todo, metrics))
            metrics["seconds"] = round(time.perf_counter() - t0, 1)
            write_json(out / "metrics.json", metrics)
            for w in metrics["warnings"]:
                click.echo(f"warning: {w}", err=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = old_out, old_err
    return metrics


def run_inputs(cfg: dict, out: Path) -> list[Path]:
    """The user's data a run reads (datasets, their images folders, imported proposals, weights files) that exist."""
    values = [cfg["DATASET"][k] for k in ("TRAIN", "TRAIN_IMAGES", "TEST", "TEST_IMAGES")]
    values += [cfg["PROPOSALS"]["FROM"], cfg["LABELER"].get("MODEL"), cfg["LABELER"].get("SALIENCY")]
    values += [cfg[s].get("WEIGHTS") for s in ("CLS", "MIL", "MASKRCNN", "DEEPLAB")]
    found = []
    for v in values:
        if isinstance(v, str) and OUT_PLACEHOLDER not in v and TRAIN_PLACEHOLDER not in v and Path(v).exists():
            found.append(Path(v))
    return found


def _write_config(out: Path, cfg: dict, source: str) -> None:
    """OUT/config.yaml, the resolved config (never written over the file the run was started from)."""
    from liid.atomic import write_bytes

    file = out / "config.yaml"
    text = dump_config(cfg, header=f"The resolved config of this run (from {source or 'the defaults'}).\n"
                                   f"Rerun it: liid run --config-file {file}")
    if source and Path(source).resolve() == file.resolve():
        old = file.read_text()
        if old.split("\n", 2)[-1] != text.split("\n", 2)[-1]:
            raise LiidError(f"{file}: this run's own config with overrides; copy it to another name to change it")
        return
    write_bytes(file, text.encode())


# --------------------------------------------------------------------------------------- metrics and checks


def _read_json(file: Path) -> dict | None:
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect_metrics(cfg: dict, todo: list[Stage], seconds: float) -> dict:
    """``metrics.json``: each labeling's evaluation, the segmenter's, stage times, warnings, config, machine."""
    out = Path(cfg["RUN"]["OUTPUT_DIR"]).resolve()
    p = RunPaths(out)
    method = cfg["LABELER"]["METHOD"]
    m: dict[str, Any] = {"labelings": {}}
    for name in [method, *[b for b in cfg["LABELER"]["BASELINES"] if b != method]]:
        ev = _read_json(p.evaluation(name))
        if ev is None:
            continue
        entry = {k: v for part in ("instances", "semantic") for k, v in (ev.get(part) or {}).items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
        for iou, v in ((ev.get("instances") or {}).get("map_r") or {}).items():  # VOC mAP^r at 0.25 ... 0.75
            entry[f"map_r{round(float(iou) * 100)}"] = v
        m["labelings"][labeling_key(name)] = entry
        for k in ("ap", "ap50", "ap75", "abo", "miou"):
            if k in entry:
                m[f"{k}_{labeling_key(name)}"] = entry[k]
    seg = cfg["SEGMENTER"]["NAME"]
    if seg != "none":
        train = _read_json(p.segmenter(seg) / "train.json") or {}
        ev = (train.get("final") or {}).get("evaluation") or {}
        m["segmenter"] = {"name": seg, **{k: v for k, v in ev.items() if isinstance(v, int | float)}}
        for k in ("ap", "ap50", "ap75", "abo", "miou"):
            m[f"{seg}_{k}"] = ev.get(k)
    ran = [s for s in todo if s.seconds is not None]
    m["stages_up_to_date"] = [s.title for s in ran if s.up_to_date]
    m["stage_seconds"] = {s.title: round(s.seconds, 1) for s in ran}
    before = (_read_json(out / "metrics.json") or {}).get("work_seconds", {})
    m["work_seconds"] = {**before, **{s.title: before.get(s.title, round(s.seconds, 1)) if s.up_to_date
                                      else round(s.seconds, 1) for s in ran}}
    m["pipeline_seconds"] = round(sum(m["work_seconds"].values()), 1)
    m["warnings"] = run_warnings(cfg, p)
    m["config"] = cfg
    m["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    m["date"] = time.strftime("%Y-%m-%d")
    m["seconds"] = round(seconds, 1)
    return m


CLASSIFIER_MAP_WARN = 0.5  # a classifier below this train mAP gives CAMs that localise little
INSTANCES_PER_IMAGE_WARN = 0.25  # an export below this leaves most training images without any instance
PROPOSAL_ABO_WARN = 0.6  # MCG's top-100 ABO on VOC is about 0.7 (its paper); far below: the proposals miss objects


def run_warnings(cfg: dict, p: RunPaths) -> list[str]:
    """Where the run is likely useless, in words: a weak classifier, an export that keeps almost nothing,
    proposals that miss the objects."""
    warnings = []
    cls = _read_json(p.cls / "train.json") or {}
    final = cls.get("final") or {}
    m = final.get("train_map", final.get("map"))
    if isinstance(m, int | float) and m < CLASSIFIER_MAP_WARN:
        warnings.append(f"the classifier reaches train mAP {m:.3f} (below {CLASSIFIER_MAP_WARN}): its CAMs, and the "
                        f"MIL network's attention targets, carry little; more images per class or more epochs")
    method = cfg["LABELER"]["METHOD"]
    export = _read_json(p.labels(method) / "export.json") or {}
    n, images = export.get("instances"), export.get("images")
    if isinstance(n, int) and isinstance(images, int) and images and n / images < INSTANCES_PER_IMAGE_WARN:
        proposals = export.get("proposals") or export.get("rows")
        of = f" of {proposals:,} proposals" if isinstance(proposals, int) else ""
        warnings.append(f"the {method} export keeps {n:,} instances{of} in {images:,} images: most images get no "
                        f"pseudo-label (cut to background); the segmenter has little to learn from")
    ev = _read_json(p.proposals_eval) or {}
    abo = ev.get("abo_all")
    if isinstance(abo, int | float) and abo < PROPOSAL_ABO_WARN:
        warnings.append(f"the proposals' ABO is {abo:.3f} (MCG reaches about 0.7 on VOC): they miss the objects; "
                        f"import MCG/COB proposals (PROPOSALS.METHOD mcg-mat, PROPOSALS.FROM DIR)")
    return warnings
