"""One rule for every command, applied where the commands are registered: an output (``--out``, ``--json``)
is never one of the command's inputs, nor inside one, nor around one, whatever ``--overwrite`` says.

The inputs are read from the command's own parameters (every path-typed one that is not an output, the
DATASET, a saliency folder) so that a new command cannot forget the rule; a COCO JSON brings the images
folders it may read. ``liid proposals VOC_ROOT --out VOC_ROOT --overwrite`` is refused before anything is read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import click

OUTPUTS = ("out", "json_file")  # the parameter names that name what a command writes
STRING_INPUTS = ("dataset", "saliency")  # path-or-name parameters: inputs when they name an existing path


def _as_paths(value: object) -> Iterator[Path]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _as_paths(v)
    elif isinstance(value, (str, Path)) and str(value):
        yield Path(value)


def command_inputs(command: click.Command, params: dict) -> list[Path]:
    """The paths ``command`` reads, from its parameter values."""
    found: list[Path] = []
    for p in command.params:
        if p.name in OUTPUTS or params.get(p.name) is None:
            continue
        if isinstance(p.type, click.Path):
            found += _as_paths(params[p.name])
        elif p.name in STRING_INPUTS:
            found += [q for q in _as_paths(params[p.name]) if q.exists()]
    for q in list(found):
        if q.suffix == ".json" and q.is_file():  # a COCO JSON: the images beside it are read too
            from liid.datasets.coco import images_dir_candidates

            found += [d for d in images_dir_candidates(q) if d.is_dir()]
    return found


def guarded(command: click.Command) -> click.Command:
    """Wrap ``command``'s callback with the output/input rule (idempotent)."""
    callback: Callable | None = command.callback
    if callback is None or getattr(callback, "_liid_guarded", False):
        return command

    @functools.wraps(callback)
    def run(**params):
        inputs = command_inputs(command, params)
        from liid.atomic import check_inputs  # here: `liid --version` imports no numpy

        for name in OUTPUTS:
            if params.get(name) is not None:
                check_inputs(params[name], inputs)
        return callback(**params)

    run._liid_guarded = True  # type: ignore[attr-defined]
    command.callback = run
    return command


def guard_all(group: click.Group) -> None:
    """Apply ``guarded`` to every command of ``group`` (and its sub-groups)."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            guard_all(cmd)
        else:
            guarded(cmd)
