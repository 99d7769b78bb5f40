"""What ``kestrel run`` produces from a scene: debounced state changes, snapshots, the
Prometheus endpoint and a cascade's second stage (see daemon_process.py for the stand-ins)."""

from __future__ import annotations

import re
import signal
import urllib.request

import cv2
import numpy as np
import pytest
from broker import free_port
from daemon_process import (
    NO_REPLAY,
    START_TIMEOUT,
    H,
    W,
    camera,
    decoded,
    lineage,
    scene_frames,
    topic,
    write_config,
    write_video,
)

pytestmark = pytest.mark.slow


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
