"""Run independent tasks serially, over local processes, or over a Ray cluster; results in task order.

Local processes come from ``liid.workers.process_pool``: they die with this process (a ``kill -9`` of a run
leaves no worker behind).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import as_completed

from liid.errors import LiidError
from liid.progress import progress as progress_bar
from liid.workers import process_pool

BACKENDS = ("serial", "process", "ray")


def run_tasks(fn: Callable, tasks: Sequence, args: tuple = (), backend: str = "serial", workers: int = 1,
              ray_address: str | None = None, progress: bool = True, desc: str = "tasks",
              weights: Sequence[float] | None = None) -> list:
    """``[fn(t, *args) for t in tasks]``, possibly in parallel. ``weights`` orders submission (largest
    first, for load balance); the returned list is always in task order, so results never depend on it."""
    n = len(tasks)
    order = sorted(range(n), key=lambda i: -weights[i]) if weights is not None else list(range(n))
    results: list = [None] * n
    bar = progress_bar(total=n, desc=desc, unit="task", enabled=progress, leave=False)
    if backend == "serial" or (backend == "process" and workers <= 1):
        for i in order:
            results[i] = fn(tasks[i], *args)
            bar.update(1)
    elif backend == "process":
        with process_pool(workers) as ex:
            futures = {ex.submit(fn, tasks[i], *args): i for i in order}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    elif backend == "ray":
        try:
            import ray  # noqa: PLC0415
        except ImportError:
            raise LiidError("--backend ray needs Ray: pip install 'liid[ray]'") from None
        started = not ray.is_initialized()
        if started:
            kw = {"address": ray_address} if ray_address else {"num_cpus": max(workers, 1)}
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kw)
        try:
            remote = ray.remote(fn)
            refs = {remote.remote(tasks[i], *args): i for i in order}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[refs[ref]] = ray.get(ref)
                    bar.update(1)
        finally:
            if started:
                ray.shutdown()
    else:
        raise LiidError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    bar.close()
    return results
