"""The checks a received bundle passes before it takes a camera: the config's labels, the
smoke test on real frames through the real runtime, and the worker's hand-over hook."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from device.capture import LatestFrameSlot
from device.capture.base import make_frame
from device.config import CameraConfig, KestrelConfig
from device.inference.bundle import load_bundle
from device.ota.verify import (
    VerifyError,
    config_label_problems,
    latest_frames,
    load_classifier,
    smoke_test,
)
from device.paths import DEFAULT_MODEL, SAMPLES_DIR
from device.publish.payloads import MAIN_STAGE
from device.run.cascade import CascadeStage
from device.run.worker import CameraWorker


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(load_bundle(DEFAULT_MODEL), KestrelConfig(accelerator="cpu"), 5)


@pytest.fixture(scope="module")
def frames():
    image = cv2.imread(str(SAMPLES_DIR / "cat-chelsea.jpg"))
    return [make_frame(image.copy(), "BGR", i) for i in range(3)]


def test_labels_the_config_names_must_exist_in_the_new_model():
    bundle = load_bundle(DEFAULT_MODEL)
    fine = CameraConfig(name="door", source="x.avi", smoothing={"include": ["cat", "Egyptian Mau"]})
    assert config_label_problems(bundle, [fine]) == []  # a taxonomy node and a leaf
    wrong = CameraConfig(
        name="yard",
        source="x.avi",
        smoothing={"exclude": ["dragon"]},
        cascade=[{"name": "breed", "model": str(DEFAULT_MODEL), "when": ["unicorn"]}],
    )
    (problem,) = config_label_problems(bundle, [fine, wrong])
    assert problem.startswith("camera yard:") and "['dragon', 'unicorn']" in problem


def test_the_smoke_test_runs_the_model_on_the_frames(classifier, frames):
    camera = CameraConfig(name="door", source="x.avi")
    result = smoke_test(classifier, {"door": (camera, frames)}, reference_ms=1e6, latency_factor=1)
    assert result.frames == 3 and result.invoke_ms > 0


def test_a_model_too_slow_for_the_camera_fails_the_smoke_test(classifier, frames):
    camera = CameraConfig(name="door", source="x.avi")
    with pytest.raises(VerifyError, match=r"ms per invoke, over 3 x the current model's 0.0 ms"):
        smoke_test(classifier, {"door": (camera, frames)}, 0.0, 3.0, slack_ms=0.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_model_whose_outputs_are_not_finite_fails_the_smoke_test(
    classifier, frames, monkeypatch, bad
):
    """A float model gone wrong (no shipped model is one: they are int8) answers NaN or inf:
    the real model runs, its real output is spoiled in one place, the check must catch it."""
    real_infer = classifier.infer

    def spoiled(tensor):
        out = np.asarray(real_infer(tensor), dtype=np.float32).copy()
        out.flat[7] = bad
        return out

    monkeypatch.setattr(classifier, "infer", spoiled)
    camera = CameraConfig(name="door", source="x.avi")
    with pytest.raises(VerifyError, match=r"frame 0 of camera door: outputs that are not finite"):
        smoke_test(classifier, {"door": (camera, frames)}, reference_ms=1e6, latency_factor=1)


def test_no_frame_fails_the_smoke_test(classifier):
    camera = CameraConfig(name="door", source="x.avi")
    with pytest.raises(VerifyError, match="no frame from camera door"):
        smoke_test(classifier, {"door": (camera, [])}, 10.0, 3.0)


def test_latest_frames_peeks_distinct_frames_as_they_come(frames):
    slot = LatestFrameSlot()
    assert latest_frames(slot, 2, wait=0.05) == []
    slot.put(frames[0])

    def later() -> None:
        slot.put(frames[1])

    timer = threading.Timer(0.05, later)
    timer.start()
    got = latest_frames(slot, 3, wait=0.5)
    timer.join()
    assert [f.frame_id for f in got] == [0, 1]  # no third frame came
    assert slot.get(timeout=0) is frames[1]  # inference still gets the newest


def test_the_worker_swaps_stages_at_the_top_of_a_frame(classifier, frames):
    camera = CameraConfig(name="door", source="x.avi", max_fps=100)
    old = CascadeStage.build(MAIN_STAGE, classifier, camera.smoothing)
    new = CascadeStage.build(MAIN_STAGE, classifier, camera.smoothing)
    slot = LatestFrameSlot()
    worker = CameraWorker(camera, [old], slot, [], None)
    applied = threading.Event()
    seen: list = []

    def on_applied(previous):
        seen.append((previous, list(worker.stages), new.prediction))
        applied.set()

    worker.start()
    try:
        slot.put(frames[0])
        assert slot.wait_taken(5)
        worker.replace_stages([new], on_applied)
        slot.put(frames[1])
        assert applied.wait(5)
        assert slot.wait_taken(5)
    finally:
        worker.stop()
        slot.close()
        worker.join(5)
    ((previous, current, prediction),) = seen
    assert previous == [old] and current == [new] and worker.stages == [new]
    assert prediction is None  # swapped before the new stage classified anything
    assert new.prediction is not None  # the frame after the swap ran on the new stage


def test_a_worker_that_is_not_running_swaps_at_once(classifier):
    camera = CameraConfig(name="door", source="x.avi")
    old = CascadeStage.build(MAIN_STAGE, classifier, camera.smoothing)
    new = CascadeStage.build(MAIN_STAGE, classifier, camera.smoothing)
    worker = CameraWorker(camera, [old], LatestFrameSlot(), [], None)
    calls = []
    worker.replace_stages([new], calls.append)
    assert calls == [[old]] and worker.stages == [new]
