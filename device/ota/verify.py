"""Checks of a received bundle before it may take a camera: the start-up checks, the labels
the camera's config relies on, and a smoke test on the camera's latest real frames.

Start-up's checks are the same code: :func:`device.inference.bundle.load_bundle` (manifest
validation, ``model_sha256``, ``labels.txt``) and :class:`~device.inference.engine.Classifier`
(the interpreter built and warmed up, tensor shapes, dtypes and quantization against the
manifest). The smoke test then runs the new classifier on frames the camera just delivered:
outputs must have the manifest's size, be finite and decode, and the median invoke time
must stay within ``ota.latency_factor`` of the current model's (plus 2 ms of noise).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from device.capture import Frame, LatestFrameSlot
from device.config import CameraConfig, KestrelConfig
from device.inference.bundle import Bundle
from device.inference.decode import UNKNOWN
from device.inference.engine import Classifier

LATENCY_SLACK_MS = 2.0
FRAME_WAIT_S = 5.0


class VerifyError(ValueError):
    """A bundle that may not take the camera; the message says why."""


def config_label_problems(bundle: Bundle, cameras: Sequence[CameraConfig]) -> list[str]:
    """Labels a camera's config names (smoothing include / exclude, cascade ``when``) that
    the bundle does not know: that camera would silently never report them."""
    known = set(bundle.labels) | set(bundle.manifest.taxonomy or {}) | {UNKNOWN}
    problems = []
    for camera in cameras:
        named = {*camera.smoothing.include, *camera.smoothing.exclude}
        named |= {label for stage in camera.cascade for label in stage.when}
        missing = sorted(named - known)
        if missing:
            problems.append(
                f"camera {camera.name}: its config names labels {bundle.name} does not have: "
                f"{missing[:5]} (smoothing include / exclude, cascade when)"
            )
    return problems


def load_classifier(bundle: Bundle, config: KestrelConfig, top_k: int) -> Classifier:
    """The new model's classifier, built as the daemon builds its own."""
    return Classifier(
        bundle,
        accelerator=config.accelerator,
        accelerator_device=config.accelerator_device,
        threads=config.threads,
        top_k=top_k,
    )


def latest_frames(slot: LatestFrameSlot, count: int, wait: float = FRAME_WAIT_S) -> list[Frame]:
    """Up to ``count`` distinct frames, the newest first, as the camera delivers them (taken
    with ``peek``: inference still gets every one)."""
    frames: list[Frame] = []
    deadline = time.monotonic() + wait
    while len(frames) < count:
        newest = frames[-1].frame_id if frames else None
        frame = slot.peek(newer_than=newest, timeout=max(0.0, deadline - time.monotonic()))
        if frame is None:
            break
        frames.append(frame)
    return frames


@dataclass(frozen=True)
class SmokeResult:
    frames: int
    invoke_ms: float  # median of the new model
    reference_ms: float  # the current model's


def smoke_test(
    classifier: Classifier,
    frames: Mapping[str, tuple[CameraConfig, list[Frame]]],
    reference_ms: float,
    latency_factor: float,
    slack_ms: float = LATENCY_SLACK_MS,
) -> SmokeResult:
    """Run ``classifier`` on each camera's frames; raises :class:`VerifyError`."""
    manifest = classifier.bundle.manifest
    times = []
    for name, (camera, camera_frames) in frames.items():
        if not camera_frames:
            raise VerifyError(f"smoke test: no frame from camera {name} in {FRAME_WAIT_S:g} s")
        for frame in camera_frames:
            tensor = classifier.preprocess(frame.image, frame.format, camera.roi)
            t0 = time.perf_counter()
            raw = np.asarray(classifier.infer(tensor))
            times.append((time.perf_counter() - t0) * 1e3)
            where = f"smoke test on frame {frame.frame_id} of camera {name}"
            if raw.size != manifest.output.size:
                raise VerifyError(
                    f"{where}: {raw.size} outputs, the manifest says {manifest.output.size}"
                )
            if not np.all(np.isfinite(raw.astype(np.float64))):
                raise VerifyError(f"{where}: outputs that are not finite (NaN or inf)")
            classifier.decoder(raw)  # the decoder takes it too
    median = statistics.median(times)
    if median > latency_factor * reference_ms + slack_ms:
        raise VerifyError(
            f"smoke test: {median:.1f} ms per invoke, over {latency_factor:g} x the current "
            f"model's {reference_ms:.1f} ms + {slack_ms:g} ms (ota.latency_factor)"
        )
    return SmokeResult(len(times), median, reference_ms)
