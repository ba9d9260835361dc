"""Peak RSS of this process, overall and per phase (Linux), for benchmarks that say what limits memory.

``/proc/self/status``'s VmHWM is the peak RSS so far; writing 5 to ``/proc/self/clear_refs`` resets it to the
current RSS (Linux 4.0+), so a phase's own peak can be read. The reset also resets ``ru_maxrss``, which other
code may read, so it happens only after ``track_phases()`` (a benchmark's choice, never a command's); the
overall peak is kept here across resets (``overall_peak_gb``).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_state = {"tracking": False, "before": 0.0}  # before: the highest phase peak folded in by the resets


def _hwm_gb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


def track_phases() -> bool:
    """Turn per-phase peaks on (False where the kernel cannot reset the high-water mark)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _state["tracking"] = True
    return True


def reset_peak() -> None:
    """Start a phase: fold the peak so far into the overall one, reset the high-water mark (when tracking)."""
    if _state["tracking"]:
        _state["before"] = max(_state["before"], _hwm_gb())
        Path("/proc/self/clear_refs").write_text("5")


def peak_gb() -> float | None:
    """The current phase's peak RSS in GB (2^30 bytes) when tracking phases, else None."""
    return _hwm_gb() if _state["tracking"] else None


def overall_peak_gb() -> float:
    """The process's peak RSS in GB, phases or not."""
    return max(_state["before"], _hwm_gb())
