"""Model updates end to end: a real mosquitto, a real daemon on a video, ``kestrel push`` as a
subprocess, the shipped bundle and a renamed copy of it (``door-v2``)."""

from __future__ import annotations

import json
import signal

from daemon_process import START_TIMEOUT, started, topic
from ota_daemon import model_topic, ota_config, push, states, stats, statuses

from device.cli import main

ORIGINAL = "imagenet-efficientnet-lite0"


def _latest_status(sub) -> dict:
    sub.wait_for(lambda ms: any(m.topic == model_topic() for m in ms), START_TIMEOUT)
    return statuses(sub)[-1]


def _inferences(sub) -> int:
    return stats(sub)[-1]["cameras"]["door"]["inferences"] if stats(sub) else 0


def _classifies_with(sub, name: str) -> None:
    """The camera's state names ``name`` and has found the cat again with it."""
    sub.wait_for(
        lambda ms: any(s["model"]["name"] == name and s["label"] for s in states(sub)[-1:]),
        START_TIMEOUT,
    )


def test_a_pushed_model_is_swapped_in_kept_across_restarts_and_rolled_back(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon, bundle_b, capsys
):
    sub = make_subscriber(mosquitto.port, ["kestrel/#", "homeassistant/#"])
    sub.wait_subscribed()
    config = ota_config(tmp_path, mosquitto.port, photos)
    daemon = start_daemon(config)
    started(daemon, sub)
    first = _latest_status(sub)
    assert (first["status"], first["name"], first["groups"]) == ("active", ORIGINAL, [])
    _classifies_with(sub, ORIGINAL)

    # The push: exit 0 once the device runs it; no restart, frames keep flowing.
    before = _inferences(sub)
    result = push(mosquitto.port, str(bundle_b), "--device", "testdev")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "testdev: receiving door-v2" in result.stdout
    assert "testdev: active door-v2" in result.stdout
    status = statuses(sub)[-1]
    assert (status["status"], status["name"], status["previous"]) == (
        "active",
        "door-v2",
        first["sha256"],
    )
    events = [json.loads(m.payload) for m in sub.received(topic("door", "event"))]
    (swap,) = [e for e in events if e["type"] == "model"]
    assert swap["model"]["name"] == "door-v2" and swap["previous_model"]["name"] == ORIGINAL
    assert swap["previous"] and swap["labels"] == [] and swap["bundle_sha256"] == status["sha256"]
    _classifies_with(sub, "door-v2")
    sub.wait_for(lambda ms: _inferences(sub) > before + 10, START_TIMEOUT)
    assert stats(sub)[-1]["cameras"]["door"]["errors"] == 0
    assert daemon.process.poll() is None and daemon.source_states().count("starting") == 1
    discovery = json.loads(sub.received("homeassistant/device/testdev/config")[-1].payload)
    assert "model door-v2 (" in discovery["device"]["sw_version"]

    # Killed while the update is on probation: the restart runs door-v2 (and says so) ...
    daemon.process.kill()
    daemon.wait_exit()
    daemon = start_daemon(config)
    daemon.wait_until(
        lambda: any(
            "model door-v2" in line and "not the config's" in line for line in daemon.stderr
        ),
        START_TIMEOUT,
        "the log line naming the model from state_dir",
    )
    started_at = len(sub.received())
    daemon.wait_until(
        lambda: any("running: device testdev" in line for line in daemon.stderr),
        START_TIMEOUT,
        "the restarted daemon running",
    )
    # ... killed again within its first minute: a crash loop, the next start goes back.
    daemon.process.kill()
    daemon.wait_exit()
    daemon = start_daemon(config)
    sub.wait_for(
        lambda ms: any(
            m.topic == model_topic() and json.loads(m.payload)["status"] == "rolled_back"
            for m in ms[started_at:]
        ),
        START_TIMEOUT,
    )
    back = statuses(sub)[-1]
    assert (back["name"], back["sha256"], back["previous"]) == (
        ORIGINAL,
        first["sha256"],
        status["sha256"],
    )
    assert "crashed 2 times within 60 s of starting with door-v2" in back["reason"]
    _classifies_with(sub, ORIGINAL)

    # kestrel push --rollback: back to the one before, door-v2 again.
    args = ["--rollback", "--device", "testdev", "--port", str(mosquitto.port)]
    assert main(["push", *args]) == 0  # in this process this time: no second start-up
    assert "testdev: rolled_back door-v2" in capsys.readouterr().out
    _classifies_with(sub, "door-v2")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    store = tmp_path / "state" / "models"
    assert sorted(p.name for p in store.iterdir() if p.is_dir()) == [status["sha256"]]
