"""The inference thread of one camera: rate limit -> motion gate -> classify -> smooth -> emit.

It takes the newest frame from the camera's latest-frame slot (filled by its capture thread),
skips it when the scene is static, runs every cascade stage on it, and hands each transition
to the sinks with the camera's new state and, when enabled, a snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from device.capture import Frame, LatestFrameSlot
from device.config import CameraConfig
from device.inference.frames import to_bgr
from device.publish.payloads import MAIN_STAGE, event_payload, state_payload
from device.publish.sinks import Sink, SnapshotStore
from device.run.cascade import CascadeStage
from device.run.collect import Collector
from device.run.motion import MotionGate
from device.run.smoothing import Transition
from device.run.stats import StageStats

log = logging.getLogger(__name__)


class CameraWorker(threading.Thread):
    """Inference for one camera: newest frame -> gate -> classify -> smooth -> sinks."""

    def __init__(
        self,
        camera: CameraConfig,
        stages: Sequence[CascadeStage],
        slot: LatestFrameSlot,
        sinks: Sequence[Sink],
        snapshots: SnapshotStore | None,
        snapshot_source: Callable[[], np.ndarray | None] | None = None,
        collector: Collector | None = None,
    ) -> None:
        super().__init__(name=f"infer-{camera.name}", daemon=True)
        self.camera = camera
        self.stages = list(stages)
        self.slot = slot
        self.sinks = list(sinks)
        self.snapshots = snapshots
        self.snapshot_source = snapshot_source
        self.collector = collector  # collect: frames kept for a dataset
        self.gate = MotionGate(camera.motion)
        self.stats = StageStats()
        self._stopping = threading.Event()
        self._period = 1.0 / camera.max_fps
        self._pending_stages: tuple[list[CascadeStage], Callable[[list], None]] | None = None

    def stop(self) -> None:
        self._stopping.set()

    def replace_stages(
        self, stages: Sequence[CascadeStage], on_applied: Callable[[list], None]
    ) -> None:
        """A model update (device.ota): ``stages`` replace the current ones at the top of the
        next frame (no frame lost, no restart); ``on_applied(old_stages)`` is then called from
        this thread, before that frame is classified. One at a time: the caller waits for it."""
        self._pending_stages = (list(stages), on_applied)
        if not self.is_alive():
            self._apply_pending_stages()

    def _apply_pending_stages(self) -> None:
        if self._pending_stages is not None:
            (stages, on_applied), self._pending_stages = self._pending_stages, None
            old, self.stages = self.stages, stages
            on_applied(old)  # never raises (device.ota.swap catches everything)

    def publish_initial_state(self) -> None:
        """A retained state exists from the start, so dashboards never show 'unknown'."""
        payload = state_payload(self.camera.name, self.stages, None, time.time())
        for sink in self.sinks:
            sink.publish_state(self.camera.name, payload)

    def run(self) -> None:
        next_due = 0.0
        while not self._stopping.is_set():
            # Rate limit before taking a frame, so the frame taken is the freshest one.
            wait = next_due - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):
                break
            t_wait = time.perf_counter()
            frame = self.slot.get(timeout=0.5)
            self._apply_pending_stages()
            if frame is None:
                continue
            self.stats.record("capture_wait", (time.perf_counter() - t_wait) * 1e3)
            now = time.monotonic()
            # Keep to the schedule: "now + period" would add up every wake-up overshoot, and a
            # camera delivering exactly max_fps would fall behind until a frame is dropped.
            # After a stall longer than a period, start again from now.
            next_due = next_due + self._period if now - next_due < self._period else now
            try:
                self.process(frame)
            except Exception:  # one bad frame must not end the camera
                self.stats.errors += 1
                log.exception("%s: frame %d failed", self.camera.name, frame.frame_id)

    def process(self, frame: Frame) -> list[Transition]:
        """Run every stage on one frame; returns the transitions it caused (for tests)."""
        if not self._worth_classifying(frame):
            return []
        transitions: list[Transition] = []
        main_labels: set[str] = set()  # the main state, with ancestors: what triggers stages
        for stage in self.stages:
            transition = self._step(stage, frame, main_labels)
            if stage.name == MAIN_STAGE:
                self.stats.inferences += 1
                main_labels = stage.with_ancestors(stage.labels)
            if transition is not None:
                transitions.append(transition)
                self._emit(stage, transition, frame)
        if self.collector is not None:  # after every stage: it judges what they all said
            self.collector.observe(frame, self.stages)
        return transitions

    def _worth_classifying(self, frame: Frame) -> bool:
        """The motion gate's verdict on a frame, timed."""
        t0 = time.perf_counter()
        # A state waiting out its min_dwell, or a smoother still on its way to a new state (an
        # EMA climbing to a still scene's score), needs fresh frames even on a static scene.
        unsettled = any(
            stage.smoother.pending is not None or not stage.smoother.settled
            for stage in self.stages
        )
        infer = self.gate.should_infer(
            frame.image, frame.format, frame.monotonic, roi=self.camera.roi, force=unsettled
        )
        if not infer:
            self.stats.motion_skipped += 1
        self.stats.record("motion", (time.perf_counter() - t0) * 1e3)
        return infer

    def _step(self, stage: CascadeStage, frame: Frame, main_labels: set[str]) -> Transition | None:
        if not stage.triggered_by(main_labels):
            return stage.idle(frame.monotonic)
        timings = stage.classify(frame.image, frame.format, self.camera.roi)
        self.stats.record_model(stage.name, timings)
        return stage.smooth(frame.monotonic)

    def _emit(self, stage: CascadeStage, transition: Transition, frame: Frame) -> None:
        t0 = time.perf_counter()
        self.stats.transitions += 1
        jpeg, snapshot_file = self._snapshot(frame)
        state = state_payload(self.camera.name, self.stages, frame.frame_id, frame.captured_at)
        event = event_payload(state, stage, transition, snapshot_file)
        for sink in self.sinks:
            # Snapshot first, so an automation triggered by the event finds the right picture.
            if jpeg is not None:
                sink.publish_snapshot(self.camera.name, jpeg)
            sink.publish_event(self.camera.name, event)
            sink.publish_state(self.camera.name, state)
        self.stats.record("publish", (time.perf_counter() - t0) * 1e3)

    def _snapshot(self, frame: Frame) -> tuple[bytes | None, str | None]:
        """(JPEG of the transition, name of the file it was saved as), when snapshots are on.

        The source's full-size still, else the camera's own JPEG, else the frame encoded.
        """
        if self.snapshots is None or not self.snapshots.config.enabled:
            return None, None
        image = self.snapshot_source() if self.snapshot_source else None
        try:
            if image is None and frame.jpeg is not None:
                jpeg = frame.jpeg
            else:
                jpeg = self.snapshots.encode(
                    image if image is not None else to_bgr(frame.image, frame.format)
                )
        except (ValueError, cv2.error) as exc:  # the transition still goes out
            log.warning(
                "%s: snapshot of frame %d failed: %s", self.camera.name, frame.frame_id, exc
            )
            return None, None
        saved = self.snapshots.save(self.camera.name, frame.frame_id, jpeg)
        return jpeg, saved.name if saved is not None else None
