"""Shared rule of every stage: skip when the output is there and was made from the same inputs and
config; refuse (without --overwrite) when it is there but differs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from liid.atomic import check_complete, check_output, exists
from liid.errors import LiidError
from liid.fingerprint import fingerprint


def up_to_date(out: Path, record_file: str, key: str, expected: dict, overwrite: bool) -> bool:
    """True if ``out/record_file[key]`` equals ``expected`` and every file of ``out`` is whole (then the stage
    is skipped); a skip never trusts a folder whose files are not the sizes they were written with."""
    if not exists(out):
        return False
    if overwrite:
        check_output(out, overwrite=True)  # before any work: --overwrite replaces only what this toolkit wrote
        return False
    try:
        recorded = json.loads((out / record_file).read_text()).get(key)
    except (OSError, json.JSONDecodeError):
        recorded = None
    if recorded == json.loads(json.dumps(expected)):
        check_complete(out)
        click.echo(f"{out}: up to date (same inputs and settings), skipping; --overwrite to redo")
        return True
    raise LiidError(f"{out}: output exists (made from other inputs or settings); pass --overwrite to replace it")


def input_fingerprints(*paths: Path) -> list[str | None]:
    """Fingerprints of a stage's input files/folders (None for one that is missing: the stage's own
    reader then names it), for its recorded ``inputs``."""
    return [fingerprint(p) if Path(p).exists() else None for p in paths]
