"""The daemon benchmarks of issue 4 (``kestrel run``), side by side in one run. By hand, not CI.

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
benchmark      what runs                                                targets (issue 4)
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
monkeypatching at start-up (:data:`PATCHES`; nothing in ``device/`` is edited), and
``--broker-nodelay`` sets mosquitto's ``set_tcp_nodelay``. Every run prints the cores other
processes used meanwhile: on a shared machine raw frame rates follow the neighbours' load.
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
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from device.paths import DEFAULT_MODEL  # noqa: E402

SAMPLES = REPO / "models" / "samples"
# Order matters: each change is a transition (cat/coffee are answers, the others "unknown").
SCENES = ("cat-chelsea.jpg", "astronaut.jpg", "coffee.jpg", "rocket.jpg")
FRAME_SIZE = (640, 480)
PACE_FPS = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_LATENCY_MARGIN_MS = 5.0
TARGET_SATURATION_RATIO = 1.1
TARGET_RSS_MB = 200.0
TARGET_GROWTH_MB = 10.0
SERIAL_TOPIC = "bench/serial/result"


# --------------------------------------------------------------------------- helpers


def make_video(path: Path, seconds: float, scene_frames: int, fps: float = PACE_FPS) -> int:
    """The camera stand-in: real photos at 640x480, a new scene every ``scene_frames``."""
    from device.inference.preprocess import read_image

    images = [
        cv2.resize(read_image(str(SAMPLES / name)), FRAME_SIZE, interpolation=cv2.INTER_AREA)
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
    return float(np.percentile(values, q)) if values else math.nan


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return math.nan


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


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def deep_set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


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
                    payload["_rss_mb"] = proc_rss_mb(pid)
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


def daemon_config(
    work: Path,
    name: str,
    port: int,
    video: Path,
    *,
    source_fps: float,
    max_fps: float,
    snapshots: bool,
    overrides: list[tuple[str, Any]],
) -> Path:
    config: dict[str, Any] = {
        "device_id": name,
        "model": str(DEFAULT_MODEL),
        "console": False,
        "state_dir": str(work / f"state-{name}"),
        "snapshots": {"enabled": snapshots},
        "mqtt": {
            "host": "127.0.0.1",
            "port": port,
            "stats_interval": 1.0,
            "home_assistant": {"enabled": False},
        },
        "cameras": [
            {
                "name": "cam",
                "source": str(video),
                "loop": True,
                "source_fps": source_fps,
                "max_fps": max_fps,
                # Every scene change is a transition: see the module docstring.
                "smoothing": {"method": "ema", "alpha": 1.0, "min_dwell": 0.0},
            }
        ],
    }
    for key, value in overrides:
        if key.startswith("camera."):
            deep_set(config["cameras"][0], key.removeprefix("camera."), value)
        else:
            deep_set(config, key, value)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_daemon(config: Path, log_path: Path, patches: str = "") -> subprocess.Popen:
    """``python -m device.cli run --config FILE``, as users run it (or patched, see PATCHES)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if patches:
        argv = [sys.executable, str(Path(__file__).resolve()), "_daemon", "--patch", patches]
    else:
        argv = [sys.executable, "-m", "device.cli"]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [*argv, "run", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(process: subprocess.Popen, timeout: float = 10.0) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_streaming(listener: Listener, process: subprocess.Popen, timeout: float = 60.0) -> None:
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
    listener: Listener,
    work: Path,
    port: int,
    video: Path,
    *,
    source_fps: float,
    max_fps: float,
    snapshots: bool,
    seconds: float,
    warmup: float,
    scene_frames: int,
    overrides: list[tuple[str, Any]],
    patches: str = "",
) -> DaemonRun:
    name = f"bench-{label}-{int(time.time() * 1000) % 10**8}"
    config = daemon_config(
        work,
        name,
        port,
        video,
        source_fps=source_fps,
        max_fps=max_fps,
        snapshots=snapshots,
        overrides=overrides,
    )
    process = start_daemon(config, work / f"{name}.log", patches)
    listener.reset(process.pid)
    try:
        wait_streaming(listener, process)
        time.sleep(warmup)
        t_start = time.time()
        m0, c0 = machine_cpu(), proc_cpu_seconds(process.pid)
        time.sleep(seconds)
        m1, c1 = machine_cpu(), proc_cpu_seconds(process.pid)
        time.sleep(1.2)  # one more stats message covering the window's end
        messages, stats = listener.take()
    finally:
        code = stop(process)
    window = [s for s in stats if s["_arrival"] >= t_start]
    first, last = window[0], window[-1]
    cam0, cam1 = first["cameras"]["cam"], last["cameras"]["cam"]
    elapsed = last["uptime_s"] - first["uptime_s"]
    inferences = cam1["inferences"] - cam0["inferences"]
    frames = cam1["frames"] - cam0["frames"]
    stage: dict[str, list[float]] = {}
    for s in window:
        for key, value in s["cameras"]["cam"]["stage_ms"].items():
            stage.setdefault(key, []).append(value)
    run = DaemonRun(
        label=label,
        seconds=elapsed,
        frames=frames,
        inferences=inferences,
        dropped=cam1["dropped"] - cam0["dropped"],
        dropped_total=cam1["dropped"],
        cpu_ms_per_frame=(last["_cpu_s"] - first["_cpu_s"]) * 1e3 / max(1, inferences),
        fps=inferences / elapsed if elapsed > 0 else math.nan,
        stage_ms={k: statistics.median(v) for k, v in stage.items()},
        rss_mb=last["_rss_mb"],
        exit_code=code,
        others_cores=others_cores(m0, m1, c1 - c0),
    )
    # Latency on transition frames, in the window (the scene changes every scene_frames).
    t_end = last["_arrival"]
    event_topic = f"kestrel/{name}/cam/event"
    for arrival, topic, payload in messages:
        if topic != event_topic:
            continue
        body = json.loads(payload)
        if t_start <= body["captured_at"] and arrival <= t_end:
            run.latencies_ms.append((arrival - body["captured_at"]) * 1e3)
    run.events = len(run.latencies_ms)
    run.transitions_expected = round(inferences / scene_frames)
    return run


