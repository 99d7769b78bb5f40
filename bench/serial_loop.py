"""The comparison loops, each run as a process of its own (``daemon_benchmarks.py _worker``).

``serial``: read -> preprocess -> invoke -> decode -> publish in one thread, the design of the
common Raspberry Pi examples, with the device's own ``Classifier`` and a paho client (QoS 1, like
the daemon's events), paced at ``--fps`` or as fast as possible. ``invoke``: the interpreter
alone on one prepared frame, the ceiling of the model on this machine. Each prints one JSON line
of figures; its CPU time is ``time.process_time()``, its own process's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2

from bench.harness import (
    BENCH_SCRIPT,
    FRAME_SIZE,
    SCENES,
    SERIAL_TOPIC,
    machine_cpu,
    others_cores,
)
from device.paths import DEFAULT_MODEL, REPO_ROOT, SAMPLES_DIR


def _mqtt_client(port: int) -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-serial")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port, 30)
    client.loop_start()
    return client


def _wait_until_due(due: float, interval: float, now: float) -> tuple[float, int]:
    """Sleep until the next frame is due; (new due time, frames a camera would have dropped)."""
    due += interval
    if due > now:
        time.sleep(due - now)
    elif now - due > interval:
        return now, int((now - due) / interval)
    return due, 0


def _serial_frame(
    cap: cv2.VideoCapture, classifier: Any, client: Any, frame_id: int
) -> dict[str, float]:
    """Read, classify and publish one frame; the milliseconds of each stage."""
    t0 = time.perf_counter()
    ok, image = cap.read()
    if not ok:
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, image = cap.read()
    captured_at = time.time()
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
    return {
        "read": (t1 - t0) * 1e3,
        "classify": (t2 - t1) * 1e3,
        "invoke": classifier.timings.invoke_ms,
        "publish": (t3 - t2) * 1e3,
    }


def worker_serial(args: argparse.Namespace) -> dict:
    """The serial loop for ``args.warmup`` + ``args.seconds``; figures of the measured part."""
    from device.inference.engine import Classifier

    classifier = Classifier(DEFAULT_MODEL, threads=args.threads)
    client = _mqtt_client(args.port)
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
            due, missed = _wait_until_due(due, interval, now)
            late += missed
        frame_id += 1
        timings = _serial_frame(cap, classifier, client, frame_id)
        if measuring:
            frames_measured += 1
            for key, value in timings.items():
                stages[key].append(value)
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
    from device.inference.latency import invoke_alone

    classifier = Classifier(DEFAULT_MODEL, threads=args.threads)
    image = cv2.resize(cv2.imread(str(SAMPLES_DIR / SCENES[0])), FRAME_SIZE)
    tensor = classifier.preprocess(image)
    classifier.infer(tensor)
    invoke = invoke_alone(classifier, tensor)  # the Edge TPU child's round trip when on one
    end = time.monotonic() + args.warmup
    while time.monotonic() < end:
        invoke()
    n, cpu0, t0, machine0 = 0, time.process_time(), time.monotonic(), machine_cpu()
    while time.monotonic() - t0 < args.seconds:
        invoke()
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
    """Run ``_worker KIND --key value ...`` as a subprocess; its JSON figures."""
    argv = [sys.executable, str(BENCH_SCRIPT), "_worker", kind]
    for key, value in kwargs.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_main(argv: list[str]) -> int:
    """``_worker {serial,invoke} [options]``: run one loop, print its figures as JSON."""
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


def serial_latencies(
    messages: list[tuple[float, str, bytes]], scene_frames: int, t0: float
) -> tuple[list[float], list[float]]:
    """Serial-loop latency on every frame, and on scene-change frames only."""
    every: list[float] = []
    changes: list[float] = []
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
