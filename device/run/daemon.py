"""``kestrel run``: live frames -> debounced labels -> MQTT, console, snapshots.

Threads, per camera: a capture thread (``device.capture.sources.CaptureThread``) that puts the newest
frame into a latest-frame slot, and an inference worker that takes it, applies the rate limit,
the motion gate, the region of interest, the bundle (and cascades), the smoother, and hands
state changes to the sinks. Publishing never blocks inference: ``MqttPublisher`` only enqueues.
A stats thread publishes per-stage timings every ``mqtt.stats_interval`` seconds and pings the
systemd watchdog. SIGTERM / SIGINT publish ``offline`` and exit within 2 s.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import resource
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from device import __version__
from device.capture.sources import CaptureThread, Frame, LatestFrameSlot, SourceStatus, open_source
from device.config import (
    CameraConfig,
    ConfigError,
    KestrelConfig,
    SmoothingConfig,
    SnapshotConfig,
)
from device.inference.decode import Prediction
from device.inference.engine import Classifier
from device.run import systemd
from device.run.motion import MotionGate
from device.run.smoothing import Smoother, Transition, decision_thresholds, frame_scores

if TYPE_CHECKING:
    from device.publish.mqtt import MqttPublisher

log = logging.getLogger(__name__)

MAIN_LEVEL = "main"
STOP_SECONDS = 1.5  # Daemon.stop's budget; SIGTERM -> exit must take at most 2 s


class Sink(Protocol):
    """Where state changes go (MQTT, console). Implementations must not block."""

    def publish_state(self, camera: str, payload: dict) -> None: ...
    def publish_event(self, camera: str, payload: dict) -> None: ...
    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...
    def publish_status(self, camera: str, payload: dict) -> None: ...


class ConsoleSink:
    """Prints one line per state change, for a human watching the terminal.

    Called from every camera's threads: each line is written whole under a lock, so lines of
    two cameras never run into each other.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def publish_state(self, camera: str, payload: dict) -> None:
        pass

    def publish_event(self, camera: str, payload: dict) -> None:
        current = ", ".join(f"{x['label']} {x['score']:.2f}" for x in payload["labels"]) or "-"
        path = payload.get("hierarchy")
        where = f"  [{' > '.join(x['label'] for x in path)}]" if path else ""
        level = "" if payload["level"] == MAIN_LEVEL else f" ({payload['level']})"
        self._line(
            f"{payload['timestamp']}  {camera}{level}: {payload['type']:<6} {current}{where}"
        )

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        pass

    def publish_status(self, camera: str, payload: dict) -> None:
        self._line(
            f"{_now_iso()}  {camera}: source {payload['state']} {payload['reason']}".rstrip()
        )


def _now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).isoformat(
        timespec="milliseconds"
    )


@dataclass
class StageStats:
    """Per-camera running figures, read by the stats thread (plain counters: GIL-safe)."""

    inferences: int = 0
    motion_skipped: int = 0
    transitions: int = 0
    errors: int = 0
    ms: dict[str, float] = field(default_factory=dict)  # stage -> EMA of milliseconds

    def record(self, stage: str, ms: float, alpha: float = 0.1) -> None:
        previous = self.ms.get(stage)
        self.ms[stage] = ms if previous is None else previous + alpha * (ms - previous)


