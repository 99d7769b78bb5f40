"""One camera's worker in-process: the shipped model on sample photos, payloads caught by a
recording sink. The whole daemon as a subprocess is in the test_daemon_* files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from device.capture import Frame, LatestFrameSlot
from device.config import KestrelConfig
from device.publish.sinks import SnapshotStore
from device.run.daemon import Daemon
from device.run.worker import CameraWorker

STATE_KEYS = [
    "camera",
    "label",
    "labels",
    "detected",
    "task",
    "hierarchy",
    "model",
    "timestamp",
    "captured_at",
    "frame_id",
]
# An event is the state after it plus these ("labels" keeps its place: the current labels).
EVENT_KEYS = ["type", "level", "previous", "current"]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []

    def publish_state(self, camera: str, payload: dict) -> None:
        self.messages.append(("state", payload))

    def publish_event(self, camera: str, payload: dict) -> None:
        self.messages.append(("event", payload))

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        self.messages.append(("snapshot", jpeg))

    def publish_status(self, camera: str, payload: dict) -> None:
        self.messages.append(("status", payload))

    def of(self, kind: str) -> list[Any]:
        return [body for k, body in self.messages if k == kind]


@pytest.fixture(scope="module")
def cat(samples_dir: Path) -> np.ndarray:
    return cv2.resize(cv2.imread(str(samples_dir / "cat-chelsea.jpg")), (320, 240))


def worker_for(tmp_path: Path, camera: dict[str, Any], snapshots: bool = False):
    config = KestrelConfig.model_validate(
        {
            "device_id": "barn",
            "mqtt": None,
            "console": False,
            "state_dir": str(tmp_path / "state"),
            "snapshots": {"enabled": snapshots},
            "cameras": [{"name": "door", "source": "demo"} | camera],
        }
    )
    daemon = Daemon(config)
    recorder = Recorder()
    store = SnapshotStore(config.snapshots, config.state_dir)
    (cam,) = config.cameras
    worker = CameraWorker(cam, daemon.stages["door"], LatestFrameSlot(), [recorder], store)
    return worker, recorder


def frames(image: np.ndarray, count: int, frame_format: str = "BGR") -> list[Frame]:
    if frame_format == "YUV420":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
    return [Frame(image, frame_format, i, 1000.0 + i, 10.0 + i) for i in range(count)]


def test_payloads_keep_the_contract_keys_and_a_cascade_stage_runs_on_its_trigger(tmp_path, cat):
    breed = {
        "name": "breed",
        "model": "models/imagenet-efficientnet-lite0",
        "when": ["mammal"],  # an ancestor of the main state "cat"
        "smoothing": {"min_dwell": 0.0},
    }
    worker, recorder = worker_for(tmp_path, {"smoothing": {"min_dwell": 0.0}, "cascade": [breed]})
    worker.publish_initial_state()
    (initial,) = recorder.of("state")
    assert list(initial) == [*STATE_KEYS, "levels"] and initial["frame_id"] is None
    assert initial["levels"] == {
        "breed": {"labels": [], "hierarchy": [], "model": initial["model"]}
    }

    for frame in frames(cat, 3):
        worker.process(frame)
    main, stage = recorder.of("event")
    assert list(main) == list(stage) == [*STATE_KEYS, "levels", *EVENT_KEYS]
    assert (main["level"], main["type"], main["current"]) == ("main", "start", ["cat"])
    assert (stage["level"], stage["type"]) == ("breed", "start")
    assert [x["label"] for x in stage["hierarchy"]] == ["animal", "mammal", "cat"]
    state = recorder.of("state")[-1]
    assert state["levels"]["breed"]["labels"][0]["label"] == "cat"
    assert worker.stats.inferences == 3 and worker.stats.transitions == 2
    assert {"invoke", "breed_invoke", "motion", "publish"} <= set(worker.stats.ms)


@pytest.mark.parametrize(
    ("smoothing", "starts"),
    [
        ({"include": ["mammal"]}, True),
        ({"include": ["food"]}, False),
        ({"exclude": ["animal"]}, False),
    ],
)
def test_include_and_exclude_match_a_labels_ancestors(tmp_path, cat, smoothing, starts):
    worker, recorder = worker_for(tmp_path, {"smoothing": {"min_dwell": 0.0} | smoothing})
    for frame in frames(cat, 3):
        worker.process(frame)
    assert [e["current"] for e in recorder.of("event")] == ([["cat"]] if starts else [])


def test_a_yuv420_transition_is_snapshotted_in_bgr(tmp_path, cat):
    smoothing = {"min_dwell": 0.0, "alpha": 1.0}  # the I420 cat is a borderline "Egyptian Mau"
    worker, recorder = worker_for(tmp_path, {"smoothing": smoothing}, snapshots=True)
    for frame in frames(cat, 2, "YUV420"):
        worker.process(frame)
    (jpeg,) = recorder.of("snapshot")
    (event,) = recorder.of("event")
    assert list(event) == [*STATE_KEYS, *EVENT_KEYS, "snapshot_file"]
    assert event["snapshot_file"].startswith("door-") and event["snapshot_file"].endswith("-0.jpg")
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (240, 320, 3)
    assert (tmp_path / "state" / "snapshots" / event["snapshot_file"]).read_bytes() == jpeg
