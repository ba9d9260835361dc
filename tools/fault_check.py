"""Fault injection over the whole pipeline: every stage killed, starved of disk, and fed a corrupt input.

    python tools/fault_check.py --work /tmp/fault_check            # about 15 minutes on 2 CPU cores
    python tools/fault_check.py --work W --stages solve-cut,export --json W/result.json

A small synthetic set (12 images of 64 px) runs through every stage once (the reference). Then, for each stage:
- kill: the stage is started again with its output moved aside, killed with SIGKILL (the main process only,
  as `kill -9 PID` does) at a random point of its reference duration; no process of it may survive, the output
  may not exist or must be whole, and the rerun (``--resume`` for trainers) must give the reference's result;
- disk: the stage runs under a file-size limit (``ulimit -f``) below its largest output file: a one-line
  ``error:``, exit 2, no traceback, no temporary left, nothing under the final name but whole files; then the
  rerun without the limit gives the reference's result;
- corrupt: one of its input files is cut to half its size: a one-line ``error:`` naming that file (or its
  folder), exit 2, no output.

One line per case, then a JSON object with ``cases``, ``good``, ``bad`` (and each case) on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VOLATILE = ("second", "time", "date", "written", "elapsed", "per_s", "pid", "started", "reused", "inputs", "source",
            "fingerprint")  # run-to-run fields, and provenance (fingerprints of inputs whose records hold times)


@dataclass
class Stage:
    name: str
    args: list[str]  # the liid arguments, paths relative to the work folder
    out: str  # what it writes (relative)
    reads: list[str]  # glob patterns (relative) of the input files the stage reads: candidates to corrupt
    trainer: bool = False
    skips_unreadable: bool = False  # its documented rule: an unreadable image is skipped, named and recorded


def stages() -> list[Stage]:
    syn = ["data/JPEGImages/*.jpg"]
    return [
        Stage("make-synthetic", ["make-synthetic", "--out", "data", "--images", "12", "--size", "64"], "data", []),
        Stage("proposals", ["proposals", "data", "--out", "props", "--workers", "2"], "props", syn,
              skips_unreadable=True),
        Stage("filter-proposals", ["filter-proposals", "props", "--out", "top", "--top", "8"], "top",
              ["props/images/*.json", "props/index.json"]),
        Stage("train-cls", ["train-cls", "data", "--out", "cls", "--size", "64", "--epochs", "3", "--batch-size",
                            "4"], "cls", syn, trainer=True),
        Stage("train-mil", ["train-mil", "data", "--proposals", "top", "--cams", "cls", "--out", "mil", "--size",
                            "64", "--epochs", "3", "--weights", "cls/checkpoint.pt"], "mil",
              ["top/images/*.json", "cls/checkpoint.pt"], trainer=True),
        Stage("extract", ["extract", "data", "--proposals", "top", "--mil", "mil", "--out", "store"], "store",
              ["top/images/*.json", "mil/checkpoint.pt"]),
        Stage("build-graph", ["build-graph", "store", "--out", "graph"], "graph", ["store/*.npy", "store/store.json"]),
        Stage("solve-cut", ["solve-cut", "--graph", "graph", "--out", "cut", "--workers", "2", "--quiet"], "cut",
              ["graph/*.npy", "graph/graph.json"]),
        Stage("export", ["export", "cut", "--proposals", "top", "--out", "labels"], "labels",
              ["cut/labels.npy", "top/images/*.json"]),
        Stage("label oracle", ["label", "--method", "oracle", "--dataset", "data", "--proposals", "top", "--out",
                               "oracle"], "oracle", ["data/SegmentationObject/*.png", "top/images/*.json"]),
        Stage("evaluate", ["evaluate", "data", "labels", "--json", "eval.json"], "eval.json",
              ["labels/instances.json", "data/SegmentationObject/*.png"]),
    ]


def liid(work: Path, args: list[str], limit: int | None = None, popen: bool = False):
    """Run ``liid ARGS`` in ``work`` (one thread per process, as a busy 2-core machine would)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "liid.cli", *args]

    def pre():
        os.setsid()  # its own session: the check for survivors looks at exactly its processes
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    if popen:
        return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=pre)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, preexec_fn=pre, timeout=1800)


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (from /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(d.name))
    return found


