"""Resident memory of this process or another, for stats, `kestrel bench` and the benchmarks."""

from __future__ import annotations

import math
import os
import resource
import sys


def peak_rss_mb() -> float:
    """The most memory this process has held resident, in MiB (ru_maxrss: bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def current_rss_mb() -> float:
    """Memory this process holds resident now, in MiB (the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def process_rss_mb(pid: int, key: str = "VmRSS") -> float:
    """A /proc/<pid>/status memory figure (VmRSS, VmHWM, ...) of any process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return math.nan
