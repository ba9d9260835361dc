"""Pool workers die with their parent, and a run's work folder is locked: a ``kill -9`` of ``liid proposals
--workers 2`` leaves no process behind, a second run on the same output is refused while the first holds the
lock (also when only a worker of it survives), and a rerun after the first died resumes it to the same store
as an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from liid.cli import main
from liid.errors import LiidError
from liid.proposals.store import read_proposal_index
from liid.workers import LOCK_NAME, process_pool, run_lock

LINUX = sys.platform.startswith("linux")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# ``liid proposals D --out P --workers 2`` through the library call the command makes (same settings, so the
# CLI resumes it), without importing every command: the run starts in well under a second.
PROPOSALS = textwrap.dedent("""
    import sys
    from liid.datasets import open_dataset
    from liid.proposals.generate import generate_proposal_store
    generate_proposal_store(open_dataset(sys.argv[1]), sys.argv[2], workers=2, progress=False)
""")
SIZE = 96  # small images: selective search takes a fraction of a second each
IMAGES = 12  # enough for the kill to land mid-run


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def wait_for(pred: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``pred`` until it is truthy (returned); fail after ``timeout`` s, or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the run exited ({proc.returncode}) before {what}: {err}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie waiting for a reaper counts as dead)."""
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def workers_of(pid: int) -> list[psutil.Process]:
    """The multiprocessing (spawn) workers among ``pid``'s children."""
    try:
        children = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for c in children:
        try:
            if "--multiprocessing-fork" in c.cmdline():
                out.append(c)
        except psutil.Error:
            pass
    return out


def kill_all(procs: list) -> None:
    """SIGKILL the processes this test started (by pid), ignoring those already gone."""
    for p in procs:
        try:
            p.kill()
        except (psutil.Error, ProcessLookupError, OSError):
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except Exception:  # noqa: BLE001 - cleanup: a psutil timeout or an already reaped child
            pass


def images_done(partial: Path) -> list[str]:
    return sorted(p.name for p in (partial / "images").glob("*.json")) if (partial / "images").is_dir() else []