# --------------------------------------------------------------------------- patches
# Proposed changes to device/ measured without editing it: ``--patch NAME`` starts the daemon
# through ``_daemon``, which applies them and then calls ``device.cli.main`` as ``kestrel`` does.


def _patch_cv1() -> None:
    """cv2.setNumThreads(1): no OpenCV worker pool competing with the interpreter's threads."""
    cv2.setNumThreads(1)


def _patch_t1() -> None:
    """Interpreter threads = 1 (whatever the config says): leaves a core to capture decoding."""
    from device.inference import engine

    original = engine.build_interpreter

    def build(model_path: Any, accelerator: Any, threads: Any, *args: Any, **kw: Any) -> Any:
        return original(model_path, accelerator, 1, *args, **kw)

    engine.build_interpreter = build


def _patch_switch() -> None:
    """sys.setswitchinterval(0.0005): a thread waiting for the GIL gets it 10x sooner."""
    sys.setswitchinterval(0.0005)


# The rate-limit schedule and TCP_NODELAY began as patches here; they are in device/ now.
PATCHES = {
    "cv1": _patch_cv1,
    "t1": _patch_t1,
    "switch": _patch_switch,
}


def daemon_main(argv: list[str]) -> int:
    """``_daemon [--patch a,b] run --config FILE``: kestrel with the named patches applied."""
    patches: list[str] = []
    if argv[:1] == ["--patch"]:
        patches, argv = [p for p in argv[1].split(",") if p], argv[2:]
    for name in patches:
        PATCHES[name]()
    from device.cli import main as kestrel

    return kestrel(argv)


# --------------------------------------------------------------------------- workers


