"""Collecting frames for a dataset (``collect:``) in-process: the decisions on real predictions
of the shipped model over the sample photos, the bounds of the folder, and the failure modes.
The whole daemon on a video is in test_collect_daemon.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from device.capture import Frame, LatestFrameSlot
from device.config import ConfigError, KestrelConfig, parse_config
from device.inference.bundle import Thresholds, load_bundle
from device.inference.decode import LabelScore, Prediction
from device.inference.engine import Classifier
from device.paths import DEFAULT_MODEL
from device.publish.payloads import MAIN_STAGE
from device.run.cascade import CascadeStage
from device.run.collect import Collector
from device.run.collect_policy import unsure_why
from device.run.collect_store import FrameStore, frame_stem
from device.run.worker import CameraWorker

SIDECAR_KEYS = [
    "camera",
    "time",
    "captured_at",
    "frame_id",
    "reason",
    "why",
    "model",
    "task",
    "guess",
    "answer",
    "scores",
    "hierarchy",
    "state",
    "roi",
    "image",
    "size",
]


@pytest.fixture(scope="module")
def photos(samples_dir: Path) -> dict[str, np.ndarray]:
    files = {"cat": "cat-chelsea.jpg", "coffee": "coffee.jpg", "astronaut": "astronaut.jpg"}
    return {k: cv2.resize(cv2.imread(str(samples_dir / f)), (320, 240)) for k, f in files.items()}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    """The shipped model, loaded once per module (each test gets fresh smoothers)."""
    return Classifier(DEFAULT_MODEL, top_k=3)


def camera_with(tmp_path: Path, **collect: Any) -> dict[str, Any]:
    return {
        "smoothing": {"min_dwell": 0.0, "alpha": 1.0},
        "collect": {"enabled": True, "directory": str(tmp_path / "frames")} | collect,
    }


def rig(classifier: Classifier, camera: dict[str, Any], queue_frames: int = 16):
    """(worker, collector) of one camera, not started: frames go through ``worker.process``."""
    config = KestrelConfig.model_validate(
        {"mqtt": None, "cameras": [{"name": "door", "source": "demo"} | camera]}
    )
    (cam,) = config.cameras
    stages = [CascadeStage.build(MAIN_STAGE, classifier, cam.smoothing)]
    stages += [  # a cascade stage on the same bundle, as the daemon builds one
        CascadeStage.build(stage.name, classifier, stage.smoothing, stage.when)
        for stage in cam.cascade
    ]
    collector = Collector(cam, queue_frames=queue_frames)
    worker = CameraWorker(cam, stages, LatestFrameSlot(), [], None, collector=collector)
    return worker, collector


def feed(worker: CameraWorker, images: list[np.ndarray], t0: float = 10.0, step: float = 1.0):
    for i, image in enumerate(images):
        worker.process(Frame(image, "BGR", i, 1000.0 + t0 + i * step, t0 + i * step))


def sidecars(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# --------------------------------------------------------------------------- configuration


def test_enabled_and_a_directory_are_enough_and_a_missing_directory_is_named():
    config = parse_config(
        {
            "cameras": [
                {"name": "door", "source": "demo", "collect": {"enabled": True, "directory": "d"}}
            ]
        }
    )
    collect = config.cameras[0].collect
    assert collect.reasons == ["uncertain", "transition", "interval"]
    with pytest.raises(ConfigError, match=r"cameras\.0\.collect.*directory is required"):
        parse_config(
            {"cameras": [{"name": "door", "source": "demo", "collect": {"enabled": True}}]}
        )
    with pytest.raises(ConfigError, match=r"cameras\.0\.collect\.reasons\.0"):
        parse_config(
            {"cameras": [{"name": "door", "source": "demo", "collect": {"reasons": ["always"]}}]}
        )


def test_config_check_warns_about_an_unusable_folder_but_never_refuses_it(tmp_path):
    from device.config.checks import check_config

    (tmp_path / "blocked").write_text("a file, not a folder")
    collect = {"enabled": True, "directory": str(tmp_path / "blocked" / "frames")}
    config = KestrelConfig.model_validate(
        {
            "mqtt": None,
            "state_dir": str(tmp_path / "state"),
            "cameras": [{"name": "door", "source": "demo", "collect": collect}],
        }
    )
    for running in (False, True):
        (warning,) = check_config(config, "k.yaml", running=running)
        assert warning.startswith("k.yaml: cameras.0.collect.directory: ")
        assert "blocked is not a folder; no frame would be kept" in warning


# --------------------------------------------------------------------------- decisions


def test_uncertain_means_unknown_or_a_score_near_its_calibrated_threshold():
    manifest = load_bundle(DEFAULT_MODEL).manifest
    binary = manifest.model_copy(
        update={"task": "binary", "labels": ("empty", "cat"), "thresholds": Thresholds(binary=0.3)}
    )

    def pred(task: str, *scores: tuple[str, float], answer: str | None = None) -> Prediction:
        ranked = tuple(LabelScore(label, s) for label, s in scores)
        return Prediction(task, (LabelScore(answer, 0.2),) if answer else ranked[:1], ranked)

    # binary, threshold 0.3: the positive score 0.35 is near it, 0.6 is not (margin 0.1)
    assert unsure_why(pred("binary", ("cat", 0.35), ("empty", 0.65)), binary, 0.1) == (
        "cat 0.35 near its threshold 0.30"
    )
    assert unsure_why(pred("binary", ("cat", 0.6), ("empty", 0.4)), binary, 0.1) is None
    multiclass = manifest.model_copy(
        update={"task": "multiclass", "thresholds": Thresholds(abstain=0.6)}
    )
    assert unsure_why(pred("multiclass", ("cat", 0.65), ("dog", 0.3)), multiclass, 0.1)
    assert unsure_why(pred("multiclass", ("cat", 0.9), ("dog", 0.1)), multiclass, 0.1) is None
    assert unsure_why(pred("multiclass", ("cat", 0.2), answer="unknown"), multiclass, 0.0) == (
        "unknown"
    )
    multilabel = manifest.model_copy(
        update={"task": "multilabel", "thresholds": Thresholds(per_label={"dog": 0.8})}
    )
    # every label against its own threshold: dog 0.75 is near 0.8 although cat is sure
    assert "dog" in unsure_why(pred("multilabel", ("cat", 0.99), ("dog", 0.75)), multilabel, 0.1)
    assert unsure_why(pred("multilabel", ("cat", 0.99), ("dog", 0.2)), multilabel, 0.1) is None


def test_a_transition_frame_and_an_unknown_frame_are_kept_with_their_sidecars(
    tmp_path, classifier, photos
):
    """cat, cat, astronaut (the shipped model says "unknown"): frame 0 starts the state (cat),
    frame 1 is an interval candidate too like frame 0 to be kept, frame 2 ends the state. With
    only ``uncertain`` wanted, the astronaut frame is kept as such."""
    worker, collector = rig(classifier, camera_with(tmp_path, uncertain_margin=0.0))
    feed(worker, [photos["cat"], photos["cat"], photos["astronaut"]])
    assert collector.drain() == 2 and collector.not_distinct == 1
    first, last = sidecars(tmp_path / "frames")
    assert list(first) == SIDECAR_KEYS
    assert (first["reason"], first["why"], first["state"]) == (
        "transition",
        "main: - -> cat",
        ["cat"],
    )
    assert first["guess"] in first["scores"]
    assert first["model"] == {
        "name": classifier.bundle.name,
        "sha256": classifier.bundle.manifest.model_sha256,
    }
    assert [x["label"] for x in first["hierarchy"]][-1] == "cat"
    assert (last["reason"], last["why"], last["frame_id"]) == ("transition", "main: cat -> -", 2)
    assert last["answer"][0]["label"] == "unknown" and last["state"] == []
    assert last["guess"] == max(last["scores"], key=last["scores"].get)  # a class, not unknown
    # Each sidecar names its picture, a whole JPEG of the frame's size.
    for sidecar in (first, last):
        picture = cv2.imread(str(tmp_path / "frames" / sidecar["image"]))
        assert picture.shape == (240, 320, 3) and sidecar["size"] == [320, 240]

    only_unsure, collector = rig(
        classifier, camera_with(tmp_path / "u", reasons=["uncertain"], uncertain_margin=0.0)
    )
    feed(only_unsure, [photos["cat"], photos["astronaut"]])
    assert collector.drain() == 1
    (kept,) = sidecars(tmp_path / "u" / "frames")
    assert (kept["reason"], kept["why"], kept["frame_id"]) == ("uncertain", "main: unknown", 1)


def test_a_cascade_stage_has_its_own_record_under_levels(tmp_path, classifier, photos):
    """A second stage runs while the main state holds a mammal: on the first cat frame both
    states start (one frame, one pair, both named in ``why``), its sidecar has the stage's own
    guess and state under ``levels``; the coffee frame ends it: it only names its model."""
    camera = camera_with(tmp_path, reasons=["transition"])
    camera["cascade"] = [
        {
            "name": "breed",
            "model": str(DEFAULT_MODEL),
            "when": ["mammal"],
            "smoothing": {"min_dwell": 0.0, "alpha": 1.0},
        }
    ]
    worker, collector = rig(classifier, camera)
    feed(worker, [photos["cat"], photos["cat"], photos["coffee"]])
    assert collector.drain() == 2
    start, change = sidecars(tmp_path / "frames")
    assert start["why"] == "main: - -> cat; breed: - -> cat"
    breed = start["levels"]["breed"]
    assert (breed["state"], breed["guess"]) == (["cat"], start["guess"])
    assert list(breed) == ["model", "task", "guess", "answer", "scores", "hierarchy", "state"]
    assert change["why"] == "main: cat -> espresso; breed: cat -> -"
    assert change["levels"]["breed"] == {
        "model": change["model"],
        "task": "hierarchical",
        "state": [],
    }  # idle: no prediction of its own on this frame


def test_flicker_the_smoother_swallows_counts_as_uncertain(tmp_path, classifier, photos):
    """cat / coffee alternating with min_dwell 30 s: nothing is ever published, but where the
    smoother is heading changes on every frame; from the third change the state flip-flops."""
    camera = camera_with(tmp_path, reasons=["uncertain"], uncertain_margin=0.0)
    camera["smoothing"]["min_dwell"] = 30.0
    worker, collector = rig(classifier, camera)
    feed(worker, [photos["cat"], photos["coffee"]] * 2, step=10.0)  # unsure frames: 10 s apart
    assert collector.drain() == 2
    kept = sidecars(tmp_path / "frames")
    assert [(s["frame_id"], s["why"]) for s in kept] == [
        (2, "main: flip-flop (3 changes in 60 s)"),
        (3, "main: flip-flop (4 changes in 60 s)"),
    ]
    assert all(s["state"] == [] for s in kept)


def test_interval_keeps_a_frame_only_when_it_differs_from_the_kept_ones(
    tmp_path, classifier, photos
):
    """interval_minutes 0.05 (3 s): the first cat is kept; 3 s later the same cat with sensor
    noise is too like it (Bhattacharyya < min_difference); the coffee 3 s after is kept."""
    camera = camera_with(tmp_path, reasons=["interval"], interval_minutes=0.05)
    worker, collector = rig(classifier, camera)
    rng = np.random.default_rng(1)
    noisy = np.clip(photos["cat"] + rng.normal(0, 4, photos["cat"].shape), 0, 255).astype(np.uint8)
    # t = 10, 11 (not due), 13 (due: too alike), 14 (not probed again yet), 16 (coffee: kept)
    for t, image in [
        (10, photos["cat"]),
        (11, photos["coffee"]),
        (13, noisy),
        (14, photos["coffee"]),
        (16, photos["coffee"]),
    ]:
        worker.process(Frame(image, "BGR", t, 1000.0 + t, float(t)))
        collector.drain()
    assert [s["frame_id"] for s in sidecars(tmp_path / "frames")] == [10, 16]
    assert collector.not_distinct == 1
    assert collector.stats()["saved"] == {"interval": 2}


def test_each_reason_keeps_at_most_max_per_minute_and_unsure_frames_are_spread(
    tmp_path, classifier, photos
):
    """max_per_minute 2: unsure frames (the astronaut: "unknown") at least 30 s apart, two in
    any minute; a transition (the cat arrives) is kept although the unsure ones used theirs."""
    camera = camera_with(tmp_path, reasons=["uncertain", "transition"], uncertain_margin=0.0)
    camera["collect"]["max_per_minute"] = 2
    worker, collector = rig(classifier, camera)
    feed(worker, [photos["astronaut"]] * 5, t0=10.0, step=10.0)  # t = 10, 20, ... 50
    feed(worker, [photos["cat"]], t0=55.0)
    feed(worker, [photos["astronaut"]], t0=71.0)  # t = 10 is over a minute old; 40 is 31 s ago
    collector.drain()
    kept = [(s["captured_at"] - 1000, s["reason"]) for s in sidecars(tmp_path / "frames")]
    assert kept == [
        (10, "uncertain"),
        (40, "uncertain"),  # 20 and 30: too soon after 10; 50: two in the last minute
        (55, "transition"),
        (71, "transition"),  # the cat left: the frame that ended its state
    ]
    assert collector.stats()["rate_limited"] == 3


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path, classifier, photos):
    camera = camera_with(tmp_path, reasons=["uncertain"], uncertain_margin=0.0)
    worker, collector = rig(classifier, camera, queue_frames=1)
    feed(worker, [photos["astronaut"]] * 3, step=10.0)  # the writer thread never started
    assert collector.stats()["dropped"] == {"queue_full": 2, "write_failed": 0}
    assert collector.drain() == 1


# --------------------------------------------------------------------------- the folder


def test_the_cameras_own_jpeg_is_kept_as_it_is(tmp_path, classifier, photos):
    """An MJPEG camera's frame is decoded small for the model; its own full-size JPEG is the
    one kept, byte for byte."""
    worker, collector = rig(classifier, camera_with(tmp_path, reasons=["transition"]))
    ok, big = cv2.imencode(".jpg", cv2.resize(photos["cat"], (640, 480)))
    assert ok
    worker.process(Frame(photos["cat"], "BGR", 7, 1234.5, 10.0, jpeg=big.tobytes()))
    assert collector.drain() == 1
    (sidecar,) = sidecars(tmp_path / "frames")
    assert (tmp_path / "frames" / sidecar["image"]).read_bytes() == big.tobytes()
    assert (
        sidecar["size"] == [640, 480] and sidecar["image"] == frame_stem("door", 1234.5, 7) + ".jpg"
    )


def test_the_oldest_pairs_go_beyond_the_bounds_and_leftovers_are_cleaned(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "door.20260101T000000.000000Z-1.jpg.partial").write_bytes(b"half")
    (folder / "door.20260101T000000.000000Z-2.jpg").write_bytes(b"picture without sidecar")
    (folder / "door.20260101T000000.000000Z-3.json").write_bytes(b"")  # empty: unfinished
    (folder / "door.20250101T000000.000000Z-0.jpg").write_bytes(b"x" * 100)  # an old whole pair
    (folder / "door.20250101T000000.000000Z-0.json").write_bytes(b"{}")
    (folder / "barn.20250101T000000.000000Z-0.jpg").write_bytes(b"another camera's")
    (folder / "cat").mkdir()
    (folder / "cat" / "door.20240101T000000.000000Z-0.jpg").write_bytes(b"labelled")

    store = FrameStore(folder, "door", max_files=3, max_mb=1.0)
    for i in range(4):
        store.save(frame_stem("door", 1.8e9 + i, i), b"j" * 1000, b"{}")
    left = sorted(p.name for p in folder.iterdir())
    assert left == [
        "barn.20250101T000000.000000Z-0.jpg",
        "cat",
        *[
            f"{frame_stem('door', 1.8e9 + i, i)}{suffix}"
            for i in (1, 2, 3)
            for suffix in (".jpg", ".json")
        ],
    ]
    assert (folder / "cat" / "door.20240101T000000.000000Z-0.jpg").exists()
    assert (store.count, store.pruned) == (3, 2)  # the 2025 pair, then the first new one

    by_size = FrameStore(tmp_path / "sized", "door", max_files=100, max_mb=0.0025)
    for i in range(4):
        by_size.save(frame_stem("door", 1.8e9 + i, i), b"j" * 1000, b"{}")
    assert by_size.count == 2 and by_size.bytes <= 2500 and by_size.pruned == 2


def test_an_unwritable_folder_drops_counts_and_logs_once(tmp_path, classifier, photos, caplog):
    """A regular file where the folder's parent should be: a real ENOTDIR on every write."""
    (tmp_path / "blocked").write_text("a file, not a folder")
    camera = camera_with(tmp_path, reasons=["uncertain"], uncertain_margin=0.0)
    camera["collect"]["directory"] = str(tmp_path / "blocked" / "frames")
    worker, collector = rig(classifier, camera)
    with caplog.at_level(logging.WARNING, logger="device.run.collect"):
        feed(worker, [photos["astronaut"]] * 3, step=10.0)
        assert collector.drain() == 0
    assert collector.stats()["dropped"]["write_failed"] == 3
    warnings = [r.getMessage() for r in caplog.records if "cannot write frames" in r.getMessage()]
    assert len(warnings) == 1 and "blocked/frames" in warnings[0], caplog.text


def test_a_full_disk_leaves_nothing_behind_and_writing_resumes(
    tmp_path, classifier, photos, caplog
):
    """The picture of frame 0 goes to /dev/full (a real ENOSPC, through a link where its
    temporary file is written): nothing of frame 0 stays, frame 1 is written again."""
    folder = tmp_path / "frames"
    folder.mkdir()
    worker, collector = rig(
        classifier, camera_with(tmp_path, reasons=["uncertain"], uncertain_margin=0.0)
    )
    (folder / (frame_stem("door", 1010.0, 0) + ".jpg.partial")).symlink_to("/dev/full")
    with caplog.at_level(logging.INFO, logger="device.run.collect"):
        feed(worker, [photos["astronaut"]] * 2, step=10.0)
        assert collector.drain() == 1
    assert collector.stats()["dropped"]["write_failed"] == 1
    assert sorted(p.name for p in folder.iterdir()) == [
        frame_stem("door", 1020.0, 1) + suffix for suffix in (".jpg", ".json")
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "device.run.collect"]
    assert len(messages) == 2 and "No space left on device" in messages[0], messages
    assert "writing in" in messages[1] and "again" in messages[1]
