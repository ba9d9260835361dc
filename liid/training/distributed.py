"""Data-parallel training over ``torchrun`` processes (torch.distributed: gloo on CPU, nccl on GPU).

A trainer started by ``torchrun --nproc-per-node W liid train-cls ...`` sees ``WORLD_SIZE`` = W in its
environment; :func:`init_world` joins the process group and returns the :class:`World`. Without torchrun the
world is one process and nothing here changes what a trainer computes.

The recipe is the single-process one with the same global batch (detectron2's ``IMS_PER_BATCH`` convention:
``--batch-size`` is the global batch): every rank draws the same seeded permutation of the epoch, cuts it into
the global batches a single process would see, and takes its own contiguous slice of each
(:meth:`World.epoch_batches`). Gradients are averaged by DistributedDataParallel; each rank's loss is scaled by
its share of the global batch first (``local_n * W / global_n``), so the update is the global batch mean's
even when the last batch does not split evenly. A rank whose slice of a short last batch is empty feeds one
item with weight 0 (DDP needs every rank in every step). The step's logged numbers are the global batch's
(:meth:`World.batch_mean`), so rank 0's log.jsonl is the single-process log within float tolerance.

Checkpoints, logs and records are written by rank 0 only (:meth:`World.on_main`); a checkpoint holds the bare
model, so a run resumes under any world size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from liid.errors import LiidError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run by rank 0 only, its result given to every rank; a LiidError it raises is raised on
        every rank with the same message (so each process ends with the one clear line, none hangs)."""
        if not self.distributed:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except LiidError as e:
                box[0] = ("error", str(e))
        torch.distributed.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise LiidError(value)
        return value

    def epoch_batches(self, n: int, batch_size: int, generator: torch.Generator,
                      drop_last: bool = False) -> list[tuple[list[int], int, int]]:
        """This rank's slice of each global batch of the epoch: ``(items, real items, global batch size)``.

        The global batches are exactly a single process's: those of ``DataLoader(range(n), batch_size,
        shuffle=True, generator=generator)`` (the same draws from the same generator). A rank's empty slice
        of a short batch is ``[first item of the batch]`` with 0 real items (its weight in :meth:`share`).
        """
        order = torch.utils.data.DataLoader(range(n), batch_size=batch_size, shuffle=True, generator=generator,
                                            drop_last=drop_last)
        out = []
        for batch in order:
            items = [int(i) for i in batch]
            part = np.array_split(np.asarray(items), self.size)[self.rank].tolist()
            out.append((part or items[:1], len(part), len(items)))
        return out

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in one process); tensors should be on the CPU."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, obj)
        return out

    def share(self, local: int, total: int) -> float:
        """Weight of a rank's mean loss over ``local`` of a global batch's ``total`` items, so that DDP's
        average of the ranks' gradients is the gradient of the global batch's mean (0 for a padding item)."""
        return local * self.size / total

    def batch_mean(self, values: dict[str, float], local: int, total: int) -> dict[str, float]:
        """The global batch's means of per-rank means ``values`` over ``local`` items each (one all-reduce)."""
        if not self.distributed:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] * local for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return {k: float(v) / total for k, v in zip(keys, t.tolist(), strict=True)}

    def replica(self, model: torch.nn.Module) -> Any:
        """What a step calls the model through: the model itself in one process; under several, an object whose
        methods (``net.raw_cams(x)``, ``net(x)``) run through DistributedDataParallel's forward, so its gradient
        hooks are armed whichever method the step uses."""
        if not self.distributed:
            return model
        return _Replica(model)


class _Dispatch(torch.nn.Module):
    """A module whose forward calls one named method of ``module``: DDP wraps this, not the model, because
    DDP arms its all-reduce only in its own forward and the trainers' steps call other methods too."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, method)(*args, **kwargs)


class _Replica:
    def __init__(self, model: torch.nn.Module):
        from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        self._ddp = DistributedDataParallel(_Dispatch(model), device_ids=ids)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._ddp("forward", *args, **kwargs)

    def __getattr__(self, name: str) -> Callable:
        return lambda *args, **kwargs: self._ddp(name, *args, **kwargs)


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The world torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process
    without it."""
    env = os.environ if env is None else env
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise LiidError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers, got {env.get('WORLD_SIZE')!r}/"
                        f"{env.get('RANK')!r}/{env.get('LOCAL_RANK')!r}") from None
    if size < 1 or not 0 <= rank < size:
        raise LiidError(f"RANK {rank} is not in a world of WORLD_SIZE {size}")
    return World(rank=rank, size=size, local_rank=local)


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join torchrun's process group (once per process) and return the world with this rank's device (its
    local GPU under several processes on CUDA)."""
    world = world_from_env()
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device
