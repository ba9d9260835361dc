"""liid.progress: a tqdm bar on a terminal, plain lines (per 10 %, at least a minute apart) in a log file."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from liid.errors import LiidError
from liid.progress import ENV, LinePrinter, progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_a_line_per_ten_percent_in_a_log():
    out, clock = io.StringIO(), FakeClock()
    seen = []
    for i in progress(range(100), desc="predict-maskrcnn", unit="img", stream=out, clock=clock):
        seen.append(i)
        clock.t += 0.5  # each image half a second
    assert seen == list(range(100))
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    # n = 10k after 5k seconds; ~(100 - n) / 2 seconds left; none at 100 %
    want = [f"predict-maskrcnn: {10 * k}/100 img ({10 * k} %), {5 * k:.1f} s, ~{(100 - 10 * k) / 2:.1f} s left"
            for k in range(1, 10)]
    assert lines == [*want, "predict-maskrcnn: 100/100 img (100 %), 50.0 s"]


def test_a_quick_loop_leaves_no_lines():
    out = io.StringIO()
    assert list(progress(range(100), desc="x", unit="img", stream=out, clock=FakeClock())) == list(range(100))
    assert out.getvalue() == ""  # all within the first 2 s


def test_lines_during_the_delay_are_skipped_not_postponed():
    out, clock = io.StringIO(), FakeClock()
    bar = progress(total=10, desc="x", unit="img", stream=out, clock=clock, delay=2.5)
    for _ in range(10):
        clock.t += 1.0
        bar.update(1)
    bar.close()
    # every item is 10 %: 1 s and 2 s are inside the delay, the rest print
    assert [ln.split(":")[1].split()[0] for ln in out.getvalue().splitlines()] == [f"{n}/10" for n in range(3, 11)]


def test_a_line_at_least_every_minute(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("liid.progress.time.monotonic", clock)  # the default clock
    out = io.StringIO()
    bar = progress(total=10, desc="train-mil 1/3", unit="img", every=0.5, stream=out)
    for _ in range(10):
        clock.t += 25.0
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # 75 s: over a minute since the start; 125 s: 50 %; 200 s: a minute after 125 s; 250 s: 100 %
    assert lines == ["train-mil 1/3: 3/10 img (30 %), 1 min 15 s, ~2 min 55 s left",
                     "train-mil 1/3: 5/10 img (50 %), 2 min 05 s, ~2 min 05 s left",
                     "train-mil 1/3: 8/10 img (80 %), 3 min 20 s, ~50.0 s left",
                     "train-mil 1/3: 10/10 img (100 %), 4 min 10 s"]


def test_batches_crossing_two_steps_print_once_and_postfix_is_shown():
    out, clock = io.StringIO(), FakeClock()
    with progress(total=100, desc="extract", unit="img", stream=out, clock=clock) as bar:
        clock.t += 10.0
        bar.update(25)  # 10 % and 20 % at once
        bar.set_postfix(loss=0.123456, lr="1.00e-03")
        clock.t += 30.0
        bar.update(75)
    assert out.getvalue().splitlines() == [
        "extract: 25/100 img (25 %), 10.0 s, ~30.0 s left",
        "extract: 100/100 img (100 %), 40.0 s, loss=0.1235, lr=1.00e-03"]


def test_initial_counts_but_the_rate_is_of_this_run():
    out, clock = io.StringIO(), FakeClock()
    with progress(total=100, initial=40, desc="proposals", unit="img", stream=out, clock=clock) as bar:
        for _ in range(60):
            clock.t += 1.0
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and lines[0] == "proposals: 50/100 img (50 %), 10.0 s, ~50.0 s left"
    assert lines[-1] == "proposals: 100/100 img (100 %), 1 min 00 s"


def test_unknown_total_lines_by_time_and_at_the_end():
    def items():  # no len()
        yield from range(150)

    out, clock = io.StringIO(), FakeClock()
    for _ in progress(items(), desc="read", unit="img", stream=out, clock=clock):
        clock.t += 1.0
    assert out.getvalue().splitlines() == ["read: 60 img, 1 min 00 s, 1 img/s",
                                           "read: 120 img, 2 min 00 s, 1 img/s",
                                           "read: 150 img, 2 min 30 s, 1 img/s"]


def test_total_zero_and_an_empty_loop():
    out, clock = io.StringIO(), FakeClock()
    bar = progress(total=0, desc="z", unit="img", stream=out, clock=clock)
    for _ in range(3):
        clock.t += 1.0
        bar.update(1)
    bar.close()
    assert out.getvalue() == "z: 3 img, 3.0 s, 1 img/s\n"  # an unknown total: the count at the end
    out = io.StringIO()
    assert list(progress([], desc="e", stream=out, clock=clock)) == []
    assert out.getvalue() == ""


def test_a_loop_left_early_or_an_error_prints_no_last_line():
    out, clock = io.StringIO(), FakeClock()
    for i in progress(iter(range(100)), desc="b", stream=out, clock=clock):
        clock.t += 1.0
        if i == 9:
            break
    with pytest.raises(RuntimeError), progress(desc="c", stream=out, clock=clock) as bar:
        clock.t += 5.0
        bar.update(3)
        raise RuntimeError
    assert out.getvalue() == ""


@pytest.mark.parametrize("how", ["env", "disabled"])
def test_off_prints_nothing(monkeypatch, how):
    out = FakeTTY()
    if how == "env":
        monkeypatch.setenv(ENV, "off")
        bar = progress(range(5), desc="x", stream=out)
    else:
        monkeypatch.setenv(ENV, "lines")
        bar = progress(range(5), desc="x", stream=out, enabled=False)
    assert list(bar) == list(range(5))
    with progress(total=5, desc="y", stream=out, enabled=how == "env") as hand:
        hand.update(5)
        hand.set_postfix(loss="1")
    assert out.getvalue() == ""


def test_mode_by_stream_and_forced_by_env(monkeypatch):
    bar = progress(total=3, desc="x", stream=FakeTTY())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    assert isinstance(progress(total=3, desc="x", stream=io.StringIO()), LinePrinter)
    monkeypatch.setenv(ENV, "lines")
    assert isinstance(progress(total=3, desc="x", stream=FakeTTY()), LinePrinter)
    monkeypatch.setenv(ENV, "BAR")
    bar = progress(total=3, desc="x", stream=io.StringIO())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    monkeypatch.setenv(ENV, "bars")
    with pytest.raises(LiidError, match="LIID_PROGRESS='bars'"):
        progress(total=3, desc="x", stream=io.StringIO())


def test_default_stream_is_stderr_at_the_call(capsys):
    clock = FakeClock()
    with progress(total=2, desc="s", unit="img", every=1.0, clock=clock) as bar:
        clock.t += 3.0
        bar.update(2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "s: 2/2 img (100 %), 3.0 s\n"