def store_files(path: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((path / "images").iterdir())}
    files["index.images"] = json.dumps(read_proposal_index(path)).encode()
    return files


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small synthetic VOC root (its train split is what ``liid proposals`` reads)."""
    d = tmp_path_factory.mktemp("worker_death") / "D"
    res = invoke("make-synthetic", "--out", d, "--images", IMAGES, "--size", SIZE)
    assert res.exit_code == 0, res.output
    return d


def start_proposals(dataset: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROPOSALS, str(dataset), str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def proposals_run(dataset: Path, out: Path):
    """A ``liid proposals`` run in its own process; yields it and the list of processes to SIGKILL at the end
    (a test adds the workers it finds), so nothing it started outlives the test."""
    run = start_proposals(dataset, out)
    started: list = [run]
    try:
        yield run, started
    finally:
        kill_all(started)


# ----------------------------------------------------------------------------------------------- the tests


def test_kill_9_leaves_no_worker_and_a_rerun_resumes(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "P"
    partial = tmp_path / "P.partial"
    with proposals_run(dataset, out) as (run, started):
        wait_for(lambda: len(workers_of(run.pid)) == 2 and images_done(partial), 60, "two workers at work", run)
        family = psutil.Process(run.pid).children(recursive=True)  # the workers and the resource tracker
        started += family
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        t0 = time.monotonic()
        wait_for(lambda: not running(family), 10, "the workers to die with their parent")
        assert time.monotonic() - t0 < 5
        done = images_done(partial)
        time.sleep(0.3)
        assert images_done(partial) == done  # nobody writes there any more

    train = len((dataset / "ImageSets/Segmentation/train.txt").read_text().split())
    assert not out.exists() and 0 < len(done) < train
    res = invoke("proposals", dataset, "--out", out)  # the rerun's own pool is not the point: serial is quicker
    assert res.exit_code == 0, (res.output, repr(res.exception))
    assert f"{len(done)} of {train} images already done, reused" in res.output
    assert not partial.exists()
    ref = invoke("proposals", dataset, "--out", tmp_path / "ref", "--workers", 1)
    assert ref.exit_code == 0, ref.output
    assert store_files(out) == store_files(tmp_path / "ref")


def test_second_run_is_refused_while_the_first_holds_the_lock(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "P"
    partial = tmp_path / "P.partial"
    with proposals_run(dataset, out) as (run, started):
        wait_for(lambda: images_done(partial), 60, "the first image", run)
        settings = (partial / "settings.json").read_bytes()
        before = set(images_done(partial))
        for extra in ((), ("--overwrite",)):
            res = invoke("proposals", dataset, "--out", out, "--workers", 2, *extra)
            assert res.exit_code == 2, res.output
            err = res.stderr.strip()
            assert err.startswith("error: ") and "\n" not in err, res.stderr
            assert str(partial) in err and f"pid {run.pid}" in err and "in use by another run" in err, err
        assert not out.exists()
        assert (partial / "settings.json").read_bytes() == settings
        assert before <= set(images_done(partial))  # --overwrite cleared nothing
        started += psutil.Process(run.pid).children(recursive=True)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        wait_for(lambda: not running(started[1:]), 10, "the workers to die with their parent")
    with run_lock(partial) as lock:  # the dead run's lock file does not block
        assert lock.path.read_text() == f"{os.getpid()}\n"


def test_a_surviving_worker_keeps_the_lock(tmp_path: Path) -> None:
    folder = tmp_path / "P.partial"
    with run_lock(folder) as lock:
        pool = process_pool(1, hold=lock)
        try:
            worker = pool.submit(os.getpid).result(timeout=60)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
    try:  # the parent's hold is gone (as if it had died); the worker's is not
        assert (folder / LOCK_NAME).exists()
        with pytest.raises(LiidError, match=rf"P\.partial: in use by another run \(pid {worker}\)"), run_lock(folder):
            pass
    finally:
        pool.shutdown()
    with run_lock(folder):
        pass
    assert not folder.exists()  # only the lock file was there: removed with the last holder


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "P.partial"
    folder.mkdir()
    (folder / LOCK_NAME).write_text("999999999\n")
    (folder / "settings.json").write_text("{}")
    with run_lock(folder) as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    assert (folder / "settings.json").exists()  # a folder with a run in it stays


# Evaluated in a worker (``eval`` pickles by name, so the worker imports nothing more): its parent-death signal.
DEATH_SIGNAL = ("(lambda c, s: (c.CDLL(None).prctl(2, c.byref(s), 0, 0, 0), s.value)[1])"  # 2: PR_GET_PDEATHSIG
                "(__import__('ctypes'), __import__('ctypes').c_int(0))")


@pytest.mark.skipif(not LINUX, reason="prctl is Linux's")
def test_the_death_signal_is_armed_only_from_the_main_thread() -> None:
    with process_pool(1) as pool:
        assert pool.submit(eval, DEATH_SIGNAL).result(timeout=60) == signal.SIGKILL
    got: list[int] = []
    with process_pool(1) as pool:  # spawned from another thread: its exit must not kill the worker
        t = threading.Thread(target=lambda: got.append(pool.submit(eval, DEATH_SIGNAL).result(timeout=60)))
        t.start()
        t.join()
        assert got == [0]
        assert pool.submit(os.getpid).result(timeout=10) > 0  # still alive after that thread ended


DRIVER = textwrap.dedent("""
    import os, sys, threading, time
    from liid.workers import process_pool
    pool = process_pool(1)
    pids = []
    t = threading.Thread(target=lambda: pids.append(pool.submit(os.getpid).result()))
    t.start()
    t.join()
    print(pids[0], flush=True)
    time.sleep(60)
""")


def test_the_watcher_kills_a_worker_without_the_death_signal() -> None:
    """Spawned from a non-main thread, the worker has no death signal: the parent watcher ends it."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=ENV, stdout=subprocess.PIPE, text=True)
    started: list = [driver]
    try:
        line = driver.stdout.readline()
        assert line.strip().isdigit(), line
        worker = psutil.Process(int(line))
        started.append(worker)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        wait_for(lambda: not running([worker]), 10, "the watcher to end the worker")
    finally:
        kill_all(started)
