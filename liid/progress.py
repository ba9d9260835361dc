"""Progress of the long loops, on a terminal and in a log file alike.

``progress(...)`` returns what the loops use of a tqdm bar (iteration, ``update``, ``set_postfix``,
``set_postfix_str``, ``close``, ``with``). On a terminal it is a tqdm bar; when the stream is not a terminal
(a log file, ``liid run``'s tee, CI), where tqdm would print nothing, it is a line printer: one plain line
(no carriage return) each time another ``every`` of the total is done, and at least every ``interval``
seconds, e.g. ``predict-maskrcnn: 40/100 img (40 %), 12.3 s, ~18 s left``. Nothing is printed during the
first ``delay`` seconds, so a loop that ends quickly leaves no lines. With an unknown total the lines come by
time only, and one last line when the loop ends.

``LIID_PROGRESS`` forces the mode: ``bar`` (tqdm even when not a terminal), ``lines`` (the line printer even
on a terminal), ``off`` (nothing); unset or ``auto``: by the stream. ``enabled=False`` is always silent.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

from liid.errors import LiidError

ENV = "LIID_PROGRESS"
MODES = ("auto", "bar", "lines", "off")
EVERY = 0.1  # a line per 10 % of the total
INTERVAL = 60.0  # and at least one a minute
DELAY = 2.0  # but none during the first seconds: a quick loop leaves no lines


def progress_mode(stream: IO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``LIID_PROGRESS`` when set, else ``bar`` on a terminal, ``lines`` otherwise."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in MODES:
        raise LiidError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(MODES)}")
    if value != "auto":
        return value
    return "bar" if _isatty(sys.stderr if stream is None else stream) else "lines"


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
             enabled: bool = True, leave: bool = True, every: float = EVERY, interval: float = INTERVAL,
             delay: float = DELAY, initial: int = 0, stream: IO | None = None,
             clock: Callable[[], float] | None = None, **bar_options: Any):
    """A progress bar over ``iterable`` (or updated by hand up to ``total``): a tqdm bar on a terminal, a line
    printer otherwise (see the module). ``stream``: default ``sys.stderr`` at the call (as tqdm's);
    ``bar_options`` go to tqdm only (e.g. ``dynamic_ncols``); ``clock`` (default ``time.monotonic``) is for tests."""
    if not 0 < every <= 1:
        raise ValueError(f"every={every}: must be in (0, 1]")
    mode = progress_mode(stream) if enabled else "off"
    if mode == "off":
        return tqdm(iterable, total=total, initial=initial, disable=True)
    if mode == "bar":
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, initial=initial, file=stream,
                    disable=False, **bar_options)
    return LinePrinter(iterable, total=total, desc=desc, unit=unit, every=every, interval=interval, delay=delay,
                       initial=initial, stream=stream, clock=clock)


class LinePrinter:
    """The non-terminal progress: plain lines on ``stream`` (see the module)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
                 every: float = EVERY, interval: float = INTERVAL, delay: float = DELAY, initial: int = 0,
                 stream: IO | None = None, clock: Callable[[], float] | None = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.iterable = iterable
        self.total = total if total else None  # 0: unknown (as tqdm shows it)
        self.desc, self.unit = desc, unit
        self.every, self.interval, self.delay = every, interval, delay
        self.stream = stream
        self.clock = clock or time.monotonic
        self.n = self.initial = initial
        self.postfix = ""
        self.shown = None  # the count of the last line
        self.start = self.last = self.clock()
        self.step = self._step(initial)  # the ``every`` steps already passed
        self.closed = False

    def _step(self, n: int) -> int:
        return math.floor(n / (self.total * self.every) + 1e-9) if self.total else 0

    def __iter__(self) -> Iterator:
        for item in self.iterable:  # type: ignore[union-attr]
            yield item
            self.update(1)
        self.close()  # a loop left early (break, an error) prints no last line

    def __enter__(self) -> LinePrinter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.closed = True

    def update(self, n: int = 1) -> None:
        if self.closed:
            return
        before, self.n = self.n, self.n + n
        now = self.clock()
        step = self._step(self.n)
        due = step > self.step or (self.total is not None and before < self.total <= self.n)  # and at 100 %
        self.step = max(step, self.step)
        if (due or now - self.last >= self.interval) and now - self.start >= self.delay:
            self._line(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={_value(v)}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def refresh(self) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = self.clock()
        if self.total is None and self.n > self.initial and self.n != self.shown and now - self.start >= self.delay:
            self._line(now)  # an unknown total: the count at the end

    def _line(self, now: float) -> None:
        self.last, self.shown = now, self.n
        elapsed = now - self.start
        done = self.n - self.initial
        if self.total is not None:
            text = f"{self.desc}: {self.n}/{self.total} {self.unit} ({math.floor(100 * self.n / self.total)} %), " \
                   f"{_duration(elapsed)}"
            if 0 < done and self.n < self.total:
                text += f", ~{_duration(elapsed * (self.total - self.n) / done)} left"
        else:
            text = f"{self.desc}: {self.n} {self.unit}, {_duration(elapsed)}"
            if done > 0 and elapsed > 0:
                text += f", {done / elapsed:.3g} {self.unit}/s"
        if self.postfix:
            text += f", {self.postfix}"
        print(text, file=self.stream or sys.stderr, flush=True)


def _isatty(stream: IO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


def _value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(seconds: float) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = round(seconds)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
