"""The JSON payloads of ``kestrel run``: the contract dashboards and automations are built on.

Every payload is built by a pure function here (inputs in, dict out); the publisher adds
``device`` and, for states and events, ``seq``. Keys and their order are part of the contract:
changing them changes the bytes on the wire.

- **state** (``<camera>/state``, retained): the main model's debounced labels with smoothed
  scores, its hierarchy path and model, the frame it was decided on; with a cascade, every other
  stage's labels under ``levels``.
- **event** (``<camera>/event``): the state after a transition, plus the transition itself
  (``type``, ``level``, ``previous``, ``current``, the current ``labels``); a cascade stage's
  event carries that stage's hierarchy and model, and ``snapshot_file`` names the saved picture.
- **status** (``<camera>/status``, retained): what the camera's source is doing.
- **stats** (``stats``): per-camera counters and stage timings, accelerator and memory figures.
- **model status** (``model``, retained) and the ``type: model`` event: model updates
  (:mod:`device.ota`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from device.capture import SourceStatus
    from device.inference.bundle import Manifest
    from device.inference.decode import Prediction
    from device.inference.engine import Classifier
    from device.run.smoothing import Transition
    from device.run.stats import StageStats

# The name of the main model's stage: the ``level`` of its events, in payloads and on the console.
MAIN_STAGE = "main"


class StageView(Protocol):
    """What the payloads show of one model applied to a camera (a ``CascadeStage``)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> tuple[str, ...]: ...
    @property
    def smoothed(self) -> Mapping[str, float]: ...
    @property
    def prediction(self) -> Prediction | None: ...
    @property
    def manifest(self) -> Manifest: ...


def now_iso(at: float | None = None) -> str:
    """``at`` (``time.time()`` seconds, default now) as UTC ISO 8601 with milliseconds."""
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).isoformat(
        timespec="milliseconds"
    )


def model_info(manifest: Manifest) -> dict[str, str]:
    return {"name": manifest.name, "sha256": manifest.model_sha256}


def hierarchy(prediction: Prediction | None) -> list[dict[str, Any]]:
    """The hierarchy path of a prediction, top level first ([] when it has none)."""
    return [x.to_dict() for x in prediction.path] if prediction and prediction.path else []


def scored_labels(labels: Sequence[str], smoothed: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"label": x, "score": round(smoothed.get(x, 0.0), 4)} for x in labels]


def _stage_summary(stage: StageView) -> dict[str, Any]:
    labels = stage.labels
    return {
        "labels": scored_labels(labels, stage.smoothed),
        "hierarchy": hierarchy(stage.prediction) if labels else [],
        "model": model_info(stage.manifest),
    }


def state_payload(
    camera: str, stages: Sequence[StageView], frame_id: int | None, at: float
) -> dict[str, Any]:
    """The state of a camera: ``stages[0]`` is the main model, the rest its cascade."""
    main = stages[0]
    labels = main.labels
    payload: dict[str, Any] = {
        "camera": camera,
        "label": labels[0] if labels else "",
        "labels": scored_labels(labels, main.smoothed),
        "detected": bool(labels),
        "task": main.manifest.task,
        "hierarchy": hierarchy(main.prediction) if labels else [],
        "model": model_info(main.manifest),
        "timestamp": now_iso(at),
        "captured_at": round(at, 6),
        "frame_id": frame_id,
    }
    if len(stages) > 1:
        payload["levels"] = {stage.name: _stage_summary(stage) for stage in stages[1:]}
    return payload


def event_payload(
    state: Mapping[str, Any],
    stage: StageView,
    transition: Transition,
    snapshot_file: str | None = None,
) -> dict[str, Any]:
    """The event of ``stage``'s transition, on top of the camera's state after it."""
    event = dict(state) | {
        "type": transition.type,
        "level": stage.name,
        "previous": list(transition.previous),
        "current": list(transition.current),
        "labels": [
            {"label": k, "score": round(v, 4)}
            for k, v in transition.scores.items()
            if k in transition.current
        ],
    }
    if stage.name != MAIN_STAGE:
        event["hierarchy"] = hierarchy(stage.prediction)
        event["model"] = model_info(stage.manifest)
    if snapshot_file is not None:
        event["snapshot_file"] = snapshot_file
    return event


def model_event_payload(
    state: Mapping[str, Any],
    previous_labels: Sequence[str],
    previous_model: Manifest,
    bundle_sha256: str,
) -> dict[str, Any]:
    """The event of a model swap on a camera: its state under the new model (whose smoother
    starts afresh, so no labels yet), the labels and the model before it."""
    return dict(state) | {
        "type": "model",
        "level": MAIN_STAGE,
        "previous": list(previous_labels),
        "current": [],
        "labels": [],
        "previous_model": model_info(previous_model),
        "bundle_sha256": bundle_sha256,
    }


def model_status_payload(
    status: str,
    *,
    name: str,
    sha256: str,
    previous: str | None = None,
    reason: str = "",
    camera: str | None = None,
    request: str | None = None,
    groups: Sequence[str] = (),
    at: float | None = None,
) -> dict[str, Any]:
    """``<prefix>/model`` (retained): ``active`` | ``rejected`` | ``rolled_back`` |
    ``receiving``. ``name`` / ``sha256``: the bundle it is about (sha256 of its archive);
    ``previous``: the one it replaced (``active``, ``rolled_back``) or the one still running
    (``rejected``); ``request``: the ``kestrel push`` it answers; ``groups``: the device's,
    which ``kestrel push --group`` reads to know whom to wait for."""
    return {
        "status": status,
        "name": name,
        "sha256": sha256,
        "previous": previous,
        "reason": reason,
        "camera": camera,
        "timestamp": now_iso(at),
        "request": request,
        "groups": list(groups),
    }


def status_payload(status: SourceStatus, at: float | None = None) -> dict[str, Any]:
    return {"state": status.state, "reason": status.reason, "timestamp": now_iso(at)}


def camera_stats(status: SourceStatus, dropped: int, stats: StageStats) -> dict[str, Any]:
    """One camera's entry of the stats payload (``fps`` is added by the stats loop)."""
    return {
        "source": status.state,
        "capture_fps": round(status.fps, 2),
        "frames": status.frames,
        "dropped": dropped,
        "reopens": status.reopens,
        "inferences": stats.inferences,
        "motion_skipped": stats.motion_skipped,
        "transitions": stats.transitions,
        "errors": stats.errors,
        "stage_ms": {k: round(v, 3) for k, v in stats.ms.items()},
    }


def stats_payload(
    *,
    device_id: str,
    version: str,
    uptime_s: float,
    classifiers: Sequence[Classifier],
    rss_mb: float,
    mqtt: Mapping[str, Any] | None,
    cameras: Mapping[str, Any],
) -> dict[str, Any]:
    """The daemon's figures; the first classifier (the first camera's main model) names the
    accelerator in use."""
    main = classifiers[0]
    return {
        "device": device_id,
        "version": version,
        "uptime_s": round(uptime_s, 1),
        "accelerator": main.accelerator,
        "runtime": main.runtime,
        "accelerator_reason": main.fallback_reason,
        "accelerator_failures": sum(c.accelerator_failures for c in classifiers),
        "accelerator_recoveries": sum(c.accelerator_recoveries for c in classifiers),
        "accelerator_usb_speed_mbps": main.usb_speed_mbps,  # 480: a USB Coral on USB 2
        "rss_mb": round(rss_mb, 1),
        "mqtt": mqtt,
        "cameras": cameras,
    }