def worker_serial(args: argparse.Namespace) -> dict:
    """The serial loop: read -> preprocess -> invoke -> decode -> publish, one thread.

    The design of the common Raspberry Pi examples. Publishes one JSON message per frame
    (QoS 1, like the daemon's events), paced at ``--fps`` or as fast as possible.
    """
    import paho.mqtt.client as mqtt

    from device.inference.engine import Classifier

    classifier = Classifier(DEFAULT_MODEL, threads=args.threads)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-serial")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", args.port, 30)
    client.loop_start()
    cap = cv2.VideoCapture(str(args.video), cv2.CAP_FFMPEG)
    interval = 0.0 if math.isinf(args.fps) else 1.0 / args.fps
    frame_id = late = 0
    due = time.monotonic()
    stages: dict[str, list[float]] = {"read": [], "classify": [], "invoke": [], "publish": []}
    t_begin = time.monotonic()
    measuring = False
    cpu0 = wall0 = 0.0
    frames_measured = 0
    while True:
        now = time.monotonic()
        if not measuring and now - t_begin >= args.warmup:
            measuring, cpu0, wall0, frames_measured, late = True, time.process_time(), now, 0, 0
            machine0 = machine_cpu()
        if measuring and now - wall0 >= args.seconds:
            break
        if interval:
            due += interval
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                late += int((now - due) / interval)  # a camera would have dropped these
                due = now
        t0 = time.perf_counter()
        ok, image = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        captured_at = time.time()
        frame_id += 1
        t1 = time.perf_counter()
        prediction = classifier.classify(image)
        t2 = time.perf_counter()
        body = {
            "frame_id": frame_id,
            "captured_at": captured_at,
            "label": prediction.label,
            "score": round(prediction.labels[0].score, 4) if prediction.labels else 0.0,
        }
        client.publish(SERIAL_TOPIC, json.dumps(body), qos=1)
        t3 = time.perf_counter()
        if measuring:
            frames_measured += 1
            stages["read"].append((t1 - t0) * 1e3)
            stages["classify"].append((t2 - t1) * 1e3)
            stages["invoke"].append(classifier.timings.invoke_ms)
            stages["publish"].append((t3 - t2) * 1e3)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    others = others_cores(machine0, machine_cpu(), cpu)
    client.disconnect()
    client.loop_stop()
    return {
        "frames": frames_measured,
        "seconds": wall,
        "fps": frames_measured / wall,
        "cpu_ms_per_frame": cpu * 1e3 / max(1, frames_measured),
        "dropped": late,
        "stage_ms": {k: statistics.median(v) for k, v in stages.items() if v},
        "t_start_wall": time.time() - wall,
        "others_cores": others,
    }


def worker_invoke(args: argparse.Namespace) -> dict:
    """Invoke alone on one prepared frame: the ceiling of the model on this machine."""
    from device.inference.engine import Classifier

    classifier = Classifier(DEFAULT_MODEL, threads=args.threads)
    image = cv2.resize(cv2.imread(str(SAMPLES / SCENES[0])), FRAME_SIZE)
    classifier.infer(classifier.preprocess(image))
    interpreter = classifier.interpreter
    end = time.monotonic() + args.warmup
    while time.monotonic() < end:
        interpreter.invoke()
    n, cpu0, t0, machine0 = 0, time.process_time(), time.monotonic(), machine_cpu()
    while time.monotonic() - t0 < args.seconds:
        interpreter.invoke()
        n += 1
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {
        "frames": n,
        "seconds": wall,
        "fps": n / wall,
        "cpu_ms_per_frame": cpu * 1e3 / n,
        "others_cores": others_cores(machine0, machine_cpu(), cpu),
    }


def run_worker(kind: str, **kwargs: Any) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "_worker", kind]
    for key, value in kwargs.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="daemon_benchmarks.py _worker")
    parser.add_argument("kind", choices=["serial", "invoke"])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--fps", type=float, default=math.inf)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    result = worker_serial(args) if args.kind == "serial" else worker_invoke(args)
    print(json.dumps(result), flush=True)
    return 0


def serial_latencies(messages: list[tuple[float, str, bytes]], scene_frames: int, t0: float):
    """Serial-loop latency on every frame, and on scene-change frames only."""
    every, changes = [], []
    for arrival, topic, payload in messages:
        if topic != SERIAL_TOPIC:
            continue
        body = json.loads(payload)
        if body["captured_at"] < t0:
            continue
        ms = (arrival - body["captured_at"]) * 1e3
        every.append(ms)
        if (body["frame_id"] - 1) % scene_frames == 0:
            changes.append(ms)
    return every, changes


