"""Camera pace: the video at 30 fps through the daemon (snapshots off / on) and the serial loop.

Targets: 0 frames dropped; latency p50 (transition frames) <= invoke + 5 ms; CPU ms per frame
shown next to the serial loop's at the same pace.
"""

from __future__ import annotations

import argparse
import math
import statistics

from bench.harness import (
    PACE_FPS,
    DaemonRun,
    Listener,
    latency_text,
    percentile,
    run_daemon,
    verdict,
)
from bench.patches import variant_name
from bench.serial_loop import run_worker, serial_latencies

TARGET_LATENCY_MARGIN_MS = 5.0
STAGE_KEYS = ("capture_wait", "preprocess", "invoke", "decode", "publish")


def bench_pace(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    """Every daemon variant and snapshot mode, then the serial loop, in ``ctx.rounds`` rounds."""
    print(
        f"\n== camera pace: 640x480 MJPG at {PACE_FPS:g} fps, shipped model, max_fps "
        f"{ctx.pace_max_fps:g} ==",
        flush=True,
    )
    snapshot_modes = (
        (False, True) if ctx.pace_snapshots == "both" else (ctx.pace_snapshots == "on",)
    )
    runs: dict[tuple[str, bool], list[DaemonRun]] = {}
    serials: list[dict] = []
    for r in range(ctx.rounds):
        for patches in ctx.variants:
            for snapshots in snapshot_modes:
                run = _pace_daemon(ctx, listener, r, patches, snapshots)
                runs.setdefault((patches, snapshots), []).append(run)
        serials.append(_pace_serial(ctx, listener, r))

    print(
        "\n  summary (all rounds pooled; daemon latency on transition frames, i.e. scene changes)"
    )
    serial_cpu = statistics.median(s["cpu_ms_per_frame"] for s in serials)
    for (patches, snapshots), rs in runs.items():
        key = f"{variant_name(patches)}, snapshots {'on' if snapshots else 'off'}"
        results[f"pace daemon {key}"] = _daemon_summary(key, rs, serial_cpu)
    results["pace serial"] = _serial_summary(serials, serial_cpu)


def _pace_daemon(
    ctx: argparse.Namespace, listener: Listener, r: int, patches: str, snapshots: bool
) -> DaemonRun:
    run = run_daemon(
        "pace",
        ctx,
        listener,
        source_fps=PACE_FPS,
        max_fps=ctx.pace_max_fps,
        snapshots=snapshots,
        seconds=ctx.pace_seconds,
        patches=patches,
    )
    print(
        f"  round {r + 1} daemon {variant_name(patches)}, snapshots "
        f"{'on ' if snapshots else 'off'}: {run.fps:5.1f} fps, "
        f"{run.cpu_ms_per_frame:5.2f} CPU ms/frame, dropped {run.dropped_total}, "
        f"others {run.others_cores:.2f} cores, "
        f"latency {latency_text(run.latencies_ms)}",
        flush=True,
    )
    return run


def _pace_serial(ctx: argparse.Namespace, listener: Listener, r: int) -> dict:
    listener.reset()
    serial = run_worker(
        "serial",
        video=ctx.video,
        port=ctx.port,
        fps=PACE_FPS,
        seconds=ctx.pace_seconds,
        warmup=ctx.warmup,
    )
    messages, _ = listener.take()
    every, changes = serial_latencies(messages, ctx.scene_frames, serial["t_start_wall"])
    serial["latency_every_ms"], serial["latency_changes_ms"] = every, changes
    print(
        f"  round {r + 1} serial loop: {serial['fps']:5.1f} fps, "
        f"{serial['cpu_ms_per_frame']:5.2f} CPU ms/frame, late/dropped {serial['dropped']}, "
        f"others {serial['others_cores']:.2f} cores, "
        f"latency {latency_text(changes)} (scene changes)",
        flush=True,
    )
    return serial


def _daemon_summary(key: str, rs: list[DaemonRun], serial_cpu: float) -> dict:
    """Print one daemon row of the summary against the targets; its figures."""
    lat = [v for x in rs for v in x.latencies_ms]
    stage = {k: statistics.median(x.stage_ms.get(k, math.nan) for x in rs) for k in STAGE_KEYS}
    cpu = statistics.median(x.cpu_ms_per_frame for x in rs)
    dropped = sum(x.dropped_total for x in rs)
    p50, invoke = percentile(lat, 50), stage["invoke"]
    print(f"  daemon {key}: latency {latency_text(lat)}")
    print("      stage medians ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stage.items()))
    print(
        f"      dropped {dropped} [target 0: {verdict(dropped == 0)}]; p50 {p50:.1f} ms "
        f"<= invoke {invoke:.2f} + {TARGET_LATENCY_MARGIN_MS:g} ms: "
        f"{verdict(p50 <= invoke + TARGET_LATENCY_MARGIN_MS)}; CPU {cpu:.2f} ms/frame "
        f"(serial loop {serial_cpu:.2f}, ratio {cpu / serial_cpu:.2f}); {len(lat)} events received"
    )
    return {
        "latency_p50_ms": p50,
        "latency_p99_ms": percentile(lat, 99),
        "samples": len(lat),
        "invoke_ms": invoke,
        "cpu_ms_per_frame": cpu,
        "dropped": dropped,
        "stage_ms": stage,
    }


def _serial_summary(serials: list[dict], serial_cpu: float) -> dict:
    """Print the serial loop's rows of the summary; its figures."""
    every = [v for s in serials for v in s["latency_every_ms"]]
    changes = [v for s in serials for v in s["latency_changes_ms"]]
    print(f"  serial loop: latency (scene-change frames) {latency_text(changes)}")
    print(f"               latency (every frame)         {latency_text(every)}")
    print(
        "               stage medians ms: "
        + ", ".join(
            f"{k} {statistics.median(s['stage_ms'][k] for s in serials):.2f}"
            for k in serials[0]["stage_ms"]
        )
    )
    print(
        f"               CPU {serial_cpu:.2f} ms/frame; late (dropped) "
        f"{sum(s['dropped'] for s in serials)}"
    )
    return {
        "latency_p50_ms": percentile(changes, 50),
        "latency_p99_ms": percentile(changes, 99),
        "latency_every_p50_ms": percentile(every, 50),
        "cpu_ms_per_frame": serial_cpu,
        "dropped": sum(s["dropped"] for s in serials),
    }
