"""The daemon benchmarks (``kestrel run``), side by side in one run. By hand, not CI.

Everything runs against a real mosquitto (the Debian package) on a free 127.0.0.1 port, and the
daemon runs as users run it: a subprocess ``python -m device.cli run --config <generated yaml>``
(``console: false``). A separate MQTT subscriber (a thread of this process, which is otherwise
idle while a measured process runs) stamps every message on arrival. Each measured thing is a
process of its own, so its CPU time is read from ``/proc/<pid>/stat`` (daemon) or
``time.process_time()`` (the comparison workers, started as subprocesses of this script).

The camera stand-in is a 640x480 MJPG .avi written with OpenCV from the sample photos in
``models/samples`` (cat, astronaut, coffee, rocket, in that order, each held ``--scene-frames``
frames). With the shipped model, cat and coffee are confident answers and astronaut and rocket
are "unknown", so with smoothing ``ema``, ``alpha: 1``, ``min_dwell: 0`` every scene change is a
state transition (start, end, start, end...): the daemon publishes one ``event`` (and one
``state``) per scene change. **Latency is measured on those transition frames**: from the
frame's ``captured_at`` (stamped by the capture thread when it delivers the decoded frame) to
the event's arrival at the subscriber.

=============  =======================================================  ========================
benchmark      what runs                                                targets
=============  =======================================================  ========================
pace           the video paced at 30 fps: the daemon (snapshots off,    0 frames dropped;
               then on) and a serial loop (read -> preprocess -> invoke latency p50 <= invoke
               -> decode -> publish, one thread, paced at 30 fps)       + 5 ms; CPU ms / frame
saturation     the video as fast as possible (``source_fps: .inf``):    daemon >= 1.1 x serial
               invoke alone, the serial loop, the daemon, in rounds     frames / s
memory         the daemon at 30 fps (snapshots on) for ``--minutes``    RSS <= 200 MB, growth
               after a warm-up minute, VmRSS sampled every 5 s          <= 10 MB
=============  =======================================================  ========================

Usage (from the repository root)::

    python bench/daemon_benchmarks.py                      # all three (memory: 10 minutes)
    python bench/daemon_benchmarks.py --only pace
    python bench/daemon_benchmarks.py --only saturation --rounds 3
    python bench/daemon_benchmarks.py --only memory --minutes 10
    python bench/daemon_benchmarks.py --only saturation --set threads=1   # daemon config knob

``--set camera.KEY=VALUE`` / ``--set KEY=VALUE`` (YAML value) changes the generated daemon
config, e.g. to compare interpreter threads. ``--json FILE`` writes every figure.
``--variants ";cv1,t1"`` runs the daemon as shipped and with proposed changes applied by
monkeypatching at start-up (:data:`bench.patches.PATCHES`; nothing in ``device/`` is edited),
and ``--broker-nodelay`` sets mosquitto's ``set_tcp_nodelay``. Every run prints the cores
other processes used meanwhile: on a shared machine raw frame rates follow the neighbours' load.

Layout: :mod:`bench.harness` (video, /proc readings, listener, daemon runs),
:mod:`bench.serial_loop` (the comparison workers), :mod:`bench.patches`, and one module per
benchmark (:mod:`bench.pace`, :mod:`bench.saturation`, :mod:`bench.memory`); this script keeps
the command line and runs itself as the ``_daemon`` and ``_worker`` subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

_CHECKOUT = str(Path(__file__).resolve().parents[1])
if _CHECKOUT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, _CHECKOUT)

from bench.harness import SCENES, Listener, make_video  # noqa: E402
from bench.memory import bench_memory  # noqa: E402
from bench.pace import bench_pace  # noqa: E402
from bench.patches import PATCHES, daemon_main, variant_name  # noqa: E402
from bench.saturation import bench_saturation  # noqa: E402
from bench.serial_loop import worker_main  # noqa: E402

BENCHMARKS = {"pace": bench_pace, "saturation": bench_saturation, "memory": bench_memory}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["pace", "saturation", "memory"], action="append")
    parser.add_argument("--minutes", type=float, default=10.0, help="memory run length")
    parser.add_argument("--rounds", type=int, default=2, help="pace / saturation rounds")
    parser.add_argument("--pace-seconds", type=float, default=40.0)
    parser.add_argument("--sat-seconds", type=float, default=20.0)
    parser.add_argument("--invoke-seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds skipped per run")
    parser.add_argument("--memory-warmup", type=float, default=60.0)
    parser.add_argument("--memory-interval", type=float, default=5.0)
    parser.add_argument("--scene-frames", type=int, default=3, help="frames per scene")
    parser.add_argument("--pace-max-fps", type=float, default=30.0, help="camera max_fps")
    parser.add_argument("--pace-snapshots", choices=["off", "on", "both"], default="both")
    parser.add_argument(
        "--variants",
        default="",
        help="daemon variants to compare, ';'-"
        "separated patch lists: '' is the shipped daemon, e.g. ';cv1,t1'"
        f" (patches: {', '.join(PATCHES)})",
    )
    parser.add_argument(
        "--broker-nodelay", action="store_true", help="mosquitto set_tcp_nodelay true"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="daemon config override, e.g. threads=1 or camera.max_fps=60",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options, with ``--set`` parsed into ``ctx.overrides`` and ``--variants`` checked."""
    parser = build_parser()
    ctx = parser.parse_args(argv)
    ctx.overrides = []
    for item in ctx.set:
        key, _, value = item.partition("=")
        ctx.overrides.append((key, yaml.safe_load(value)))
    ctx.variants = ctx.variants.split(";")
    for patches in ctx.variants:
        unknown = [p for p in patches.split(",") if p and p not in PATCHES]
        if unknown:
            parser.error(f"--variants: unknown patch(es) {unknown}; known: {list(PATCHES)}")
    return ctx