def _clean(obj):
    """A record without the fields that change from run to run (times, dates, pids)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not any(w in k.lower() for w in VOLATILE)}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return _clean(json.loads(a.read_text())) == _clean(json.loads(b.read_text()))
    if a.suffix == ".jsonl":
        return [_clean(json.loads(x)) for x in a.read_text().splitlines()] == \
            [_clean(json.loads(x)) for x in b.read_text().splitlines()]
    if a.suffix == ".pt":
        import torch

        x, y = (torch.load(f, map_location="cpu", weights_only=False)["model"] for f in (a, b))
        return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    if a.suffix == ".png" and a.name == "loss.png":
        return True  # a drawing of log.jsonl, compared above
    return a.read_bytes() == b.read_bytes()


def same_output(a: Path, b: Path) -> str | None:
    """None when ``a`` holds what ``b`` holds (volatile record fields aside), else the first difference."""
    if a.is_file() or b.is_file():
        return None if a.is_file() and b.is_file() and _same_file(a, b) else f"{a.name} differs"
    names = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != ".liid.json"}
    ref = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".liid.json"}
    if names != ref:
        return f"files differ: {sorted(map(str, names ^ ref))[:3]}"
    for n in sorted(names):
        if not _same_file(a / n, b / n):
            return f"{n} differs"
    return None


def whole(out: Path) -> str | None:
    """None when every file under ``out`` is whole (the toolkit's own check, and trainers' checkpoints load)."""
    if not out.exists():
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from liid.atomic import MARKER, check_complete
    from liid.errors import LiidError

    try:
        if out.is_dir() and (out / MARKER).is_file():
            check_complete(out)
        ckpt = out / "checkpoint.pt"
        if ckpt.is_file():
            from liid.models.checkpoint import read_checkpoint

            read_checkpoint(ckpt)
    except LiidError as e:
        return str(e)
    return None


def leftovers(work: Path, out: str) -> list[str]:
    o = work / out
    found = [*o.parent.glob(o.name + ".tmp-*"), *o.parent.glob(o.name + ".old-*")]
    if o.is_dir():
        found += o.rglob("*.tmp-*")
    return [str(p.relative_to(work)) for p in found]


def one_error_line(r) -> str | None:
    """None when a run failed the way the toolkit promises: exit 2, last stderr line ``error: ...``, no traceback."""
    err = [x for x in r.stderr.splitlines() if x.strip() and "\r" not in x]
    if r.returncode != 2:
        return f"exit {r.returncode}: {(err or ['(no stderr)'])[-1][:160]}"
    if "Traceback" in r.stderr:
        return "traceback: " + err[-1][:160]
    if not err or not err[-1].startswith("error: "):
        return f"no 'error:' line: {(err or [''])[-1][:160]}"
    return None


class Checker:
    def __init__(self, work: Path, rng: random.Random):
        self.work, self.rng, self.results = work, rng, []
        self.seconds: dict[str, float] = {}

    def report(self, stage: Stage, case: str, problem: str | None, what: str) -> None:
        good = problem is None
        self.results.append({"stage": stage.name, "case": case, "good": good, "detail": problem or what})
        print(f"[{'good' if good else 'BAD '}] {case:7s} {stage.name:16s} {problem or what}", flush=True)

    def reference(self, todo: list[Stage]) -> None:
        for st in todo:
            t0 = time.perf_counter()
            r = liid(self.work, st.args)
            self.seconds[st.name] = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"reference run of {st.name} failed:\n{r.stderr[-2000:]}")
            shutil.copytree(self.work / st.out, self.work / "ref" / st.out) if (self.work / st.out).is_dir() \
                else shutil.copy2(self.work / st.out, self.work / "ref" / st.out)
            print(f"reference {st.name}: {self.seconds[st.name]:.1f} s", flush=True)

    def _aside(self, st: Stage) -> None:
        for p in (self.work / st.out, self.work / (st.out + ".partial")):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _rerun(self, st: Stage) -> str | None:
        r = liid(self.work, st.args + (["--resume"] if st.trainer else []))
        if r.returncode != 0:
            return f"rerun failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}"
        return same_output(self.work / st.out, self.work / "ref" / st.out)

    def kill(self, st: Stage) -> None:
        self._aside(st)
        at = self.rng.uniform(0.3, 0.8) * self.seconds[st.name]
        p = liid(self.work, st.args, popen=True)
        time.sleep(at)
        pids = session_pids(p.pid)
        if p.poll() is not None:  # it finished first: no kill to check, say so
            p.communicate()
            return self.report(st, "kill", f"finished before the kill at {at:.1f} s; lower the kill point", "")
        p.send_signal(signal.SIGKILL)
        p.communicate()
        deadline = time.time() + 15
        while session_pids(p.pid) and time.time() < deadline:
            time.sleep(0.2)
        alive = session_pids(p.pid)
        if alive:
            for q in alive:
                os.kill(q, signal.SIGKILL)
            return self.report(st, "kill", f"{len(alive)} of {len(pids)} processes survived their parent", "")
        broken = whole(self.work / st.out)
        problem = broken or self._rerun(st)
        if broken:
            self._aside(st)
            self._rerun(st)
        left = leftovers(self.work, st.out)
        problem = problem or (f"temporaries left after the rerun: {left[:3]}" if left else None)
        self.report(st, "kill", problem, f"killed at {at:.1f} s ({len(pids)} processes, none survived); "
                                         "the rerun gives the reference's output")

    def disk(self, st: Stage) -> None:
        self._aside(st)
        ref = self.work / "ref" / st.out
        largest = max((f.stat().st_size for f in ref.rglob("*") if f.is_file()), default=0) if ref.is_dir() \
            else ref.stat().st_size
        limit = max(512, int(largest * self.rng.uniform(0.05, 0.9)))
        r = liid(self.work, st.args, limit=limit)
        problem = one_error_line(r)
        if problem is None and (self.work / st.out).exists() and not st.trainer and st.name != "proposals":
            problem = "an output exists after the failed run"
        problem = problem or whole(self.work / st.out)
        left = leftovers(self.work, st.out)
        problem = problem or (f"temporaries left: {left[:3]}" if left else None)
        if problem is not None:
            self._aside(st)
        problem = problem or self._rerun(st)
        if problem is not None:
            self._rerun(st)  # back to the reference state for the next stages
        self.report(st, "disk", problem, f"limit {limit:,} B: '{r.stderr.strip().splitlines()[-1][:90]}'; "
                                         "the rerun gives the reference's output" if problem is None else "")

    def corrupt(self, st: Stage) -> None:
        files = sorted(f for pat in st.reads for f in self.work.glob(pat) if f.is_file())
        if not files:
            return
        victim = self.rng.choice(files)
        backup = victim.read_bytes()
        self._aside(st)
        try:
            victim.write_bytes(backup[: len(backup) // 2])
            r = liid(self.work, st.args)
            rel = victim.relative_to(self.work)
            lines = r.stderr.strip().splitlines() or [""]
            last = lines[-1]
            if st.skips_unreadable and r.returncode == 0:
                # documented (liid proposals --help): an unreadable image is skipped, named on stderr, recorded
                said = [x for x in lines if "skipping image" in x and str(rel) in x]
                meta = json.loads((self.work / st.out / "index.json").read_text())["meta"]
                recorded = victim.stem in json.dumps(meta.get("skipped", meta))
                problem = None if said and recorded else f"skipped silently: {last[:120]}"
                last = (said or [last])[0]
            else:
                problem = one_error_line(r)
                if problem is None and victim.name not in last and victim.parent.name not in last:
                    problem = f"the error does not name {rel}: '{last[:120]}'"
                if problem is None and (self.work / st.out).exists() and not st.trainer:
                    problem = "an output was written from a corrupt input"
        finally:
            victim.write_bytes(backup)
        self._aside(st)
        restored = self._rerun(st)  # back to the reference state for the next stages, whatever happened
        self.report(st, "corrupt", problem or restored, f"{rel} cut to {len(backup) // 2:,} B: '{last[:90]}'")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="an empty or missing folder to work in")
    ap.add_argument("--stages", default=None, help="comma-separated stage names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the final JSON here")
    a = ap.parse_args(argv)
    if a.work.exists() and any(a.work.iterdir()):
        ap.error(f"{a.work}: not empty")
    (a.work / "ref").mkdir(parents=True, exist_ok=True)
    todo = stages()
    chk = Checker(a.work.resolve(), random.Random(a.seed))
    chk.reference(todo)
    wanted = set(a.stages.split(",")) if a.stages else {s.name for s in todo}
    for st in todo:
        if st.name in wanted:
            chk.kill(st)
            chk.disk(st)
            chk.corrupt(st)
    good = sum(r["good"] for r in chk.results)
    final = {"cases": len(chk.results), "good": good, "bad": len(chk.results) - good,
             "reference_seconds": {k: round(v, 1) for k, v in chk.seconds.items()}, "results": chk.results}
    if a.json:
        a.json.write_text(json.dumps(final, indent=1) + "\n")
    print(json.dumps(final))
    return 0 if final["bad"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