# --------------------------------------------------------------------------- benchmarks


def lat_text(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):6.1f}  p99 {percentile(values, 99):6.1f}  "
        f"max {max(values, default=math.nan):6.1f} ms  (n={len(values)})"
    )


def variant_name(patches: str) -> str:
    return "+".join(patches.split(",")) if patches else "shipped"


def bench_pace(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    print(
        f"\n== camera pace: 640x480 MJPG at {PACE_FPS:g} fps, shipped model, max_fps "
        f"{ctx.pace_max_fps:g} ==",
        flush=True,
    )
    seconds, warmup = ctx.pace_seconds, ctx.warmup
    snapshot_modes = (
        (False, True) if ctx.pace_snapshots == "both" else (ctx.pace_snapshots == "on",)
    )
    runs: dict[tuple[str, bool], list[DaemonRun]] = {}
    serials: list[dict] = []
    for r in range(ctx.rounds):
        for patches in ctx.variants:
            for snapshots in snapshot_modes:
                run = run_daemon(
                    "pace",
                    listener,
                    ctx.work,
                    ctx.port,
                    ctx.video,
                    source_fps=PACE_FPS,
                    max_fps=ctx.pace_max_fps,
                    snapshots=snapshots,
                    seconds=seconds,
                    warmup=warmup,
                    scene_frames=ctx.scene_frames,
                    overrides=ctx.overrides,
                    patches=patches,
                )
                runs.setdefault((patches, snapshots), []).append(run)
                print(
                    f"  round {r + 1} daemon {variant_name(patches)}, snapshots "
                    f"{'on ' if snapshots else 'off'}: {run.fps:5.1f} fps, "
                    f"{run.cpu_ms_per_frame:5.2f} CPU ms/frame, dropped {run.dropped_total}, "
                    f"others {run.others_cores:.2f} cores, "
                    f"latency {lat_text(run.latencies_ms)}",
                    flush=True,
                )
        listener.reset()
        serial = run_worker(
            "serial", video=ctx.video, port=ctx.port, fps=PACE_FPS, seconds=seconds, warmup=warmup
        )
        messages, _ = listener.take()
        every, changes = serial_latencies(messages, ctx.scene_frames, serial["t_start_wall"])
        serial["latency_every_ms"], serial["latency_changes_ms"] = every, changes
        serials.append(serial)
        print(
            f"  round {r + 1} serial loop: {serial['fps']:5.1f} fps, "
            f"{serial['cpu_ms_per_frame']:5.2f} CPU ms/frame, late/dropped {serial['dropped']}, "
            f"others {serial['others_cores']:.2f} cores, "
            f"latency {lat_text(changes)} (scene changes)",
            flush=True,
        )

    every = [v for s in serials for v in s["latency_every_ms"]]
    changes = [v for s in serials for v in s["latency_changes_ms"]]
    s_cpu = statistics.median(s["cpu_ms_per_frame"] for s in serials)
    print(
        "\n  summary (all rounds pooled; daemon latency on transition frames, i.e. scene changes)"
    )
    for (patches, snapshots), rs in runs.items():
        lat = [v for x in rs for v in x.latencies_ms]
        stage_keys = ("capture_wait", "preprocess", "invoke", "decode", "publish")
        stage = {k: statistics.median(x.stage_ms.get(k, math.nan) for x in rs) for k in stage_keys}
        cpu = statistics.median(x.cpu_ms_per_frame for x in rs)
        dropped = sum(x.dropped_total for x in rs)
        p50, invoke = percentile(lat, 50), stage["invoke"]
        key = f"{variant_name(patches)}, snapshots {'on' if snapshots else 'off'}"
        print(f"  daemon {key}: latency {lat_text(lat)}")
        print("      stage medians ms: " + ", ".join(f"{k} {v:.2f}" for k, v in stage.items()))
        print(
            f"      dropped {dropped} [target 0: {verdict(dropped == 0)}]; p50 {p50:.1f} ms "
            f"<= invoke {invoke:.2f} + {TARGET_LATENCY_MARGIN_MS:g} ms: "
            f"{verdict(p50 <= invoke + TARGET_LATENCY_MARGIN_MS)}; CPU {cpu:.2f} ms/frame "
            f"(serial loop {s_cpu:.2f}, ratio {cpu / s_cpu:.2f}); {len(lat)} events received"
        )
        results[f"pace daemon {key}"] = {
            "latency_p50_ms": p50,
            "latency_p99_ms": percentile(lat, 99),
            "samples": len(lat),
            "invoke_ms": invoke,
            "cpu_ms_per_frame": cpu,
            "dropped": dropped,
            "stage_ms": stage,
        }
    print(f"  serial loop: latency (scene-change frames) {lat_text(changes)}")
    print(f"               latency (every frame)         {lat_text(every)}")
    print(
        "               stage medians ms: "
        + ", ".join(
            f"{k} {statistics.median(s['stage_ms'][k] for s in serials):.2f}"
            for k in serials[0]["stage_ms"]
        )
    )
    print(
        f"               CPU {s_cpu:.2f} ms/frame; late (dropped) "
        f"{sum(s['dropped'] for s in serials)}"
    )
    results["pace serial"] = {
        "latency_p50_ms": percentile(changes, 50),
        "latency_p99_ms": percentile(changes, 99),
        "latency_every_p50_ms": percentile(every, 50),
        "cpu_ms_per_frame": s_cpu,
        "dropped": sum(s["dropped"] for s in serials),
    }


def bench_saturation(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    print(
        "\n== saturation: the video read as fast as possible (daemon: source_fps .inf, "
        "snapshots off) ==",
        flush=True,
    )
    rows: dict[str, list[dict]] = {"invoke alone": [], "serial loop": []}
    for patches in ctx.variants:
        rows[f"daemon {variant_name(patches)}"] = []
    for r in range(ctx.rounds):
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
                listener,
                ctx.work,
                ctx.port,
                ctx.video,
                source_fps=math.inf,
                max_fps=100000.0,
                snapshots=False,
                seconds=ctx.sat_seconds,
                warmup=ctx.warmup,
                scene_frames=ctx.scene_frames,
                overrides=ctx.overrides,
                patches=patches,
            )
            dae = {
                "fps": run.fps,
                "cpu_ms_per_frame": run.cpu_ms_per_frame,
                "dropped": run.dropped_total,
                "stage_ms": run.stage_ms,
                "ratio": run.fps / ser["fps"],
                "others_cores": run.others_cores,
            }
            rows[f"daemon {variant_name(patches)}"].append(dae)
            line.append(
                f"daemon {variant_name(patches)} {dae['fps']:.1f}/s "
                f"({dae['cpu_ms_per_frame']:.2f} CPU ms, dropped {dae['dropped']}, "
                f"x{dae['ratio']:.2f} serial; others used {run.others_cores:.2f} cores;"
                " stages " + " ".join(f"{k} {v:.2f}" for k, v in run.stage_ms.items()) + ")"
            )
        print(f"  round {r + 1}: " + "\n           ".join(line), flush=True)
        print(
            "           serial stages "
            + " ".join(f"{k} {v:.2f}" for k, v in ser["stage_ms"].items()),
            flush=True,
        )
    print(
        "\n  summary (medians over rounds; ratio = daemon / serial loop of the same round; 'per"
        " free core' divides by the cores other processes left free during that run)"
    )
    results["saturation"] = {}
    for name, rs in rows.items():
        fps = statistics.median(x["fps"] for x in rs)
        cpu = statistics.median(x["cpu_ms_per_frame"] for x in rs)
        others = statistics.median(x["others_cores"] for x in rs)
        text = (
            f"  {name:<22}{fps:8.1f} frames/s  {cpu:6.2f} CPU ms/frame  others {others:.2f} cores"
        )
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
            serial = rows["serial loop"]
            adj_ratios = [
                a / (s["fps"] / max(0.05, cores - s["others_cores"]))
                for a, s in zip(adjusted, serial, strict=True)
            ]
            entry["adjusted_ratio"] = statistics.median(adj_ratios)
            text += f" (x{entry['adjusted_ratio']:.2f} serial)"
            ratios = [x["ratio"] for x in rs]
            entry["ratio"] = statistics.median(ratios)
            text += (
                f"  x{entry['ratio']:.2f} serial (rounds: "
                f"{', '.join(f'{x:.2f}' for x in ratios)}) [target >= "
                f"{TARGET_SATURATION_RATIO}: {verdict(entry['ratio'] >= TARGET_SATURATION_RATIO)}]"
            )
        print(text)
        results["saturation"][name] = entry


def bench_memory(ctx: argparse.Namespace, listener: Listener, results: dict) -> None:
    minutes = ctx.minutes
    print(
        f"\n== memory: the daemon at {PACE_FPS:g} fps, snapshots on, {minutes:g} min after a "
        f"{ctx.memory_warmup:g} s warm-up ==",
        flush=True,
    )
    name = f"bench-mem-{int(time.time()) % 10**6}"
    config = daemon_config(
        ctx.work,
        name,
        ctx.port,
        ctx.video,
        source_fps=PACE_FPS,
        max_fps=ctx.pace_max_fps,
        snapshots=True,
        overrides=ctx.overrides,
    )
    process = start_daemon(config, ctx.work / f"{name}.log")
    listener.reset(process.pid)
    samples: list[tuple[float, float]] = []
    try:
        wait_streaming(listener, process)
        time.sleep(ctx.memory_warmup)
        t0 = time.monotonic()
        while time.monotonic() - t0 < minutes * 60:
            samples.append((time.monotonic() - t0, proc_rss_mb(process.pid)))
            if len(samples) % 12 == 1:
                print(
                    f"  {samples[-1][0] / 60:5.1f} min  VmRSS {samples[-1][1]:6.1f} MB", flush=True
                )
            time.sleep(ctx.memory_interval)
        samples.append((time.monotonic() - t0, proc_rss_mb(process.pid)))
        hwm = proc_rss_mb(process.pid, "VmHWM")
        _, stats = listener.take()
    finally:
        stop(process)
    rss = [x[1] for x in samples]
    t = np.array([x[0] for x in samples]) / 60
    slope = float(np.polyfit(t, rss, 1)[0]) if len(samples) > 2 else math.nan
    growth = rss[-1] - rss[0]
    cam = stats[-1]["cameras"]["cam"] if stats else {}
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
    results["memory"] = {
        "start_mb": rss[0],
        "end_mb": rss[-1],
        "max_mb": max(rss),
        "hwm_mb": hwm,
        "growth_mb": growth,
        "trend_mb_per_min": slope,
        "minutes": minutes,
        "transitions": cam.get("transitions"),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker_main(argv[1:])
    if argv[:1] == ["_daemon"]:
        return daemon_main(argv[1:])
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
        "separated patch lists: '' is the shipped daemon, e.g. ';rate,nodelay'"
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
    ctx = parser.parse_args(argv)
    ctx.overrides = []
    for item in ctx.set:
        key, _, value = item.partition("=")
        ctx.overrides.append((key, yaml.safe_load(value)))
    only = ctx.only or ["pace", "saturation", "memory"]
    ctx.variants = ctx.variants.split(";")
    for patches in ctx.variants:
        unknown = [p for p in patches.split(",") if p and p not in PATCHES]
        if unknown:
            parser.error(f"--variants: unknown patch(es) {unknown}; known: {list(PATCHES)}")

    from tests.device.broker import Mosquitto

    with tempfile.TemporaryDirectory(prefix="kestrel-daemon-bench-") as tmp:
        ctx.work = Path(ctx.work or tmp).resolve()
        ctx.work.mkdir(parents=True, exist_ok=True)
        ctx.video = ctx.work / "scenes-640x480.avi"
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
            for name in ("pace", "saturation", "memory"):
                if name in only:
                    started = time.monotonic()
                    {"pace": bench_pace, "saturation": bench_saturation, "memory": bench_memory}[
                        name
                    ](ctx, listener, results)
                    print(f"  ({name}: {time.monotonic() - started:.0f} s wall)", flush=True)
        finally:
            listener.close()
            broker.stop()
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
        if ctx.json:
            ctx.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
