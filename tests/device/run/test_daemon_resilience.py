"""``kestrel run`` through failures: a broker restarting mid-run, a camera failing mid-stream
(see daemon_process.py for the stand-ins)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from daemon_process import (
    AVAILABLE,
    START_TIMEOUT,
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
    assert (s := [e["seq"] for e in events]) == list(range(s[0], s[0] + len(printed)))
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
    assert sorted(set(state_seqs)) == list(range(state_seqs[0], state_seqs[0] + len(printed) + 1))
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
