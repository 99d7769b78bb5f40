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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from broker import Received, Subscriber, free_port

from device.paths import SAMPLES_DIR

pytestmark = pytest.mark.slow

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


# --------------------------------------------------------------------------- camera stand-ins


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """The cat and coffee sample photos at the video size, BGR."""
    folder = SAMPLES_DIR
    out = {}
    for name in ("cat", "coffee"):
        path = folder / ("cat-chelsea.jpg" if name == "cat" else "coffee.jpg")
        image = cv2.imread(str(path))
        assert image is not None, path
        out[name] = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
    return out


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

    def __init__(self, config: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "KESTREL_MODEL"):
            env.pop(name, None)
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


@pytest.fixture
def start_daemon() -> Iterator[Callable[[Path], DaemonProcess]]:
    """``start_daemon(config_path)``; every daemon is killed at the end, its log printed
    (pytest shows it when the test failed)."""
    started: list[DaemonProcess] = []

    def start(config: Path) -> DaemonProcess:
        daemon = DaemonProcess(config)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()
        print(f"--- daemon {daemon.pid} exit {daemon.process.returncode}\n{daemon.log_tail(60)}")


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- tests


def test_start_publishes_online_initial_state_status_stats_and_discovery(
    tmp_path, photos, shipped_model, mosquitto, make_subscriber, start_daemon
):
    """A fresh start: retained ``online``, a retained state before any frame (dashboards never
    show 'unknown'), the source status, stats, and Home Assistant discovery, re-sent when
    Home Assistant announces itself."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 45)]))
    config = write_config(tmp_path, mosquitto.port, [camera("door.avi", loop=True)])
    sub = make_subscriber(mosquitto.port, [f"{PREFIX}/#", "homeassistant/#"])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    sub.wait_for(
        lambda ms: (
            any(m.topic == DISCOVERY for m in ms)
            and any(m.topic == STATS for m in ms)
            # the state of the first event too (it follows the event)
            and sum(m.topic == topic("door", "state") for m in ms) >= 2
        ),
        timeout=15,
    )

    states = decoded(sub.received(topic("door", "state")))
    first = states[0]
    assert first["seq"] == 1 and first["frame_id"] is None
    assert first["label"] == "" and first["labels"] == [] and first["detected"] is False
    manifest = json.loads((shipped_model / "manifest.json").read_text())
    assert first["model"] == {"name": manifest["name"], "sha256": manifest["model_sha256"]}
    assert first["device"] == DEVICE and first["camera"] == "door"
    (start,) = decoded(sub.received(topic("door", "event")))[:1]
    assert start["type"] == "start" and "cat" in lineage(start)

    statuses = decoded(sub.received(topic("door", "status")))
    assert statuses[-1]["state"] == "streaming" and "door.avi" in statuses[-1]["reason"]
    stats = json.loads(sub.received(STATS)[-1].payload)
    assert stats["device"] == DEVICE and stats["cameras"]["door"]["inferences"] > 0
    assert stats["mqtt"]["connected"] is True

    discovery = json.loads(sub.received(DISCOVERY)[0].payload)
    assert discovery["availability_topic"] == AVAILABLE
    components = discovery["components"]
    assert components[f"kestrel_{DEVICE}_door_label"]["state_topic"] == topic("door", "state")
    assert components[f"kestrel_{DEVICE}_door_snapshot"]["image_topic"] == topic("door", "snapshot")

    # What a subscriber arriving later gets: the retained messages.
    late = make_subscriber(mosquitto.port, [AVAILABLE, topic("door", "state"), DISCOVERY])
    retained = late.wait_for(
        lambda ms: {m.topic for m in ms} >= {AVAILABLE, DISCOVERY, topic("door", "state")}
    )
    assert all(m.retain for m in retained)
    assert next(m for m in retained if m.topic == AVAILABLE).payload == b"online"
    assert json.loads(next(m for m in retained if m.topic == topic("door", "state")).payload)[
        "detected"
    ]

    # Home Assistant restarted: it says online (not retained) and gets discovery again.
    sent = len(sub.received(DISCOVERY))
    sub.client.publish("homeassistant/status", b"online", qos=1)
    sub.wait_for(lambda ms: sum(m.topic == DISCOVERY for m in ms) > sent)
    assert daemon.process.poll() is None


def test_kill_9_leaves_the_last_will_offline(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """``kill -9``: no goodbye from the daemon, the broker publishes its will (retained)."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 30)]))
    config = write_config(tmp_path, mosquitto.port, [camera("door.avi", loop=True)])
    sub = make_subscriber(mosquitto.port, [AVAILABLE])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    daemon.send(signal.SIGKILL)
    assert daemon.wait_exit() == -signal.SIGKILL
    sub.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=5)
    late = make_subscriber(mosquitto.port, [AVAILABLE])
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert retained.retain and retained.payload == b"offline"
    # The broker published the will: the client vanished without a DISCONNECT.
    log = mosquitto.log()
    assert f"Client kestrel-{DEVICE} closed its connection." in log, log
    assert f"Client kestrel-{DEVICE} disconnected." not in log, log


