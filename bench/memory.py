"""Memory: the daemon at 30 fps with snapshots on, VmRSS sampled for ``--minutes``.

Targets: resident memory <= 200 MB; growth (last sample - first) <= 10 MB.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time

import numpy as np

from bench.harness import (
    PACE_FPS,
    Listener,
    daemon_config,
    start_daemon,
    stop,
    verdict,
    wait_streaming,
)
from device.resources import process_rss_mb

TARGET_RSS_MB = 200.0
TARGET_GROWTH_MB = 10.0


def bench_memory(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    """One daemon run: a warm-up, then VmRSS every ``ctx.memory_interval`` s."""
    minutes = ctx.minutes
    print(
        f"\n== memory: the daemon at {PACE_FPS:g} fps, snapshots on, {minutes:g} min after a "
        f"{ctx.memory_warmup:g} s warm-up ==",
        flush=True,
    )
    name = f"bench-mem-{int(time.time()) % 10**6}"
    config = daemon_config(ctx, name, source_fps=PACE_FPS, max_fps=ctx.pace_max_fps, snapshots=True)
    process = start_daemon(config, ctx.work / f"{name}.log")
    listener.reset(process.pid)
    try:
        wait_streaming(listener, process)
        time.sleep(ctx.memory_warmup)
        samples = _sample_rss(process, minutes, ctx.memory_interval)
        hwm = process_rss_mb(process.pid, "VmHWM")
        _, stats = listener.take()
    finally:
        stop(process)
    cam = stats[-1]["cameras"]["cam"] if stats else {}
    results["memory"] = _report(samples, hwm, cam) | {
        "minutes": minutes,
        "transitions": cam.get("transitions"),
    }


def _sample_rss(
    process: subprocess.Popen, minutes: float, interval: float
) -> list[tuple[float, float]]:
    """(seconds since the start, VmRSS MB) every ``interval`` s for ``minutes``, and at the end."""
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < minutes * 60:
        samples.append((time.monotonic() - t0, process_rss_mb(process.pid)))
        if len(samples) % 12 == 1:
            print(f"  {samples[-1][0] / 60:5.1f} min  VmRSS {samples[-1][1]:6.1f} MB", flush=True)
        time.sleep(interval)
    samples.append((time.monotonic() - t0, process_rss_mb(process.pid)))
    return samples


def _report(samples: list[tuple[float, float]], hwm: float, cam: dict) -> dict:
    """Print the readings against the targets; the figures."""
    rss = [x[1] for x in samples]
    t = np.array([x[0] for x in samples]) / 60
    slope = float(np.polyfit(t, rss, 1)[0]) if len(samples) > 2 else math.nan
    growth = rss[-1] - rss[0]
    print(
        f"  VmRSS start {rss[0]:.1f}  end {rss[-1]:.1f}  max {max(rss):.1f}  min {min(rss):.1f}"
        f" MB; VmHWM {hwm:.1f} MB; trend {slope:+.3f} MB/min over {len(samples)} samples"
    )
    print(
        f"  frames {cam.get('frames')}  inferences {cam.get('inferences')}  transitions "
        f"{cam.get('transitions')}  dropped {cam.get('dropped')}"
    )
    print(
        f"  resident {max(rss):.1f} MB [target <= {TARGET_RSS_MB:g}: "
        f"{verdict(max(rss) <= TARGET_RSS_MB)}]; growth {growth:+.1f} MB [target <= "
        f"{TARGET_GROWTH_MB:g}: {verdict(growth <= TARGET_GROWTH_MB)}]"
    )
    return {
        "start_mb": rss[0],
        "end_mb": rss[-1],
        "max_mb": max(rss),
        "hwm_mb": hwm,
        "growth_mb": growth,
        "trend_mb_per_min": slope,
    }
