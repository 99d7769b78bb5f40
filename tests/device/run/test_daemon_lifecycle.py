"""``kestrel run`` starting and stopping: what a fresh start publishes, ``kill -9``, SIGTERM
(while loading and while running), and configs or bundles it refuses (see daemon_process.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from daemon_process import (
    AVAILABLE,
    DEVICE,
    DISCOVERY,
    PREFIX,
    START_TIMEOUT,
    STATS,
    camera,
    decoded,
    lineage,
    scene_frames,
    started,
    topic,
    write_config,
    write_video,
)

pytestmark = pytest.mark.slow


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
    assert first["seq"] == min(s["seq"] for s in states) and first["frame_id"] is None
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
    tmp_path, photos, debug_mosquitto, make_subscriber, make_gate, start_daemon, broker
):
    """SIGTERM while frames are being classified: exit code 0 within 2 s of the signal. With
    the broker reachable, the daemon publishes ``offline`` itself, then DISCONNECTs (so the
    broker never sends the will), nothing left unsent; with the broker gone (the daemon in its
    reconnect backoff), the exit is just as prompt and the ``offline`` is the broker's will."""
    mosquitto = debug_mosquitto
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
    # What the daemon sent itself, as the broker logged it: a will never appears there.
    sent = mosquitto.packets_from(f"kestrel-{DEVICE}")
    goodbye = [p for p in sent if p.startswith(f"PUBLISH {AVAILABLE} ") or p == "DISCONNECT"]
    online, offline = (f"PUBLISH {AVAILABLE} {len(p)}" for p in (b"online", b"offline"))
    if broker == "reachable":
        assert goodbye[-2:] == [offline, "DISCONNECT"], sent
        assert any("MQTT: stopped (0 message(s) left" in line for line in daemon.stderr)
    else:
        assert goodbye == [online], sent  # neither goodbye nor DISCONNECT reached the broker
        # The broker saw the connection end without a DISCONNECT: a closed socket, a reset one,
        # or "out of memory", as mosquitto 2 once logged it in CI (its wording depends on how
        # the relay's socket went down).
        dropped = (
            f"Client kestrel-{DEVICE} closed its connection.",
            f"Socket error on client kestrel-{DEVICE}, disconnecting.",
            f"Client kestrel-{DEVICE} disconnected due to out of memory.",
        )
        deadline = time.monotonic() + 5.0
        while not any(line in mosquitto.log() for line in dropped):
            assert time.monotonic() < deadline, mosquitto.log()[-2000:]
            time.sleep(0.05)
    print(f"SIGTERM -> exit {took:.3f} s ({broker})")


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