def test_sigterm_while_the_model_loads_exits_0(tmp_path, photos, start_daemon):
    """A stop asked for before the daemon is up (it is still loading the model) ends it
    cleanly: exit code 0, nothing started."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 20)]))
    config = write_config(tmp_path, None, [camera("door.avi", loop=True)])
    daemon = start_daemon(config)
    daemon.wait_until(
        lambda: any("starting" in line for line in daemon.stderr), START_TIMEOUT, "'starting'"
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit(timeout=START_TIMEOUT) == 0, daemon.log_tail()
    assert not [line for line in daemon.stderr if "streaming" in line]


@pytest.mark.parametrize("broker", ["reachable", "gone"])
def test_sigterm_says_offline_and_exits_0_within_2_s(
    tmp_path, photos, mosquitto, make_subscriber, make_gate, start_daemon, broker
):
    """SIGTERM while frames are being classified: exit code 0 within 2 s of the signal. With
    the broker reachable, ``offline`` comes from a clean DISCONNECT (not the will) and nothing
    is left unsent; with the broker gone (the daemon in its reconnect backoff), the exit is
    just as prompt."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 20), ("coffee", 20)]))
    gate = make_gate(mosquitto.port)
    config = write_config(
        tmp_path,
        gate.port,
        [camera("door.avi", loop=True, smoothing={"min_dwell": 0.2})],
        mqtt={"reconnect": {"min_delay": 5.0, "max_delay": 5.0}},
    )
    sub = make_subscriber(mosquitto.port, [AVAILABLE, topic("door", "event")])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    sub.wait_for(lambda ms: any(m.topic == topic("door", "event") for m in ms), timeout=15)
    if broker == "gone":
        gate.close()
        daemon.wait_until(
            lambda: any("lost" in line for line in daemon.stderr), 10, "'connection lost'"
        )
    sent = daemon.send(signal.SIGTERM)
    code = daemon.wait_exit(timeout=10)
    took = time.monotonic() - sent
    assert code == 0, daemon.log_tail()
    assert took <= 2.0, f"exit took {took:.2f} s after SIGTERM"
    sub.wait_for(lambda ms: [m.payload for m in ms if m.topic == AVAILABLE][-1] == b"offline")
    log = mosquitto.log()
    if broker == "reachable":
        assert f"Client kestrel-{DEVICE} disconnected." in log, log
        assert any("MQTT: stopped (0 message(s) left" in line for line in daemon.stderr)
    print(f"SIGTERM -> exit {took:.3f} s ({broker})")


