"""``kestrel run`` as users run it: a subprocess, a real mosquitto, the shipped model, and
OpenCV-written videos of the sample photos as camera stand-ins.

Each test writes a YAML config in its ``tmp_path``, starts ``python -m device.cli -v run
--config FILE`` and watches three things: what a separate MQTT subscriber receives, what the
daemon prints on its console (``console: true``: one line per event and per source status),
and how the process ends. Nothing sleeps for a fixed time to let something happen: every wait
is for a condition, with a timeout whose message shows the daemon's last log lines.

Frames are 320x240, paced at 15 fps by ``source_fps``. Each frame is the photo shifted by a
few pixels with a little noise (a camera never gives the same frame twice); a scene change
cross-fades over four frames, which the model classifies as flickering labels ("cat",
"unknown") that debouncing must swallow.

The camera stand-ins, configs and the daemon process shared by the test_daemon_* files; their
fixtures (``photos``, ``start_daemon``) are in this folder's conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from broker import Received, Subscriber

from device.inference.decode import UNKNOWN

W, H = 320, 240
FPS = 15.0
DEVICE = "testdev"
PREFIX = f"kestrel/{DEVICE}"
AVAILABLE = f"{PREFIX}/available"
STATS = f"{PREFIX}/stats"
DISCOVERY = f"homeassistant/device/{DEVICE}/config"
START_TIMEOUT = 20.0  # interpreter + model load on a busy 2-core machine
FAST_RECONNECT = {"min_delay": 0.1, "max_delay": 0.5}
NO_REPLAY = {"min_delay": 60.0, "max_delay": 60.0}  # a file that ends is not replayed in-test


def topic(camera: str, kind: str) -> str:
    return f"{PREFIX}/{camera}/{kind}"


def jittered(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo shifted by up to 6 px, with sensor-like noise."""
    dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, shift, (W, H), borderMode=cv2.BORDER_REFLECT)
    return np.clip(moved + rng.normal(0, 4, moved.shape), 0, 255).astype(np.uint8)


def scene_frames(
    photos: dict[str, np.ndarray], scenes: list[tuple[str, int]], crossfade: int = 4, seed: int = 0
) -> list[np.ndarray]:
    """``[("cat", 30), ("coffee", 30)]`` -> frames, with a cross-fade between scenes."""
    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    for i, (name, count) in enumerate(scenes):
        if i and crossfade:
            before, after = photos[scenes[i - 1][0]], photos[name]
            for k in range(1, crossfade + 1):
                a = k / (crossfade + 1)
                frames.append(cv2.addWeighted(before, 1 - a, after, a, 0))
        frames += [jittered(photos[name], rng) for _ in range(count)]
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    """An MJPG .avi, written next to ``path`` and moved in place (never seen half-written)."""
    partial = path.with_name(path.stem + ".partial.avi")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    os.replace(partial, path)
    return path


# --------------------------------------------------------------------------- config


def camera(source: str, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "door",
        "source": source,
        "source_fps": FPS,
        "max_fps": FPS,
        "reopen": {"min_delay": 0.2, "max_delay": 0.4},
    } | overrides


def write_config(folder: Path, port: int | None, cameras: list[dict[str, Any]], **top: Any) -> Path:
    """A config as a user would write it (relative paths resolve from its folder)."""
    mqtt = None
    if port is not None:
        mqtt = {
            "host": "127.0.0.1",
            "port": port,
            "stats_interval": 0.5,
            "keepalive": 5,
            "reconnect": FAST_RECONNECT,
        } | top.pop("mqtt", {})
    config = {
        "device_id": DEVICE,
        "state_dir": "state",  # relative: taken from the daemon's working folder
        "console": True,
        "mqtt": mqtt,
        "cameras": cameras,
    } | top
    path = folder / "kestrel.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the daemon process

EVENT_LINE = re.compile(
    r"^(?P<timestamp>\S+)  (?P<camera>[A-Za-z0-9_-]+)(?: \((?P<level>[A-Za-z0-9_-]+)\))?: "
    r"(?P<type>start|change|end)\s+(?P<rest>.*)$"
)
STATUS_LINE = re.compile(r"^(?P<timestamp>\S+)  (?P<camera>[A-Za-z0-9_-]+): source (?P<state>\w+)")


@dataclass(frozen=True)
class ConsoleEvent:
    timestamp: str
    camera: str
    level: str
    type: str
    rest: str  # "label score, ...  [hierarchy]"


class DaemonProcess:
    """``python -m device.cli -v run --config FILE`` with its stdout and stderr collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        """``env``: variables set for this daemon (e.g. NOTIFY_SOCKET) over a clean copy."""
        clean = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "KESTREL_MODEL"):
            clean.pop(name, None)
        env = clean | (env or {})
        self.command = [sys.executable, "-m", "device.cli", "-v", "run", "--config", str(config)]
        self.process = subprocess.Popen(
            self.command,
            cwd=config.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",  # FFmpeg may print bytes of a corrupt file
            bufsize=1,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._cond:
                lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, n: int = 25) -> str:
        with self._cond:
            return "\n".join([*self.stderr[-n:], "-- stdout --", *self.stdout[-n:]])

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``condition``; fail early (with the log) if the daemon exits meanwhile."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"daemon exited ({self.process.returncode}) before {what}:\n"
                        + "\n".join(self.stderr[-25:])
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {what} in {timeout} s; daemon log:\n{self.log_tail()}"
                    )
                self._cond.wait(min(left, 0.1))

    def events(self, camera: str | None = None) -> list[ConsoleEvent]:
        with self._cond:
            lines = list(self.stdout)
        found = []
        for line in lines:
            match = EVENT_LINE.match(line)
            if match and (camera is None or match["camera"] == camera):
                found.append(
                    ConsoleEvent(
                        match["timestamp"],
                        match["camera"],
                        match["level"] or "main",
                        match["type"],
                        match["rest"],
                    )
                )
        return found

    def source_states(self) -> list[str]:
        with self._cond:
            lines = list(self.stdout)
        return [m["state"] for m in map(STATUS_LINE.match, lines) if m]

    def send(self, sig: int) -> float:
        """Send a signal; returns the monotonic time it was sent."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        return sent

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout} s:\n{self.log_tail()}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for reader in self._readers:
            reader.join(5)


def decoded(messages: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages]


def lineage(payload: dict[str, Any]) -> set[str]:
    """Every label of a state or event, with the nodes of its hierarchy path."""
    labels = {x["label"] for x in payload["labels"]}
    return labels | {x["label"] for x in payload.get("hierarchy", [])}


def online(sub: Subscriber) -> Callable[[list[Received]], bool]:
    return lambda ms: any(m.topic == AVAILABLE and m.payload == b"online" for m in ms)


def started(daemon: DaemonProcess, sub: Subscriber) -> None:
    """Wait until the daemon said ``online``."""
    daemon.wait_until(lambda: online(sub)(sub.messages), START_TIMEOUT, "'online'")


def classify_labels(paths: list[Path]) -> dict[str, str]:
    """``kestrel classify --json`` of each file: its answer, unknown as the empty state."""
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", "classify", "--json", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {
        Path(x["path"]).name: "" if x["labels"][0]["label"] == UNKNOWN else x["labels"][0]["label"]
        for x in lines
    }
