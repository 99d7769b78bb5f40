"""Frames kept on the device to become a dataset: ``collect:`` of a camera (``kestrel run``).

The camera's worker hands every classified frame to :meth:`Collector.observe`, which asks the
policy (:mod:`device.run.collect_policy`: transition, uncertain, interval, per-minute bound)
and, for a kept frame, takes a copy of what the stages said and puts it in a small bounded
queue -- never waiting: when the queue is full the frame is dropped and counted. The
collector's own thread encodes and writes (:mod:`device.run.collect_store`):

- the full-resolution JPEG: the camera's own for MJPEG sources (``Frame.jpeg``), a Pi camera's
  full-size still (taken right after the classified lores frame), else the frame encoded;
- a JSON sidecar with the same name (``.json``): ``camera``, ``time`` (UTC ISO 8601),
  ``captured_at``, ``frame_id``, ``reason`` (uncertain / transition / interval) and ``why``,
  ``model`` (``name``, ``sha256``), ``task``, ``guess`` (the model's current top label, so
  labelling starts pre-sorted), ``answer`` (the decoded labels, ``unknown`` included),
  ``scores`` (``{label: score}``, the top-k), ``hierarchy``, ``state`` (the debounced labels),
  ``roi`` (``[x, y, w, h]`` fractions, or null), ``image`` (the picture's file name), ``size``
  (``[width, height]`` of the picture) and, with a cascade, ``levels`` (the same per stage).

A folder that cannot be written (missing rights, a file in its way, a full disk) costs only
the frames: classification goes on, the first failure is logged (once, until writing works
again) and every lost frame is counted (``dropped.write_failed``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.capture import Frame
from device.config import CameraConfig
from device.inference.decode import Prediction
from device.inference.frames import to_bgr
from device.inference.preprocess import jpeg_size
from device.publish.payloads import hierarchy, model_info, now_iso
from device.run.cascade import CascadeStage
from device.run.collect_policy import CollectPolicy, Verdict, colour_histogram
from device.run.collect_store import FrameStore, frame_stem

log = logging.getLogger(__name__)

QUEUE_FRAMES = 4  # frames waiting for the writer; beyond, new ones are dropped


def guess(prediction: Prediction) -> str:
    """The model's current guess of a frame's class: binary its answer, otherwise the top
    label (also when the answer is ``unknown`` or an ancestor: labelling wants a class)."""
    if prediction.task == "binary" or not prediction.scores:
        return prediction.label
    return prediction.scores[0].label


def stage_record(stage: CascadeStage) -> dict[str, Any]:
    """What one stage said about the frame (a copy: the stage moves on to the next frame)."""
    prediction = stage.prediction
    record: dict[str, Any] = {"model": model_info(stage.manifest), "task": stage.manifest.task}
    if prediction is not None:
        record |= {
            "guess": guess(prediction),
            "answer": [x.to_dict() for x in prediction.labels],
            "scores": {x.label: round(x.score, 4) for x in prediction.scores},
            "hierarchy": hierarchy(prediction),
        }
    return record | {"state": list(stage.labels)}


@dataclass(frozen=True)
class _Kept:
    frame: Frame
    verdict: Verdict
    sidecar: dict[str, Any]


class Collector:
    """One camera's collection: decisions on the inference thread, writing on its own."""

    def __init__(
        self,
        camera: CameraConfig,
        snapshot_source: Callable[[], np.ndarray | None] | None = None,
        queue_frames: int = QUEUE_FRAMES,
    ) -> None:
        config = camera.collect
        assert config.directory is not None, "collect.directory is checked by the config"
        self.camera = camera
        self.config = config
        self.policy = CollectPolicy(config)
        self.store = FrameStore(
            config.directory.expanduser(), camera.name, config.max_files, config.max_mb
        )
        self.snapshot_source = snapshot_source
        self.saved = dict.fromkeys(config.reasons, 0)
        self.dropped = {"queue_full": 0, "write_failed": 0}
        self.not_distinct = 0  # interval candidates too like the frames kept before
        self._queue: queue.Queue[_Kept] = queue.Queue(maxsize=queue_frames)
        self._failing = False  # logged; quiet until a write works again
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"collect-{camera.name}", daemon=True
        )

    # ------------------------------------------------------------------ inference thread

    def observe(self, frame: Frame, stages: Sequence[CascadeStage]) -> Verdict | None:
        """Judge a frame every stage has seen; queue it when kept. Never blocks."""
        verdict = self.policy.decide(frame.monotonic, stages)
        if verdict is None:
            return None
        sidecar = self._sidecar(frame, verdict, stages)
        try:
            self._queue.put_nowait(_Kept(frame, verdict, sidecar))
        except queue.Full:
            self.policy.release(verdict, frame.monotonic)
            self.dropped["queue_full"] += 1
            if self.dropped["queue_full"] == 1:
                log.warning(
                    "%s: collect: the writer falls behind; dropping frames", self.camera.name
                )
            return None
        return verdict

    def _sidecar(
        self, frame: Frame, verdict: Verdict, stages: Sequence[CascadeStage]
    ) -> dict[str, Any]:
        main, *cascade = stages
        sidecar = {
            "camera": self.camera.name,
            "time": now_iso(frame.captured_at),
            "captured_at": round(frame.captured_at, 6),
            "frame_id": frame.frame_id,
            "reason": verdict.reason,
            "why": verdict.why,
            **stage_record(main),
            "roi": list(self.camera.roi) if self.camera.roi else None,
        }
        if cascade:
            sidecar["levels"] = {stage.name: stage_record(stage) for stage in cascade}
        return sidecar

    # ------------------------------------------------------------------ its own thread

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 0.3) -> None:
        """Stop writing; frames still queued after ``timeout`` s are not written."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.store.load()  # what earlier runs left counts against the bounds from the start
        except OSError as exc:
            self._failed(exc)
        while not self._stopping.is_set():
            try:
                kept = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.write(kept)
            except Exception:  # a bug must not end collection (nor anything else)
                log.exception("%s: collect: frame %d failed", self.camera.name, kept.frame.frame_id)

    def drain(self) -> int:
        """Write what is queued now on the calling thread (tests); how many were written."""
        written = 0
        while True:
            try:
                written += self.write(self._queue.get_nowait())
            except queue.Empty:
                return written

    def write(self, kept: _Kept) -> bool:
        """Write one kept frame (interval: only if distinct); True when it is on disk."""
        frame, verdict = kept.frame, kept.verdict
        histogram = colour_histogram(frame.image, frame.format, self.camera.roi)
        if verdict.reason == "interval" and not self.policy.distinct(histogram):
            self.policy.release(verdict, frame.monotonic)
            self.not_distinct += 1
            return False
        jpeg = self._jpeg(frame)
        stem = frame_stem(self.camera.name, frame.captured_at, frame.frame_id)
        width, height = jpeg_size(jpeg) or frame.size
        sidecar = kept.sidecar | {"image": stem + ".jpg", "size": [width, height]}
        try:
            self.store.save(stem, jpeg, (json.dumps(sidecar, indent=1) + "\n").encode())
        except OSError as exc:
            self.dropped["write_failed"] += 1
            self._failed(exc)
            return False
        if self._failing:
            self._failing = False
            log.info("%s: collect: writing in %s again", self.camera.name, self.store.directory)
        self.saved[verdict.reason] += 1
        self.policy.kept(verdict, frame.monotonic, histogram)
        return True

    def _failed(self, exc: OSError) -> None:
        if not self._failing:
            self._failing = True
            log.warning(
                "%s: collect: cannot write frames in %s (%s); classifying goes on, frames are "
                "dropped and counted",
                self.camera.name,
                self.store.directory,
                exc,
            )

    def _jpeg(self, frame: Frame) -> bytes:
        if frame.jpeg is not None:
            return frame.jpeg
        still = self.snapshot_source() if self.snapshot_source else None
        image = still if still is not None else to_bgr(frame.image, frame.format)
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
        ok, data = cv2.imencode(".jpg", image, quality)
        if not ok:
            raise ValueError(f"frame {frame.frame_id}: JPEG encoding failed")
        return data.tobytes()

    # ------------------------------------------------------------------ figures

    def stats(self) -> dict[str, Any]:
        """The camera's ``collect`` entry of the stats payload."""
        return {
            "saved": dict(self.saved),
            "dropped": dict(self.dropped),
            "rate_limited": self.policy.rate_limited,
            "not_distinct": self.not_distinct,
            "pruned": self.store.pruned,
            "files": self.store.count,
            "mb": round(self.store.bytes / 1e6, 3),
        }