def test_broker_restart_mid_run_every_event_arrives_once_in_order(
    tmp_path, photos, mosquitto, make_subscriber, make_gate, start_daemon
):
    """The broker is killed and restarted while the scene keeps changing. The daemon reconnects
    by itself; the events it printed meanwhile arrive exactly once, in order, with ``seq``
    1, 2, 3, ... -- the same events, one for one, as on its console; the states arrive in order
    too, the retained one sent again after the reconnect."""
    # Cat and coffee alternating every 0.6 s: an event about every 0.6 s.
    frames = scene_frames(photos, [("cat", 9), ("coffee", 9)], crossfade=0)
    write_video(tmp_path / "door.avi", frames)
    gate = make_gate(mosquitto.port)
    cam = camera("door.avi", loop=True, smoothing={"min_dwell": 0.2})
    config = write_config(tmp_path, gate.port, [cam])
    event_topic, state_topic = topic("door", "event"), topic("door", "state")
    sub = make_subscriber(mosquitto.port, [AVAILABLE, event_topic, state_topic])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)

    # Kill the broker between two transitions (they are ~0.6 s apart): when the subscriber
    # has every event the console printed, and the state after it. A message the broker has
    # acknowledged but not yet forwarded dies with it, and is no one's to re-send.
    def quiet() -> bool:
        events = sum(m.topic == event_topic for m in sub.received())
        states = sum(m.topic == state_topic for m in sub.received())
        return events >= 2 and events == len(daemon.events()) and states == events + 1

    daemon.wait_until(quiet, 15, "two events delivered and a quiet moment")
    mosquitto.kill()
    gate.close()  # the daemon stays out until the subscriber is back
    before = len(daemon.events())
    daemon.wait_until(lambda: len(daemon.events()) >= before + 3, 15, "events while offline")
    mosquitto.start()
    sub.wait_subscribed(2)
    gate.open()
    daemon.wait_until(
        lambda: sum(m.payload == b"online" for m in sub.received(AVAILABLE)) >= 2,
        15,
        "'online' after the restart",
    )
    after = len(daemon.events())
    daemon.wait_until(lambda: len(daemon.events()) >= after + 2, 15, "events after reconnecting")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    printed = daemon.events("door")
    assert len(printed) >= 7
    sub.wait_for(lambda ms: sum(m.topic == event_topic for m in ms) >= len(printed), timeout=10)
    time.sleep(0.3)  # not a wait for something to happen: a duplicate would arrive now
    events = decoded(sub.received(event_topic))
    assert [e["seq"] for e in events] == list(range(1, len(printed) + 1))
    assert [(e["timestamp"], e["type"]) for e in events] == [(p.timestamp, p.type) for p in printed]
    for event, line in zip(events, printed, strict=True):
        labels = ", ".join(f"{x['label']} {x['score']:.2f}" for x in event["labels"]) or "-"
        assert line.rest.startswith(labels)
    # States: the initial one, then one per event, in order. After the reconnect the state
    # retained before the restart is published once more (the broker had no persistence and
    # lost it), with its own seq: the one repeat.
    states = decoded(sub.received(state_topic))
    state_seqs = [s["seq"] for s in states]
    assert state_seqs == sorted(state_seqs)
    assert sorted(set(state_seqs)) == list(range(1, len(printed) + 2))
    assert len(state_seqs) == len(set(state_seqs)) + 1
    unique = list({s["seq"]: s for s in states}.values())
    assert [s["frame_id"] for s in unique[1:]] == [e["frame_id"] for e in events]
    connects = [line for line in daemon.stderr if "MQTT: connected to" in line]
    assert len(connects) == 2, connects  # the first connect, then one reconnect by itself


