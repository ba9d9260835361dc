"""Worker processes that die with their parent, and an exclusive lock on a run's work folder.

A ``kill -9`` of a run must not leave its pool workers behind (each holds a few hundred MB, and one can go
on writing into the work folder a rerun is using). ``process_pool`` makes a spawn-context
``ProcessPoolExecutor`` whose workers, in their initializer,

* ask Linux for ``SIGKILL`` when the parent dies (``prctl(PR_SET_PDEATHSIG)``). That signal follows the
  *thread* that spawned the worker, so it is armed only for workers spawned from the parent's main thread
  (which lives as long as the process); the executor's management thread, which respawns workers, ends
  before the process does;
* start a daemon thread that kills the worker once the parent is gone (its ``multiprocessing`` parent
  sentinel reaches EOF, or ``os.getppid()`` changes): the portable fallback, and the cover for workers
  spawned from other threads or for a parent that died before the signal was armed.

``run_lock`` holds ``fcntl.flock`` on ``FOLDER/.lock`` for a whole run; a second run is refused with a
one-line ``LiidError`` naming the folder and the pids holding it. ``process_pool(hold=lock)`` passes the
lock's open file to every worker, so a worker that outlived its parent still blocks a rerun. The kernel drops
the lock when its last holder exits: a lock file left by a dead run never blocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import reduction
from multiprocessing.connection import wait as wait_ready
from pathlib import Path
from typing import Any, NamedTuple

from liid.errors import LiidError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; runs are not guarded
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_SECONDS = 0.25  # how often the watcher re-checks os.getppid()


# --- the lock -----------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` names a process (a zombie counts; good enough for naming a lock's holders)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def lock_holders(path: Path) -> list[int]:
    """The live pids recorded in a lock file (the run, then its workers); [] when unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return []
    pids = [int(w) for w in text.split() if w.isdigit()]
    return [p for p in dict.fromkeys(pids) if p != os.getpid() and _alive(p)]


class RunLock:
    """An exclusive lock held on ``folder/.lock`` (``fd`` is its open file; None without ``fcntl``)."""

    def __init__(self, folder: Path, fd: int | None) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.fd = fd

    def inheritable(self) -> _InheritedFd | None:
        """A picklable handle that gives a spawned worker the same open file, hence a share of the lock."""
        return _InheritedFd(self.fd) if self.fd is not None else None


class _InheritedFd:
    """An fd that travels to a spawned process as the same open file description (``DupFd`` while spawning)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple:
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup: Any) -> int:
    """In the worker: the inherited fd's number."""
    return dup.detach()


def _try_lock(folder: Path) -> int:
    """Open and flock ``folder/.lock`` (created if need be), retrying when the file was replaced meanwhile (a
    finishing run removes its folder while it still holds the lock); a LiidError when another run holds it."""
    path = folder / LOCK_NAME
    while True:
        folder.mkdir(exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:  # the folder went away between mkdir and open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pids = lock_holders(path)
            who = f" (pid {', '.join(map(str, pids))})" if pids else ""
            raise LiidError(f"{folder}: in use by another run{who}; wait for it to end or stop it") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[RunLock]:
    """Hold the exclusive lock of the work folder ``folder`` (created if need be) for the block.

    Refuses at once, with a LiidError naming the folder and the holders' pids, when another run (or a worker
    that outlived it) holds it. On exit a folder left holding only the lock file is removed, unless a worker
    process of this one is still alive (it may share the lock: removing the file would let a rerun in).
    """
    folder = Path(folder)
    if fcntl is not None:
        fd: int | None = _try_lock(folder)
    else:
        folder.mkdir(exist_ok=True)
        fd = None
    try:
        yield RunLock(folder, fd)
    finally:
        try:
            if not multiprocessing.active_children() and os.listdir(folder) == [LOCK_NAME]:
                (folder / LOCK_NAME).unlink()
                folder.rmdir()
        except OSError:
            pass
        if fd is not None:
            os.close(fd)  # not LOCK_UN: that would release it for a worker still holding it too


# --- workers that die with their parent ---------------------------------------------------------------------


class ParentInfo(NamedTuple):
    """The parent as a worker sees it: its pid, and whether the spawning thread was its main thread."""

    pid: int
    main_thread: bool


class _Parent:
    """Pickled once per spawned worker, in the spawning thread: records which thread that is."""

    def __reduce__(self) -> tuple:
        return ParentInfo, (os.getpid(), threading.current_thread() is threading.main_thread())


def _die() -> None:
    """End this worker at once, as the death signal would: no cleanup, no finishing the task at hand."""
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def _arm_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parent_gone(parent_pid: int) -> bool:
    """POSIX: an orphan is re-parented, so ``getppid`` no longer names the parent."""
    return os.name == "posix" and os.getppid() != parent_pid


def _watch(parent_pid: int, sentinel: int | None) -> None:
    """Kill this worker once the parent is gone: its sentinel reaches EOF (confirmed by ``getppid`` on POSIX,
    where a sentinel closed for another reason is then dropped) or ``getppid`` changes."""
    while True:
        if sentinel is not None and wait_ready([sentinel], timeout=WATCH_SECONDS):
            if os.name != "posix":
                _die()
            deadline = time.monotonic() + 2.0  # the kernel closes a dying parent's files before reparenting
            while time.monotonic() < deadline and not _parent_gone(parent_pid):
                time.sleep(0.01)
            sentinel = None
        elif sentinel is None:
            time.sleep(WATCH_SECONDS)
        if _parent_gone(parent_pid):
            _die()


_HELD_FDS: list[int] = []  # the shared lock, kept open for the worker's lifetime


def _init_worker(parent: ParentInfo, held_fd: int | None, initializer: Callable | None, initargs: tuple) -> None:
    """Pool initializer: tie this worker's life to its parent, keep its share of the run lock, then the
    caller's initializer."""
    if parent.main_thread:
        _arm_death_signal()
    if _parent_gone(parent.pid):  # died before the signal was armed
        _die()
    proc = multiprocessing.parent_process()
    sentinel = proc.sentinel if proc is not None else None
    threading.Thread(target=_watch, args=(parent.pid, sentinel), name="liid-parent-watch", daemon=True).start()
    if held_fd is not None:
        _HELD_FDS.append(held_fd)
        with contextlib.suppress(OSError):
            os.write(held_fd, f"{os.getpid()}\n".encode())  # named by a refused rerun
    if initializer is not None:
        initializer(*initargs)


def process_pool(max_workers: int, initializer: Callable | None = None, initargs: tuple = (),
                 hold: RunLock | None = None) -> ProcessPoolExecutor:
    """A spawn-context ``ProcessPoolExecutor`` whose workers die with this process and, with ``hold``, share
    its run lock (module docstring)."""
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker,
                               initargs=(_Parent(), hold.inheritable() if hold is not None else None,
                                         initializer, initargs))
