"""The resident-set high-water mark of this process, per phase (Linux): what a benchmark reports as peak RSS.

``/proc/self/status``'s VmHWM is the peak RSS so far; writing 5 to ``/proc/self/clear_refs`` resets it to the
current RSS (Linux 4.0+), so a phase's own peak can be read. Elsewhere: ``ru_maxrss`` (never reset) or None.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_gb() -> float | None:
    """Peak RSS in GB (2^30 bytes) since the last ``reset_peak`` (or since the start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20