def test_camera_that_fails_mid_stream_is_reopened_and_classified_again(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """The camera stand-in breaks while the daemon runs: first a video truncated part-way
    (it ends early), then the file is deleted, then replaced by garbage, then by a working
    video of another scene. The status topic follows (streaming -> ended / reconnecting ->
    streaming), the daemon keeps running, and the frames after the reopen are classified."""
    video = tmp_path / "door.avi"
    write_video(video, scene_frames(photos, [("cat", 40)]))
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # truncated part-way: ~20 readable frames
    config = write_config(
        tmp_path, mosquitto.port, [camera("door.avi", smoothing={"min_dwell": 0.3})]
    )
    status_topic, event_topic = topic("door", "status"), topic("door", "event")
    sub = make_subscriber(mosquitto.port, [status_topic, event_topic])
    sub.wait_subscribed()
    daemon = start_daemon(config)

    def states() -> list[str]:
        return [s["state"] for s in decoded(sub.received(status_topic))]

    def latest_status() -> dict[str, Any]:
        received = sub.received(status_topic)
        return json.loads(received[-1].payload) if received else {}

    daemon.wait_until(lambda: "ended" in states(), START_TIMEOUT, "the truncated file to end")
    sub.wait_for(lambda ms: any(m.topic == event_topic for m in ms), timeout=10)
    start = decoded(sub.received(event_topic))[0]
    assert start["type"] == "start" and "cat" in lineage(start)

    video.unlink()
    daemon.wait_until(
        lambda: (
            latest_status().get("state") == "reconnecting"
            and "no such file" in latest_status()["reason"]
        ),
        10,
        "'reconnecting' for the deleted file",
    )
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00AVI " + bytes(range(256)) * 16)
    os.replace(garbage, video)
    daemon.wait_until(
        lambda: (
            latest_status().get("state") == "reconnecting"
            and "not a readable video" in latest_status()["reason"]
        ),
        10,
        "'reconnecting' for the corrupt file",
    )
    frames_before = json.loads(sub.received(event_topic)[-1].payload)["frame_id"]
    write_video(video, scene_frames(photos, [("coffee", 40)], seed=1))
    daemon.wait_until(lambda: latest_status().get("state") == "streaming", 10, "'streaming'")
    sub.wait_for(
        lambda ms: any(
            m.topic == event_topic and "espresso" in lineage(json.loads(m.payload)) for m in ms
        ),
        timeout=10,
    )
    assert daemon.process.poll() is None
    # After an outage this long the cat state may have ended first ("end", then "start"),
    # or go straight to the coffee ("change"): either way, from frames after the reopen.
    coffee = decoded(sub.received(event_topic))[-1]
    assert coffee["type"] in ("start", "change") and coffee["frame_id"] > frames_before

    seen = states()
    streaming_again = len(seen) - 1 - seen[::-1].index("streaming")
    assert "reconnecting" in seen[:streaming_again]
    assert seen[0] in ("starting", "streaming") and seen.count("streaming") >= 2
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # The console says the same (read once the daemon has exited: all of it is in).
    console = daemon.source_states()
    last_reconnecting = len(console) - 1 - console[::-1].index("reconnecting")
    assert console[last_reconnecting + 1] == "streaming" and console[-1] == "stopped"


def run_to_exit(config: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("KESTREL_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "device.cli", "run", "--config", str(config)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def broken_bundle(tmp_path: Path, shipped_model: Path, how: str) -> tuple[Path, str]:
    """A copy of the shipped bundle broken in one way, and what the error must say."""
    bundle = tmp_path / "bundle"
    shutil.copytree(shipped_model, bundle)
    if how == "hash":
        model = bundle / "model.tflite"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        return bundle, "model.tflite: model_sha256: expected"
    labels = (bundle / "labels.txt").read_text().splitlines()
    (bundle / "labels.txt").write_text("\n".join(labels[:-1]) + "\n")
    return bundle, "labels.txt: labels: expected the 1000 labels of manifest.json, got 999"


CONFIG_PROBLEMS = {
    # case: (settings merged into the camera / mqtt / top level, or None: no config file,
    #        or "hash" / "labels": a broken bundle; the texts stderr must contain)
    "unknown key": ({"cameras": [{"colour": "red"}]}, ["cameras.0.colour", "Extra inputs"]),
    "wrong type": ({"cameras": [{"max_fps": "fast"}]}, ["cameras.0.max_fps", "valid number"]),
    "bad smoothing": (
        {"cameras": [{"smoothing": {"enter": 0.3, "exit": 0.6}}]},
        ["cameras.0.smoothing", "exit (0.6) must not exceed enter (0.3)"],
    ),
    "unreadable password file": (
        {"mqtt": {"username": "kestrel", "password_file": "no-such-secret"}},
        ["mqtt.password_file", "no-such-secret", "cannot read"],
    ),
    "state_dir not a folder": (
        {"state_dir": "door.avi/state"},
        ["state_dir", "door.avi/state", "cannot keep the MQTT queue there"],
    ),
    "missing file": (None, ["kestrel.yaml", "cannot read"]),
    "broken bundle hash": ("hash", []),
    "broken bundle labels": ("labels", []),
}


@pytest.mark.parametrize("case", CONFIG_PROBLEMS)
def test_bad_config_or_bundle_exits_2_naming_it_before_touching_the_broker(
    tmp_path, photos, shipped_model, mosquitto, make_subscriber, case
):
    """A config the daemon cannot use (bad field, unreadable secret, unusable state_dir,
    missing file) or a broken bundle: exit code 2, one ``kestrel: ...`` line naming the
    file and the field, and no broker connection, no queue created."""
    problem, expected = CONFIG_PROBLEMS[case]
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 5)]))
    cam = camera("door.avi")
    top: dict[str, Any] = {}
    if isinstance(problem, str):
        bundle, message = broken_bundle(tmp_path, shipped_model, problem)
        top["model"] = bundle.name  # relative to the config's folder
        expected = [str(bundle), message]
    elif isinstance(problem, dict):
        cam |= problem.get("cameras", [{}])[0]
        top["mqtt"] = problem.get("mqtt", {})
        top |= {k: v for k, v in problem.items() if k not in ("cameras", "mqtt")}
    config = write_config(tmp_path, mosquitto.port, [cam], **top)
    if problem is None:
        config.unlink()
        expected = [str(config), *expected[1:]]
    sub = make_subscriber(mosquitto.port, ["#"])
    sub.wait_subscribed()

    result = run_to_exit(config)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert any(line.startswith("kestrel: ") for line in result.stderr.splitlines())
    for part in expected:
        assert part in result.stderr, result.stderr
    if isinstance(problem, dict) and "cameras" in problem:
        assert str(config) in result.stderr  # the file, then the field
    # Exited before any broker connection: nothing published, no client seen by mosquitto.
    assert sub.received() == []
    assert f"as kestrel-{DEVICE}" not in mosquitto.log()
    assert not (tmp_path / "state").exists()