class SnapshotStore:
    """JPEG files of transition frames, oldest deleted beyond ``max_files``."""

    def __init__(self, config: SnapshotConfig, state_dir: Path) -> None:
        self.config = config
        self.directory = config.directory or state_dir / "snapshots"
        self._lock = threading.Lock()
        self._files: collections.deque[Path] | None = None

    def encode(self, image: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return data.tobytes()

    def save(self, camera: str, frame_id: int, jpeg: bytes) -> Path | None:
        if self.config.max_files == 0:
            return None
        try:
            with self._lock:  # shared by every camera's worker
                if self._files is None:
                    # Once: what earlier runs left, oldest first. Then tracked in memory, so a
                    # transition costs no directory listing.
                    self.directory.mkdir(parents=True, exist_ok=True)
                    existing = sorted(self.directory.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
                    self._files = collections.deque(existing)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
                path = self.directory / f"{camera}-{stamp}-{frame_id}.jpg"
                path.write_bytes(jpeg)
                self._files.append(path)
                while len(self._files) > self.config.max_files:
                    self._files.popleft().unlink(missing_ok=True)
            return path
        except OSError as exc:
            log.warning("snapshot not saved in %s: %s", self.directory, exc)
            return None


def inference_min_size(camera: CameraConfig, levels: Sequence[Level]) -> tuple[int, int]:
    """The smallest frame (width, height) whose region of interest still holds every model's
    full input size: MJPEG sources decode no smaller (see device.capture.sources)."""
    inputs = [level.classifier.bundle.manifest.input for level in levels]
    side = max(max(spec.width, spec.height) for spec in inputs)
    _, _, roi_width, roi_height = camera.roi or (0.0, 0.0, 1.0, 1.0)
    return (math.ceil(side / roi_width), math.ceil(side / roi_height))


def bgr_for_snapshot(frame: Frame) -> np.ndarray:
    if frame.format == "YUV420":
        return cv2.cvtColor(frame.image, cv2.COLOR_YUV2BGR_I420)
    if frame.format == "RGB":
        return cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
    if frame.format == "GRAY":
        return cv2.cvtColor(frame.image, cv2.COLOR_GRAY2BGR)
    return frame.image


def ancestors_of(taxonomy: dict[str, str | None] | None) -> dict[str, frozenset[str]]:
    """Every node with itself and its ancestors ("bee" -> {bee, insect, animal})."""
    result: dict[str, frozenset[str]] = {}
    for node in taxonomy or {}:
        chain, parent = {node}, taxonomy[node]
        while parent is not None:
            chain.add(parent)
            parent = taxonomy[parent]
        result[node] = frozenset(chain)
    return result


@dataclass
class Level:
    """One model applied to a camera's frames: the main one, or a cascade stage.

    For hierarchical models, ``include`` / ``exclude`` and cascade triggers match a label or
    any of its ancestors: ``include: [insect]`` admits "bee", ``when: [insect]`` fires on it.
    """

    name: str
    classifier: Classifier
    smoother: Smoother
    when: frozenset[str] = frozenset()  # cascade: main labels that trigger it
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    ancestors: dict[str, frozenset[str]] = field(default_factory=dict)
    last: Prediction | None = None
    # An interpreter is not thread-safe, and cameras on the same bundle share one: this lock
    # (one per classifier) serializes their classify() calls and the timings read after it.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        name: str,
        classifier: Classifier,
        smoothing: SmoothingConfig,
        when: Sequence[str] = (),
        lock: threading.Lock | None = None,
    ) -> Level:
        manifest = classifier.bundle.manifest
        ancestors = ancestors_of(manifest.taxonomy)
        if ancestors:
            # The smoother sees only answer nodes; filter here with the taxonomy instead.
            smoother_config = smoothing.model_copy(update={"include": [], "exclude": []})
        else:
            smoother_config = smoothing
        smoother = Smoother(
            smoother_config,
            multi_label=manifest.task == "multilabel",
            thresholds=decision_thresholds(manifest),
        )
        return cls(
            name,
            classifier,
            smoother,
            frozenset(when),
            frozenset(smoothing.include),
            frozenset(smoothing.exclude),
            ancestors,
            lock=lock or threading.Lock(),
        )

    def lineage(self, labels: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for label in labels:
            found |= self.ancestors.get(label, {label})
        return found

    def candidate_scores(self, prediction: Prediction) -> dict[str, float]:
        scores = frame_scores(prediction)
        if not self.ancestors or not (self.include or self.exclude):
            return scores
        kept = {}
        for label, score in scores.items():
            lineage = self.ancestors.get(label, {label})
            if self.include and not self.include & lineage:
                continue
            if self.exclude & lineage:
                continue
            kept[label] = score
        return kept


class CameraWorker(threading.Thread):
    """Inference for one camera: newest frame -> gate -> classify -> smooth -> sinks."""

    def __init__(
        self,
        camera: CameraConfig,
        levels: Sequence[Level],
        slot: LatestFrameSlot,
        sinks: Sequence[Sink],
        snapshots: SnapshotStore | None,
        snapshot_source: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        super().__init__(name=f"infer-{camera.name}", daemon=True)
        self.camera = camera
        self.levels = list(levels)
        self.slot = slot
        self.sinks = list(sinks)
        self.snapshots = snapshots
        self.snapshot_source = snapshot_source
        self.gate = MotionGate(camera.motion)
        self.stats = StageStats()
        self._stopping = threading.Event()
        self._period = 1.0 / camera.max_fps

    def stop(self) -> None:
        self._stopping.set()

    def publish_initial_state(self) -> None:
        """A retained state exists from the start, so dashboards never show 'unknown'."""
        payload = self._state_payload(None, time.time())
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
        """Run every level on one frame; returns the transitions it caused (for tests)."""
        t0 = time.perf_counter()
        # A state waiting out its min_dwell needs fresh frames even on a static scene.
        pending = any(level.smoother.pending is not None for level in self.levels)
        if not self.gate.should_infer(
            frame.image, frame.format, frame.monotonic, roi=self.camera.roi, force=pending
        ):
            self.stats.motion_skipped += 1
            self.stats.record("motion", (time.perf_counter() - t0) * 1e3)
            return []
        self.stats.record("motion", (time.perf_counter() - t0) * 1e3)
        transitions: list[Transition] = []
        main_lineage: set[str] = set()
        for level in self.levels:
            if level.when and not level.when & main_lineage:
                # Cascade idle: feed "nothing" so its state ends when the gate label goes.
                transition = level.smoother.update(frame.monotonic, {})
                level.last = None
            else:
                with level.lock:
                    prediction = level.classifier.classify(
                        frame.image, frame.format, self.camera.roi
                    )
                    timings = level.classifier.timings
                prefix = "" if level.name == MAIN_LEVEL else f"{level.name}_"
                self.stats.record(prefix + "preprocess", timings.preprocess_ms)
                self.stats.record(prefix + "invoke", timings.invoke_ms)
                self.stats.record(prefix + "decode", timings.decode_ms)
                level.last = prediction
                transition = level.smoother.update(
                    frame.monotonic, level.candidate_scores(prediction)
                )
            if level.name == MAIN_LEVEL:
                self.stats.inferences += 1
                main_lineage = level.lineage(level.smoother.state)
            if transition is not None:
                transitions.append(transition)
                self._emit(level, transition, frame)
        return transitions

    def _emit(self, level: Level, transition: Transition, frame: Frame) -> None:
        t0 = time.perf_counter()
        self.stats.transitions += 1
        event = self._state_payload(frame, frame.captured_at) | {
            "type": transition.type,
            "level": level.name,
            "previous": list(transition.previous),
            "current": list(transition.current),
            "labels": [
                {"label": k, "score": round(v, 4)}
                for k, v in transition.scores.items()
                if k in transition.current
            ],
        }
        if level.name != MAIN_LEVEL:
            event["hierarchy"] = _hierarchy(level.last)
            event["model"] = _model_info(level.classifier)
        state = self._state_payload(frame, frame.captured_at)
        jpeg = None
        if self.snapshots is not None and self.snapshots.config.enabled:
            # The source's full-size still, else the camera's own JPEG, else encode the frame.
            image = self.snapshot_source() if self.snapshot_source else None
            try:
                if image is None and frame.jpeg is not None:
                    jpeg = frame.jpeg
                else:
                    jpeg = self.snapshots.encode(
                        image if image is not None else bgr_for_snapshot(frame)
                    )
            except (ValueError, cv2.error) as exc:  # the transition still goes out
                log.warning(
                    "%s: snapshot of frame %d failed: %s", self.camera.name, frame.frame_id, exc
                )
            if jpeg is not None:
                saved = self.snapshots.save(self.camera.name, frame.frame_id, jpeg)
                if saved is not None:
                    event["snapshot_file"] = saved.name
        for sink in self.sinks:
            # Snapshot first, so an automation triggered by the event finds the right picture.
            if jpeg is not None:
                sink.publish_snapshot(self.camera.name, jpeg)
            sink.publish_event(self.camera.name, event)
            sink.publish_state(self.camera.name, state)
        self.stats.record("publish", (time.perf_counter() - t0) * 1e3)

    def _state_payload(self, frame: Frame | None, at: float) -> dict[str, Any]:
        main = self.levels[0]
        labels = main.smoother.state
        smoothed = main.smoother.smoothed
        payload: dict[str, Any] = {
            "camera": self.camera.name,
            "label": labels[0] if labels else "",
            "labels": [{"label": x, "score": round(smoothed.get(x, 0.0), 4)} for x in labels],
            "detected": bool(labels),
            "task": main.classifier.bundle.manifest.task,
            "hierarchy": _hierarchy(main.last) if labels else [],
            "model": _model_info(main.classifier),
            "timestamp": _now_iso(at),
            "captured_at": round(at, 6),
            "frame_id": frame.frame_id if frame else None,
        }
        if len(self.levels) > 1:
            payload["levels"] = {
                level.name: {
                    "labels": [
                        {"label": x, "score": round(level.smoother.smoothed.get(x, 0.0), 4)}
                        for x in level.smoother.state
                    ],
                    "hierarchy": _hierarchy(level.last) if level.smoother.state else [],
                    "model": _model_info(level.classifier),
                }
                for level in self.levels[1:]
            }
        return payload


def _hierarchy(prediction: Prediction | None) -> list[dict[str, Any]]:
    return [x.to_dict() for x in prediction.path] if prediction and prediction.path else []


def _model_info(classifier: Classifier) -> dict[str, str]:
    manifest = classifier.bundle.manifest
    return {"name": manifest.name, "sha256": manifest.model_sha256}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


class Daemon:
    """Everything ``kestrel run`` starts, in order, and stops in reverse order."""

    def __init__(
        self,
        config: KestrelConfig,
        *,
        console_stream: Any = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.started = time.monotonic()
        self._stopping = stopping or threading.Event()
        self._classifiers: dict[Path, Classifier] = {}
        self._locks: dict[Path, threading.Lock] = {}  # one per classifier, see Level.lock
        self.broker = None
        self.publisher: MqttPublisher | None = None
        self.metrics = None
        self.sinks: list[Sink] = []
        if config.console:
            self.sinks.append(ConsoleSink(console_stream))
        self.captures: list[CaptureThread] = []
        self.workers: list[CameraWorker] = []
        self.slots: dict[str, LatestFrameSlot] = {}
        self.source_status: dict[str, SourceStatus] = {}
        # Models first: a bad bundle fails before any camera or broker is touched.
        self.levels = {camera.name: self._levels(camera) for camera in config.cameras}
        # Then the MQTT settings (password file, TLS files): also before anything starts.
        if config.mqtt is not None:
            self.publisher = self._make_publisher()

    def classifier(self, path: Path, top_k: int) -> Classifier:
        key = path.resolve()
        if key not in self._classifiers:
            self._locks[key] = threading.Lock()
            self._classifiers[key] = Classifier(
                path,
                accelerator=self.config.accelerator,
                threads=self.config.threads,
                top_k=top_k,
            )
            c = self._classifiers[key]
            log.info(
                "model %s (%s, %d labels) on %s via %s",
                c.bundle.name,
                c.bundle.manifest.task,
                len(c.bundle.labels),
                c.accelerator,
                c.runtime,
            )
        return self._classifiers[key]

    def _lock_of(self, classifier: Classifier) -> threading.Lock:
        return next(self._locks[key] for key, c in self._classifiers.items() if c is classifier)

    def _levels(self, camera: CameraConfig) -> list[Level]:
        main = self.classifier(camera.model or self.config.model, camera.top_k)
        levels = [Level.build(MAIN_LEVEL, main, camera.smoothing, lock=self._lock_of(main))]
        for stage in camera.cascade:
            classifier = self.classifier(stage.model, stage.top_k)
            levels.append(
                Level.build(
                    stage.name, classifier, stage.smoothing, stage.when, self._lock_of(classifier)
                )
            )
        return levels

    def _make_publisher(self) -> MqttPublisher:
        """The MQTT publisher, not connected yet; unusable settings raise ConfigError."""
        from device.publish.mqtt import MqttPublisher, MqttSetupError

        assert self.config.mqtt is not None
        try:
            return MqttPublisher(
                self.config.mqtt,
                self.config.device_id,
                self.config.state_dir,
                cameras=[c.name for c in self.config.cameras],
                labels={
                    c.name: self.levels[c.name][0].classifier.bundle.labels
                    for c in self.config.cameras
                },
                version=__version__,
            )
        except MqttSetupError as exc:
            raise ConfigError(str(exc)) from None
        except (OSError, sqlite3.Error) as exc:  # the on-disk queue lives in state_dir
            raise ConfigError(
                f"state_dir {self.config.state_dir}: cannot keep the MQTT queue there ({exc})"
            ) from None

    def start(self) -> None:
        mqtt = self.config.mqtt
        if mqtt is not None and self.publisher is not None:
            if mqtt.embedded:
                self._start_embedded_broker(mqtt.host, mqtt.port)
            self.publisher.start()
            self.sinks.append(self.publisher)
        snapshots = SnapshotStore(self.config.snapshots, self.config.state_dir)
        for camera in self.config.cameras:
            slot = LatestFrameSlot()
            min_size = inference_min_size(camera, self.levels[camera.name])
            capture = CaptureThread(
                camera,
                slot,
                source_factory=functools.partial(open_source, min_size=min_size),
                on_status=self._on_status,
            )
            worker = CameraWorker(
                camera,
                self.levels[camera.name],
                slot,
                self.sinks,
                snapshots,
                snapshot_source=capture.snapshot,
            )
            worker.publish_initial_state()
            self.slots[camera.name] = slot
            self.captures.append(capture)
            self.workers.append(worker)
        for thread in [*self.captures, *self.workers]:
            thread.start()
        threading.Thread(target=self._stats_loop, name="stats", daemon=True).start()
        if self.config.accelerator != "cpu" and self.config.accelerator_retry > 0:
            threading.Thread(target=self._accelerator_loop, name="accelerator", daemon=True).start()
        if self.config.metrics_port is not None:
            from device.publish.prometheus import MetricsServer

            try:
                self.metrics = MetricsServer(self.config.metrics_port, self.stats)
                self.metrics.start()
            except OSError as exc:
                log.warning(
                    "metrics_port %d: %s; running without /metrics", self.config.metrics_port, exc
                )
        systemd.notify("READY=1")
        log.info(
            "kestrel %s running: device %s, %d camera(s)",
            __version__,
            self.config.device_id,
            len(self.config.cameras),
        )

    def _start_embedded_broker(self, host: str, port: int) -> None:
        from device.publish.embedded_broker import EmbeddedBroker, port_in_use

        if port_in_use(host, port):
            log.info("a broker already listens on %s:%d; using it", host, port)
            return
        self.broker = EmbeddedBroker(host, port)
        try:
            self.broker.start()
        except RuntimeError as exc:
            log.warning("%s; continuing without MQTT", exc)
            self.broker = None

    def _on_status(self, camera: str, status: SourceStatus) -> None:
        self.source_status[camera] = status
        payload = {"state": status.state, "reason": status.reason, "timestamp": _now_iso()}
        for sink in self.sinks:
            sink.publish_status(camera, payload)

    def stats(self) -> dict[str, Any]:
        cameras = {}
        for capture, worker in zip(self.captures, self.workers, strict=True):
            status = capture.status
            cameras[worker.camera.name] = {
                "source": status.state,
                "capture_fps": round(status.fps, 2),
                "frames": status.frames,
                "dropped": self.slots[worker.camera.name].dropped,
                "reopens": status.reopens,
                "inferences": worker.stats.inferences,
                "motion_skipped": worker.stats.motion_skipped,
                "transitions": worker.stats.transitions,
                "errors": worker.stats.errors,
                "stage_ms": {k: round(v, 3) for k, v in worker.stats.ms.items()},
            }
        classifiers = list(self._classifiers.values())
        main = classifiers[0]
        return {
            "device": self.config.device_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "accelerator": main.accelerator,
            "runtime": main.runtime,
            "accelerator_reason": main.fallback_reason,
            "accelerator_failures": sum(c.accelerator_failures for c in classifiers),
            "accelerator_recoveries": sum(c.accelerator_recoveries for c in classifiers),
            "rss_mb": round(current_rss_mb(), 1),
            "mqtt": self.publisher.counters if self.publisher else None,
            "cameras": cameras,
        }

    def retry_accelerators(self) -> int:
        """Put every classifier that fell back to the CPU back on the Edge TPU if it loads
        again; returns how many moved. The delegate loads outside the classifier's lock, so
        inference goes on meanwhile; only the swap waits for the frame in progress."""
        moved = 0
        for key, classifier in self._classifiers.items():
            try:
                candidate = classifier.accelerator_candidate()
                if candidate is None:
                    continue
                with self._locks[key]:
                    classifier.adopt(candidate)
                moved += 1
            except Exception:  # a broken retry must not end the loop: the CPU still works
                log.exception("%s: Edge TPU retry failed", classifier.bundle.name)
        return moved

    def _accelerator_loop(self) -> None:
        while not self._stopping.wait(self.config.accelerator_retry):
            self.retry_accelerators()

    def _stats_loop(self) -> None:
        interval = self.config.mqtt.stats_interval if self.config.mqtt else 30.0
        watchdog = systemd.watchdog_interval()
        tick = min(interval, watchdog) if watchdog else interval
        last_inferences: dict[str, int] = {}
        last_stats = time.monotonic()
        while not self._stopping.wait(tick):
            if watchdog:
                systemd.notify("WATCHDOG=1")
            now = time.monotonic()
            if now - last_stats < interval - 1e-3:
                continue
            payload = self.stats()
            for name, camera in payload["cameras"].items():
                done = camera["inferences"] - last_inferences.get(name, 0)
                camera["fps"] = round(done / (now - last_stats), 2)
                last_inferences[name] = camera["inferences"]
            last_stats = now
            if self.publisher is not None:
                self.publisher.publish_stats(payload)
            log.debug("stats %s", payload)

    def wait(self) -> None:
        while not self._stopping.wait(0.5):
            pass

    def request_stop(self, *_: Any) -> None:
        self._stopping.set()

    def stop(self) -> None:
        """Stop within ~2 s: sources and workers first, then flush and say offline."""
        systemd.notify("STOPPING=1")
        self._stopping.set()
        # Not the whole 2 s: the process still has to exit after this returns.
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            worker.stop()
        for slot in self.slots.values():
            slot.close()  # wakes a worker waiting for a frame
        for capture in self.captures:
            capture.stop(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
        for worker in self.workers:
            worker.join(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        if self.publisher is not None:
            # Disconnected, there is nothing to flush: do not wait out paho's reconnect
            # backoff (it sleeps in 1 s steps); unsent messages stay in the on-disk queue.
            budget = deadline - time.monotonic() if self.publisher.connected else 0.3
            self.publisher.stop(timeout=max(0.2, budget))
        if self.broker is not None:
            self.broker.stop(timeout=0.5)
        if self.metrics is not None:
            self.metrics.stop()


def run(config: KestrelConfig) -> int:
    """The body of ``kestrel run``: start, wait for SIGTERM / SIGINT, stop."""
    # Handlers first: loading the models takes seconds on a Pi, and a stop asked for meanwhile
    # must end the process cleanly (exit 0), not kill it by the signal.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info("kestrel %s starting", __version__)
    daemon = Daemon(config, stopping=stopping)
    if stopping.is_set():
        log.info("kestrel stopped before it started")
        return 0
    daemon.start()
    try:
        daemon.wait()
    finally:
        daemon.stop()
    log.info("kestrel stopped")
    return 0