def run_benchmarks(ctx: argparse.Namespace, only: list[str]) -> dict[str, Any]:
    """Write the video, start mosquitto and the listener, run the chosen benchmarks in order."""
    from tests.device.broker import Mosquitto

    frames = make_video(ctx.video, 60.0, ctx.scene_frames)
    print(
        f"video     {ctx.video.name}: {frames} frames 640x480 MJPG, a scene change every "
        f"{ctx.scene_frames} frames ({', '.join(SCENES)})"
    )
    print(f"machine   {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    print(
        f"overrides {ctx.overrides or 'none'}; daemon variants "
        f"{[variant_name(p) for p in ctx.variants]}; broker TCP_NODELAY "
        f"{'on' if ctx.broker_nodelay else 'off (mosquitto default)'}"
    )
    broker = Mosquitto(ctx.work / "mosquitto")
    if ctx.broker_nodelay:
        with open(broker.config_path, "a") as f:
            f.write("set_tcp_nodelay true\n")
    broker.start()
    ctx.port = broker.port
    listener = Listener(broker.port)
    results: dict[str, Any] = {}
    try:
        for name, bench in BENCHMARKS.items():
            if name in only:
                started = time.monotonic()
                bench(ctx, listener, results)
                print(f"  ({name}: {time.monotonic() - started:.0f} s wall)", flush=True)
    finally:
        listener.close()
        broker.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    if argv[:1] == ["_daemon"]:
        return daemon_main(argv[1:])
    ctx = parse_args(argv)
    only = ctx.only or list(BENCHMARKS)
    with tempfile.TemporaryDirectory(prefix="kestrel-daemon-bench-") as tmp:
        ctx.work = Path(ctx.work or tmp).resolve()
        ctx.work.mkdir(parents=True, exist_ok=True)
        ctx.video = ctx.work / "scenes-640x480.avi"
        results = run_benchmarks(ctx, only)
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
        if ctx.json:
            ctx.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