def test_scene_change_gives_exactly_one_state_change_with_default_smoothing(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """2 s of the cat, a cross-fade, 2 s of the coffee, at 15 fps. Camera ``door`` has the
    default smoothing (EMA 0.5, enter 0.5, exit 0.35, min_dwell 1 s): one ``start`` (the
    cat), one ``change`` (to espresso), nothing else. Camera ``raw`` watches the same video
    without debouncing (alpha 1, min_dwell 0) and shows the flicker that was swallowed."""
    write_video(tmp_path / "scene.avi", scene_frames(photos, [("cat", 30), ("coffee", 30)]))
    door = camera("scene.avi", reopen=NO_REPLAY)  # default smoothing; the file plays once
    raw = camera(
        "scene.avi", name="raw", reopen=NO_REPLAY, smoothing={"alpha": 1.0, "min_dwell": 0}
    )
    config = write_config(
        tmp_path, mosquitto.port, [door, raw], model="models/imagenet-efficientnet-lite0"
    )
    event_topic, state_topic = topic("door", "event"), topic("door", "state")
    sub = make_subscriber(mosquitto.port, [event_topic, state_topic, topic("raw", "event")])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    daemon.wait_until(
        lambda: daemon.source_states().count("ended") == 2, START_TIMEOUT + 10, "both ends"
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    start, change = daemon.events("door")  # exactly two events on the console...
    sub.wait_for(lambda ms: sum(m.topic == event_topic for m in ms) >= 2)
    events = decoded(sub.received(event_topic))
    assert [(e["type"], e["timestamp"]) for e in events] == [
        ("start", start.timestamp),
        ("change", change.timestamp),
    ]  # ...and the same two over MQTT
    assert "cat" in lineage(events[0]) and events[0]["previous"] == []
    assert [x["label"] for x in events[1]["hierarchy"]] == ["food", "espresso"]
    assert events[1]["previous"] == events[0]["current"]
    assert events[1]["current"] == ["espresso"] and events[1]["labels"][0]["score"] >= 0.5
    states = decoded(sub.received(state_topic))
    assert [s["label"] for s in states] == ["", events[0]["current"][0], "espresso"]
    assert states[-1]["frame_id"] == events[1]["frame_id"]
    # Undebounced, the same frames give more than two states (the fade flickers).
    flicker = daemon.events("raw")
    assert len(flicker) > 2, flicker
    # Two cameras on one model: no frame failed (an interpreter is not thread-safe).
    assert not [line for line in daemon.stderr if " ERROR " in line]


def test_snapshots_published_retained_and_saved_with_a_bounded_count(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """Each transition publishes the triggering frame as a retained JPEG and saves it under
    ``state_dir/snapshots``, keeping only the newest ``max_files``."""
    frames = scene_frames(photos, [("cat", 9), ("coffee", 9)], crossfade=0)
    write_video(tmp_path / "door.avi", frames)
    cam = camera("door.avi", loop=True, smoothing={"min_dwell": 0.2})
    config = write_config(
        tmp_path, mosquitto.port, [cam], snapshots={"max_files": 2, "jpeg_quality": 80}
    )
    snapshot_topic, event_topic = topic("door", "snapshot"), topic("door", "event")
    sub = make_subscriber(mosquitto.port, [snapshot_topic, event_topic])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    daemon.wait_until(lambda: len(daemon.events()) >= 4, START_TIMEOUT + 10, "four transitions")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    printed = daemon.events()
    sub.wait_for(lambda ms: sum(m.topic == event_topic for m in ms) >= len(printed))
    events = decoded(sub.received(event_topic))
    folder = tmp_path / "state" / "snapshots"
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 2  # 4+ transitions, max_files 2
    assert {f.name for f in files} == {e["snapshot_file"] for e in events[-2:]}
    for event, path in ((e, folder / e["snapshot_file"]) for e in events[-2:]):
        image = cv2.imread(str(path))
        assert image is not None and image.shape == (H, W, 3)
        assert path.name.startswith("door-") and f"-{event['frame_id']}.jpg" in path.name
        # The saved picture is the scene the event names.
        scene = "coffee" if "espresso" in lineage(event) else "cat"
        other = "cat" if scene == "coffee" else "coffee"
        assert (
            np.abs(image.astype(float) - photos[scene]).mean()
            < np.abs(image.astype(float) - photos[other]).mean()
        )
    published = sub.received(snapshot_topic)
    assert published
    for message in published:
        image = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (H, W, 3)
    # A late subscriber gets the newest one, retained: the file of the last event.
    late = make_subscriber(mosquitto.port, [snapshot_topic])
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert retained.retain
    assert retained.payload == (folder / events[-1]["snapshot_file"]).read_bytes()


def test_metrics_endpoint_serves_prometheus_text_without_mqtt(tmp_path, photos, start_daemon):
    """``metrics_port`` with ``mqtt: null``: the daemon runs without a broker and GET /metrics
    counts the camera's inferences."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 30)]))
    port = free_port()
    config = write_config(tmp_path, None, [camera("door.avi", loop=True)], metrics_port=port)
    daemon = start_daemon(config)
    pattern = re.compile(
        r'^kestrel_inferences_total\{device="testdev",camera="door"\} (\d+)$', re.M
    )
    seen: list[int] = []
    http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from env

    def inferences() -> bool:
        try:
            with http.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                body = r.read().decode()
                kind = r.headers["Content-Type"]
        except OSError:
            return False
        match = pattern.search(body)
        assert match, body
        assert kind.startswith("text/plain; version=0.0.4")
        assert "# TYPE kestrel_inferences_total counter" in body
        seen.append(int(match[1]))
        counted = [n for n in seen if n > 0]
        return len(counted) >= 2 and counted[-1] > counted[0]  # counting, and still counting

    daemon.wait_until(inferences, START_TIMEOUT, "inferences counted on /metrics")
    with pytest.raises(urllib.error.HTTPError) as missing:
        http.open(f"http://127.0.0.1:{port}/other", timeout=2)
    assert missing.value.code == 404
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_cascade_state_carries_both_levels(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """A second stage (here the same bundle, named ``breed``) runs only while the main state is
    a cat: its start and end are events of level ``breed``, and every state carries it under
    ``levels``."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 30), ("coffee", 30)]))
    fast = {"min_dwell": 0.3}
    cam = camera(
        "door.avi",
        reopen=NO_REPLAY,
        smoothing=fast,
        cascade=[
            {
                "name": "breed",
                "model": "models/imagenet-efficientnet-lite0",
                "when": ["cat"],
                "smoothing": fast,
            }
        ],
    )
    config = write_config(tmp_path, mosquitto.port, [cam])
    event_topic, state_topic = topic("door", "event"), topic("door", "state")
    sub = make_subscriber(mosquitto.port, [event_topic, state_topic])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    daemon.wait_until(lambda: "ended" in daemon.source_states(), START_TIMEOUT + 10, "the end")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    printed = daemon.events()
    sub.wait_for(lambda ms: sum(m.topic == event_topic for m in ms) >= len(printed))
    events = decoded(sub.received(event_topic))
    assert [(e["level"], e["type"]) for e in events] == [
        ("main", "start"),
        ("breed", "start"),
        ("main", "change"),
        ("breed", "end"),
    ]
    assert [(p.level, p.type) for p in printed] == [(e["level"], e["type"]) for e in events]
    breed = events[1]
    assert "cat" in lineage(breed)
    assert breed["model"]["name"] == "imagenet-efficientnet-lite0"
    states = decoded(sub.received(state_topic))
    assert all(set(s["levels"]) == {"breed"} for s in states)
    with_breed = [s for s in states if s["levels"]["breed"]["labels"]]
    assert with_breed, states
    assert "cat" in lineage(with_breed[0]) and "cat" in {
        x["label"] for x in with_breed[0]["levels"]["breed"]["hierarchy"]
    }
    assert states[-1]["label"] == "espresso" and states[-1]["levels"]["breed"]["labels"] == []
