"""``kestrel run`` deciding what counts: the motion gate and ancestor ``include`` / ``exclude``
inside a real daemon (a subprocess, a real mosquitto, the shipped hierarchical model; see
daemon_process.py). The pure pieces have their own tests (test_motion.py, test_smoothing.py)."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from daemon_process import (
    AVAILABLE,
    NO_REPLAY,
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

SCENE = 45  # frames per scene: 3 s at 15 fps


def still_frames(photos: dict[str, np.ndarray], names: list[str], seed: int = 0) -> list:
    """Each photo held still for SCENE frames, with sensor noise only: a static scene."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(photos[name] + rng.normal(0, 3, photos[name].shape), 0, 255).astype(np.uint8)
        for name in names
        for _ in range(SCENE)
    ]


def test_motion_gate_skips_still_frames_yet_publishes_each_scene_in_it(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """A cat that appears and sits still, then a coffee: the gate turns most still frames away,
    and each scene is still published while it lasts (its label does not wait for the gate's
    force_interval, 10 s, longer than the scene)."""
    write_video(tmp_path / "door.avi", still_frames(photos, ["cat", "coffee"]))
    cam = camera("door.avi", motion={"enabled": True}, reopen=NO_REPLAY)
    config = write_config(tmp_path, mosquitto.port, [cam])
    sub = make_subscriber(mosquitto.port, [AVAILABLE, topic("door", "event"), STATS])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    daemon.wait_until(lambda: "ended" in daemon.source_states(), 30, "the end of the video")

    def done(ms) -> bool:  # stats taken after the last frame
        stats = [json.loads(m.payload)["cameras"]["door"] for m in ms if m.topic == STATS]
        return bool(stats) and stats[-1]["source"] != "streaming"

    sub.wait_for(done, timeout=10)
    events = decoded(sub.received(topic("door", "event")))
    assert [e["type"] for e in events[:2]] == ["start", "change"], events
    cat, coffee = events[:2]
    assert "cat" in lineage(cat) and cat["frame_id"] <= SCENE, cat  # within the cat scene
    assert "espresso" in lineage(coffee) and SCENE < coffee["frame_id"] <= 2 * SCENE, coffee
    stats = json.loads(sub.received(STATS)[-1].payload)["cameras"]["door"]
    assert stats["motion_skipped"] > SCENE // 2, stats  # the still frames were gated
    assert stats["inferences"] + stats["motion_skipped"] <= stats["frames"]
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    print(f"motion gate: {stats['inferences']} inferences, {stats['motion_skipped']} skipped")


@pytest.mark.parametrize(
    ("smoothing", "wanted", "never"),
    [
        ({"include": ["mammal"]}, "cat", "espresso"),  # "cat" lies under mammal
        ({"exclude": ["animal"]}, "espresso", "cat"),
    ],
    ids=["include-ancestor", "exclude-ancestor"],
)
def test_include_and_exclude_by_an_ancestor_in_a_running_daemon(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon, smoothing, wanted, never
):
    """Cat, coffee, cat: a filter naming an ancestor (mammal, animal) keeps or drops the leaf
    labels under it; the other label never reaches a state or an event."""
    scenes = [("cat", 30), ("coffee", 30), ("cat", 30)]
    write_video(tmp_path / "door.avi", scene_frames(photos, scenes))
    cam = camera("door.avi", smoothing={"min_dwell": 0.3} | smoothing, reopen=NO_REPLAY)
    config = write_config(tmp_path, mosquitto.port, [cam])
    sub = make_subscriber(mosquitto.port, [topic("door", "event"), topic("door", "state")])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    daemon.wait_until(lambda: "ended" in daemon.source_states(), 40, "the end of the video")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    events = decoded(sub.received(topic("door", "event")))
    states = decoded(sub.received(topic("door", "state")))
    assert any(e["type"] == "start" and wanted in lineage(e) for e in events), events
    assert not any(never in lineage(p) for p in events + states), events
    if wanted == "cat":  # it went away with the coffee and came back
        assert [e["type"] for e in events] == ["start", "end", "start"], events
