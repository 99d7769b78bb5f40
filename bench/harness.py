"""What every daemon benchmark shares: the video, /proc readings, the listener, the daemon runs.

The daemon runs as users run it, a subprocess ``python -m device.cli run --config FILE``; the
:class:`Listener` stamps every MQTT message on arrival and samples the daemon's CPU time with
each stats message, so CPU and frame counters describe the same moment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from device.paths import DEFAULT_MODEL, REPO_ROOT, SAMPLES_DIR
from device.resources import process_rss_mb

# The command line that also serves the ``_daemon`` and ``_worker`` subprocesses.
BENCH_SCRIPT = Path(__file__).resolve().with_name("daemon_benchmarks.py")
# Order matters: each change is a transition (cat/coffee are answers, the others "unknown").
SCENES = ("cat-chelsea.jpg", "astronaut.jpg", "coffee.jpg", "rocket.jpg")
FRAME_SIZE = (640, 480)
PACE_FPS = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERIAL_TOPIC = "bench/serial/result"


# --------------------------------------------------------------------------- measurements


def make_video(path: Path, seconds: float, scene_frames: int, fps: float = PACE_FPS) -> int:
    """The camera stand-in: real photos at 640x480, a new scene every ``scene_frames``."""
    from device.inference.preprocess import read_image

    images = [
        cv2.resize(read_image(str(SAMPLES_DIR / name)), FRAME_SIZE, interpolation=cv2.INTER_AREA)
        for name in SCENES
    ]
    count = int(seconds * fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG")
    for i in range(count):
        writer.write(images[(i // scene_frames) % len(images)])
    writer.release()
    return count


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, or NaN for no values."""
    return float(np.percentile(values, q)) if values else math.nan


def latency_text(values: list[float]) -> str:
    """p50 / p99 / max of latencies in ms, and how many there were."""
    return (
        f"p50 {percentile(values, 50):6.1f}  p99 {percentile(values, 99):6.1f}  "
        f"max {max(values, default=math.nan):6.1f} ms  (n={len(values)})"
    )


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def others_cores(before: tuple[float, float], after: tuple[float, float], own_s: float) -> float:
    """Average cores used by other processes between two machine_cpu() samples."""
    wall = (after[1] - before[1]) / (os.cpu_count() or 1)
    return (after[0] - before[0] - own_s) / wall if wall > 0 else math.nan


