"""Helpers shared by the CLI tests: run ``liid`` in-process and check the one-line error rule."""

from __future__ import annotations

from click.testing import CliRunner

from liid.cli import main


def invoke(*args):
    """Run ``liid ARGS...`` in-process; str() every argument so paths can be passed as they are."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res, *words: str) -> None:
    """A failed run that printed exactly one ``error: ...`` line containing every word, and no traceback."""
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w in err, err
