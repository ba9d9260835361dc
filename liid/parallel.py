"""Run independent tasks serially, over local processes, or over a Ray cluster; results in task order.

Local processes come from ``liid.workers.process_pool``: they die with this process (a ``kill -9`` of a run
leaves no worker behind). On Ray, tasks are spread over the cluster's nodes; a task whose worker or node dies
is run again (``retries`` times, Ray's own retry of system failures); past that, or when a task raises, the run
stops with one line naming the task: a result is whole or there is none.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass

from liid.errors import LiidError
from liid.progress import progress as progress_bar
from liid.workers import process_pool

BACKENDS = ("serial", "process", "ray")


@dataclass(frozen=True)
class Backend:
    """Where tasks run: ``name`` (serial | process | ray), ``workers`` (processes, or a local Ray's CPUs),
    ``ray_address`` (an existing cluster), ``retries`` (Ray: reruns of a task whose worker died)."""

    name: str = "serial"
    workers: int = 1
    ray_address: str | None = None
    progress: bool = True
    retries: int = 3

    def map(self, fn: Callable, tasks: Sequence, args: tuple = (), desc: str = "tasks",
            weights: Sequence[float] | None = None) -> list:
        return run_tasks(fn, tasks, args, self.name, self.workers, self.ray_address, self.progress, desc, weights,
                         self.retries)


def _ray_failure(err: Exception, desc: str, i: int, n: int) -> Exception:
    """The one line for a task that failed on Ray: the task's own LiidError, or what happened to it."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, LiidError):
        return cause
    what = str(cause if cause is not None else err).strip().splitlines()
    return LiidError(f"{desc}: task {i + 1} of {n} failed on the Ray cluster ({type(err).__name__}: "
                     f"{what[0] if what else 'no message'}); nothing was written, rerun to retry")


def _reachable(address: str, timeout: float = 10.0) -> str | None:
    """Why ``host:port`` cannot be reached over TCP, or None (ray.init would retry a dead address forever)."""
    import socket  # noqa: PLC0415

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None  # "auto", "ray://...": left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def _ray_init(ray, address: str | None, workers: int) -> None:
    why = _reachable(address) if address else None
    if why is not None:
        raise LiidError(f"--ray-address {address}: cannot join the Ray cluster ({why}); start it with "
                        "`ray start --head`, or leave --ray-address out for a local Ray")
    # "local": a new Ray of this process, even where `ray start` left a cluster that ray.init() would join
    kw = {"address": address} if address else {"address": "local", "num_cpus": max(workers, 1)}
    try:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kw)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:
        first = str(e).strip().splitlines()
        raise LiidError(f"--ray-address {address}: cannot join the Ray cluster ({first[0] if first else e}); "
                        "a cluster with token authentication needs RAY_AUTH_MODE=token and its token "
                        "(RAY_AUTH_TOKEN or ~/.ray/auth_token) here too") from None


def run_tasks(fn: Callable, tasks: Sequence, args: tuple = (), backend: str = "serial", workers: int = 1,
              ray_address: str | None = None, progress: bool = True, desc: str = "tasks",
              weights: Sequence[float] | None = None, retries: int = 3) -> list:
    """``[fn(t, *args) for t in tasks]``, possibly in parallel. ``weights`` orders submission (largest
    first, for load balance); the returned list is always in task order, so results never depend on it."""
    results: list = [None] * len(tasks)
    bar = progress_bar(total=len(tasks), desc=desc, unit="task", enabled=progress, leave=False)
    for i, r in iter_tasks(fn, tasks, args, backend, workers, ray_address, desc, weights, retries):
        results[i] = r
        bar.update(1)
    bar.close()
    return results


def iter_tasks(fn: Callable, tasks: Sequence, args: tuple = (), backend: str = "serial", workers: int = 1,
               ray_address: str | None = None, desc: str = "tasks", weights: Sequence[float] | None = None,
               retries: int = 3, window: int | None = None, ray_options: dict | None = None
               ) -> Iterator[tuple[int, object]]:
    """``(i, fn(tasks[i], *args))`` as each task finishes (completion order). At most ``window`` tasks are
    submitted and unfinished at a time (default: all of them on local processes, 4 per CPU of a Ray cluster,
    so that 10^5 per-image tasks do not all wait in its queue at once). The first failure cancels the rest
    and raises (on Ray: one line naming the task). ``ray_options``: more options of each Ray task
    (``{"num_gpus": 1}``). Close the iterator when stopping early, so that pending tasks are cancelled."""
    n = len(tasks)
    order = sorted(range(n), key=lambda i: -weights[i]) if weights is not None else list(range(n))
    if backend == "serial" or (backend == "process" and workers <= 1):
        for i in order:
            yield i, fn(tasks[i], *args)
    elif backend == "process":
        with process_pool(workers) as ex:
            todo = iter(order)
            futures = {ex.submit(fn, tasks[i], *args): i for i in itertools.islice(todo, max(1, window or n))}
            try:
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for fut in done:
                        i = futures.pop(fut)
                        yield i, fut.result()
                        for j in itertools.islice(todo, 1):
                            futures[ex.submit(fn, tasks[j], *args)] = j
            finally:
                for fut in futures:
                    fut.cancel()
    elif backend == "ray":
        yield from _iter_ray(fn, tasks, args, order, ray_address, workers, desc, retries, window, ray_options or {})
    else:
        raise LiidError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _iter_ray(fn: Callable, tasks: Sequence, args: tuple, order: list[int], ray_address: str | None, workers: int,
              desc: str, retries: int, window: int | None, options: dict) -> Iterator[tuple[int, object]]:
    """``iter_tasks`` on Ray: tasks spread over the nodes, a dead worker's task retried ``retries`` times."""
    try:
        import ray  # noqa: PLC0415
    except ImportError:
        raise LiidError("--backend ray needs Ray: pip install 'liid[ray]'") from None
    n = len(tasks)
    started = not ray.is_initialized()
    if started:
        _ray_init(ray, ray_address, workers)
    refs: dict = {}
    try:
        remote = ray.remote(max_retries=retries, scheduling_strategy="SPREAD", **options)(fn)
        shared = [ray.put(a) for a in args]  # once in the object store, not once per task
        todo = iter(order)
        window = window or max(1, 4 * int(ray.cluster_resources().get("CPU", 1)))
        refs = {remote.remote(tasks[i], *shared): i for i in itertools.islice(todo, window)}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                i = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise _ray_failure(e, desc, i, n) from None
                yield i, result
                for j in itertools.islice(todo, 1):
                    refs[remote.remote(tasks[j], *shared)] = j
    finally:
        for other in refs:
            ray.cancel(other, force=True)
        if started:
            ray.shutdown()
