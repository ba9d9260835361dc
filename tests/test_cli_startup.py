"""Start-up of the command line: `liid --version` and `liid --help` import no heavy library (a command's module is
imported when the command is used), and the command list they print is the commands' own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from liid import cli

HEAVY = ("torch", "torchvision", "timm", "numpy", "faiss", "cv2", "scipy", "highspy", "pycocotools", "matplotlib")

PROBE = """
import json, sys
from liid.cli import main
try:
    main({args!r}, prog_name="liid")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_version_and_help_import_no_heavy_library(args):
    """In a fresh interpreter, as a user's shell runs it."""
    r = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True, text=True,
                       check=True)
    imported = json.loads(r.stdout.strip().splitlines()[-1])
    assert imported == [], f"liid {' '.join(args)} imported {imported}"


def test_a_command_imports_only_what_it_needs():
    """`liid build-graph --help` loads the graph code (numpy, faiss) but no torch."""
    probe = PROBE.format(args=["build-graph", "--help"], heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    imported = json.loads(r.stdout.strip().splitlines()[-1])
    assert "torch" not in imported and "numpy" in imported


def test_the_lazy_command_list_is_the_commands_own(monkeypatch):
    """`liid --help` from the table (nothing imported) prints what it prints with every command loaded."""
    lazy = cli.LazyCommands(cli.COMMANDS)
    monkeypatch.setattr(cli.main, "commands", lazy)
    before = CliRunner().invoke(cli.main, ["--help"], terminal_width=200).output
    assert not lazy.loaded
    for name in lazy:
        command = lazy[name]
        assert command.name == name, name  # the table names each command as the command names itself
    after = CliRunner().invoke(cli.main, ["--help"], terminal_width=200).output
    assert before == after
    narrow = CliRunner().invoke(cli.main, ["--help"], terminal_width=60).output
    monkeypatch.setattr(cli.main, "commands", cli.LazyCommands(cli.COMMANDS))
    assert CliRunner().invoke(cli.main, ["--help"], terminal_width=60).output == narrow


def test_every_loaded_command_gets_the_shared_rules():
    """A command loaded lazily refuses NaN and has the output/input guard, as the eager registration did."""
    from liid.commands.options import is_finite_type

    for name in cli.main.commands:
        command = cli.main.commands[name]
        assert getattr(command.callback, "_liid_guarded", False), name
        assert all(is_finite_type(p.type) for p in command.params), name
