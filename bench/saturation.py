"""Saturation: the video read as fast as possible by invoke alone, the serial loop and the daemon.

Rounds alternate the three so the machine's changing load falls on each alike. Target: the
daemon's frames/s >= 1.1 x the serial loop's of the same round.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

from bench.harness import DaemonRun, Listener, run_daemon, verdict
from bench.patches import variant_name
from bench.serial_loop import run_worker

TARGET_SATURATION_RATIO = 1.1


def bench_saturation(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    """``ctx.rounds`` rounds of invoke alone, the serial loop and every daemon variant."""
    print(
        "\n== saturation: the video read as fast as possible (daemon: source_fps .inf, "
        "snapshots off) ==",
        flush=True,
    )
    rows: dict[str, list[dict]] = {"invoke alone": [], "serial loop": []}
    for patches in ctx.variants:
        rows[f"daemon {variant_name(patches)}"] = []
    for r in range(ctx.rounds):
        _saturation_round(ctx, listener, r, rows)
    print(
        "\n  summary (medians over rounds; ratio = daemon / serial loop of the same round; 'per"
        " free core' divides by the cores other processes left free during that run)"
    )
    results["saturation"] = {}
    for name, rs in rows.items():
        results["saturation"][name] = _summary_row(name, rs, rows["serial loop"])


def _saturation_round(
    ctx: argparse.Namespace, listener: Listener, r: int, rows: dict[str, list[dict]]
) -> None:
    inv = run_worker("invoke", seconds=ctx.invoke_seconds, warmup=2.0)
    rows["invoke alone"].append(inv)
    ser = run_worker(
        "serial", video=ctx.video, port=ctx.port, seconds=ctx.sat_seconds, warmup=ctx.warmup
    )
    rows["serial loop"].append(ser)
    line = [
        f"invoke alone {inv['fps']:.1f}/s ({inv['cpu_ms_per_frame']:.2f} CPU ms; others "
        f"used {inv['others_cores']:.2f} cores)",
        f"serial {ser['fps']:.1f}/s ({ser['cpu_ms_per_frame']:.2f} CPU ms; others used "
        f"{ser['others_cores']:.2f} cores)",
    ]
    for patches in ctx.variants:
        run = run_daemon(
            "sat",
            ctx,
            listener,
            source_fps=math.inf,
            max_fps=100000.0,
            snapshots=False,
            seconds=ctx.sat_seconds,
            patches=patches,
        )
        dae = _daemon_row(run, ser)
        rows[f"daemon {variant_name(patches)}"].append(dae)
        line.append(
            f"daemon {variant_name(patches)} {dae['fps']:.1f}/s "
            f"({dae['cpu_ms_per_frame']:.2f} CPU ms, dropped {dae['dropped']}, "
            f"x{dae['ratio']:.2f} serial; others used {run.others_cores:.2f} cores;"
            " stages " + " ".join(f"{k} {v:.2f}" for k, v in run.stage_ms.items()) + ")"
        )
    print(f"  round {r + 1}: " + "\n           ".join(line), flush=True)
    print(
        "           serial stages " + " ".join(f"{k} {v:.2f}" for k, v in ser["stage_ms"].items()),
        flush=True,
    )


def _daemon_row(run: DaemonRun, serial: dict) -> dict:
    return {
        "fps": run.fps,
        "cpu_ms_per_frame": run.cpu_ms_per_frame,
        "dropped": run.dropped_total,
        "stage_ms": run.stage_ms,
        "ratio": run.fps / serial["fps"],
        "others_cores": run.others_cores,
    }


def _summary_row(name: str, rs: list[dict], serial: list[dict]) -> dict:
    """Print one loop's medians over the rounds (daemons: against the target); its figures."""
    fps = statistics.median(x["fps"] for x in rs)
    cpu = statistics.median(x["cpu_ms_per_frame"] for x in rs)
    others = statistics.median(x["others_cores"] for x in rs)
    text = f"  {name:<22}{fps:8.1f} frames/s  {cpu:6.2f} CPU ms/frame  others {others:.2f} cores"
    entry = {"fps": fps, "cpu_ms_per_frame": cpu}
    if name != "invoke alone":
        entry["dropped"] = sum(x["dropped"] for x in rs)
        text += f"  dropped {entry['dropped']}"
    # Load-adjusted: frames/s per core left free by other processes (a CPU-bound run uses
    # all of it, so this is what an idle machine would give per core, roughly).
    cores = os.cpu_count() or 1
    adjusted = [x["fps"] / max(0.05, cores - x["others_cores"]) for x in rs]
    entry["fps_per_free_core"] = statistics.median(adjusted)
    text += f"  {entry['fps_per_free_core']:6.1f}/s per free core"
    if name.startswith("daemon"):
        adj_ratios = [
            a / (s["fps"] / max(0.05, cores - s["others_cores"]))
            for a, s in zip(adjusted, serial, strict=True)
        ]
        entry["adjusted_ratio"] = statistics.median(adj_ratios)
        text += f" (x{entry['adjusted_ratio']:.2f} serial)"
        ratios = [x["ratio"] for x in rs]
        entry["ratio"] = statistics.median(ratios)
        met = entry["ratio"] >= TARGET_SATURATION_RATIO
        text += (
            f"  x{entry['ratio']:.2f} serial (rounds: "
            f"{', '.join(f'{x:.2f}' for x in ratios)}) [target >= "
            f"{TARGET_SATURATION_RATIO}: {verdict(met)}]"
        )
    print(text)
    return entry