class Listener:
    """A separate MQTT client that stamps every message on arrival.

    On each stats message of the watched daemon it also reads the daemon's CPU time, so CPU
    and frame counters are sampled at the same moment.
    """

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.lock = threading.Lock()
        self.messages: list[tuple[float, str, bytes]] = []
        self.stats: list[dict] = []
        self.watch_pid: int | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-listener")
        self.client.on_connect = lambda c, *_: c.subscribe([("kestrel/#", 1), ("bench/#", 1)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        if message.topic.endswith("/stats"):
            payload = json.loads(message.payload)
            pid = self.watch_pid
            if pid is not None:
                try:
                    payload["_cpu_s"] = proc_cpu_seconds(pid)
                    payload["_rss_mb"] = process_rss_mb(pid)
                except OSError:
                    return
            payload["_arrival"] = now
            with self.lock:
                self.stats.append(payload)
            return
        if message.retain:
            return  # retained copies replayed on subscribe are not fresh messages
        with self.lock:
            self.messages.append((now, message.topic, bytes(message.payload)))

    def reset(self, pid: int | None = None) -> None:
        with self.lock:
            self.messages, self.stats, self.watch_pid = [], [], pid

    def take(self) -> tuple[list[tuple[float, str, bytes]], list[dict]]:
        with self.lock:
            return list(self.messages), list(self.stats)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------- the daemon


@dataclass
class DaemonRun:
    label: str
    seconds: float  # measured window
    frames: int  # delivered by the capture thread in the window
    inferences: int
    dropped: int  # over the window
    dropped_total: int  # over the whole run, warm-up included
    cpu_ms_per_frame: float
    fps: float
    stage_ms: dict[str, float]
    latencies_ms: list[float] = field(default_factory=list)
    transitions_expected: int = 0
    events: int = 0
    rss_mb: float = math.nan
    exit_code: int | None = None
    others_cores: float = math.nan  # CPU used by other processes meanwhile (shared machine)


def deep_set(tree: dict, dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted = "a.b"``, creating the levels."""
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


def daemon_config(
    ctx: argparse.Namespace, name: str, *, source_fps: float, max_fps: float, snapshots: bool
) -> Path:
    """Write the daemon's YAML config (one looping camera on the video) and return its path."""
    config: dict[str, Any] = {
        "device_id": name,
        "model": str(DEFAULT_MODEL),
        "console": False,
        "state_dir": str(ctx.work / f"state-{name}"),
        "snapshots": {"enabled": snapshots},
        "mqtt": {
            "host": "127.0.0.1",
            "port": ctx.port,
            "stats_interval": 1.0,
            "home_assistant": {"enabled": False},
        },
        "cameras": [
            {
                "name": "cam",
                "source": str(ctx.video),
                "loop": True,
                "source_fps": source_fps,
                "max_fps": max_fps,
                # Every scene change is a transition: see daemon_benchmarks' docstring.
                "smoothing": {"method": "ema", "alpha": 1.0, "min_dwell": 0.0},
            }
        ],
    }
    for key, value in ctx.overrides:
        if key.startswith("camera."):
            deep_set(config["cameras"][0], key.removeprefix("camera."), value)
        else:
            deep_set(config, key, value)
    path = ctx.work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_daemon(config: Path, log_path: Path, patches: str = "") -> subprocess.Popen:
    """``python -m device.cli run --config FILE``, as users run it (or patched: bench.patches)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if patches:
        argv = [sys.executable, str(BENCH_SCRIPT), "_daemon", "--patch", patches]
    else:
        argv = [sys.executable, "-m", "device.cli"]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [*argv, "run", "--config", str(config)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM (then SIGKILL after ``timeout``); the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_streaming(listener: Listener, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once the daemon's stats count an inference; raise if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with {process.returncode} (see its log)")
        _, stats = listener.take()
        if stats and stats[-1]["cameras"]["cam"]["inferences"] > 0:
            return
        time.sleep(0.2)
    raise TimeoutError("the daemon did not start inferring")


def run_daemon(
    label: str,
    ctx: argparse.Namespace,
    listener: Listener,
    *,
    source_fps: float,
    max_fps: float,
    snapshots: bool,
    seconds: float,
    patches: str = "",
) -> DaemonRun:
    """Start the daemon, skip ``ctx.warmup`` s, measure ``seconds`` s from its stats, stop it."""
    name = f"bench-{label}-{int(time.time() * 1000) % 10**8}"
    config = daemon_config(ctx, name, source_fps=source_fps, max_fps=max_fps, snapshots=snapshots)
    process = start_daemon(config, ctx.work / f"{name}.log", patches)
    listener.reset(process.pid)
    try:
        wait_streaming(listener, process)
        time.sleep(ctx.warmup)
        t_start = time.time()
        m0, c0 = machine_cpu(), proc_cpu_seconds(process.pid)
        time.sleep(seconds)
        m1, c1 = machine_cpu(), proc_cpu_seconds(process.pid)
        time.sleep(1.2)  # one more stats message covering the window's end
        messages, stats = listener.take()
    finally:
        code = stop(process)
    window = [s for s in stats if s["_arrival"] >= t_start]
    run = _run_from_stats(label, window)
    run.exit_code = code
    run.others_cores = others_cores(m0, m1, c1 - c0)
    # Latency on transition frames, in the window (the scene changes every scene_frames).
    run.latencies_ms = _event_latencies(
        messages, f"kestrel/{name}/cam/event", t_start, window[-1]["_arrival"]
    )
    run.events = len(run.latencies_ms)
    run.transitions_expected = round(run.inferences / ctx.scene_frames)
    return run


def _run_from_stats(label: str, window: list[dict]) -> DaemonRun:
    """The figures of the stats messages received in the measured window."""
    first, last = window[0], window[-1]
    cam0, cam1 = first["cameras"]["cam"], last["cameras"]["cam"]
    elapsed = last["uptime_s"] - first["uptime_s"]
    inferences = cam1["inferences"] - cam0["inferences"]
    stage: dict[str, list[float]] = {}
    for s in window:
        for key, value in s["cameras"]["cam"]["stage_ms"].items():
            stage.setdefault(key, []).append(value)
    return DaemonRun(
        label=label,
        seconds=elapsed,
        frames=cam1["frames"] - cam0["frames"],
        inferences=inferences,
        dropped=cam1["dropped"] - cam0["dropped"],
        dropped_total=cam1["dropped"],
        cpu_ms_per_frame=(last["_cpu_s"] - first["_cpu_s"]) * 1e3 / max(1, inferences),
        fps=inferences / elapsed if elapsed > 0 else math.nan,
        stage_ms={k: statistics.median(v) for k, v in stage.items()},
        rss_mb=last["_rss_mb"],
    )


def _event_latencies(
    messages: list[tuple[float, str, bytes]], event_topic: str, t_start: float, t_end: float
) -> list[float]:
    """Milliseconds from each event's ``captured_at`` to its arrival, inside the window."""
    latencies = []
    for arrival, topic, payload in messages:
        if topic != event_topic:
            continue
        body = json.loads(payload)
        if t_start <= body["captured_at"] and arrival <= t_end:
            latencies.append((arrival - body["captured_at"]) * 1e3)
    return latencies
