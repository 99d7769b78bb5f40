"""``kestrel run``: live frames -> debounced labels -> MQTT, console, snapshots.

Threads, per camera: a capture thread (``device.capture.CaptureThread``) that puts the newest
frame into a latest-frame slot, and an inference worker (:mod:`device.run.worker`) that takes
it, applies the rate limit, the motion gate, the region of interest, the cascade stages
(:mod:`device.run.cascade`), the smoother, and hands state changes to the sinks. Publishing
never blocks inference: ``MqttPublisher`` only enqueues. A stats thread publishes per-stage
timings every ``mqtt.stats_interval`` seconds and pings the systemd watchdog. SIGTERM / SIGINT
publish ``offline`` and exit within 2 s.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device.capture import CaptureThread, LatestFrameSlot, SourceStatus, open_source
from device.config import CameraConfig, ConfigError, KestrelConfig
from device.inference.engine import Classifier
from device.ota.service import OtaService
from device.publish.payloads import MAIN_STAGE, camera_stats, stats_payload, status_payload
from device.publish.sinks import ConsoleSink, Sink, SnapshotStore
from device.resources import current_rss_mb
from device.run import systemd
from device.run.cascade import CascadeStage
from device.run.collect import Collector
from device.run.state_dir import StateDirLock
from device.run.stats import InferenceRate
from device.run.worker import CameraWorker

if TYPE_CHECKING:
    from device.publish.mqtt import MqttPublisher
    from device.web.server import WebServer

log = logging.getLogger(__name__)

STOP_SECONDS = 1.5  # Daemon.stop's budget; SIGTERM -> exit must take at most 2 s


def inference_min_size(camera: CameraConfig, stages: Sequence[CascadeStage]) -> tuple[int, int]:
    """The smallest frame (width, height) whose region of interest still holds every model's
    full input size: MJPEG sources decode no smaller (see device.capture.mjpeg)."""
    inputs = [stage.classifier.bundle.manifest.input for stage in stages]
    side = max(max(spec.width, spec.height) for spec in inputs)
    _, _, roi_width, roi_height = camera.roi or (0.0, 0.0, 1.0, 1.0)
    return (math.ceil(side / roi_width), math.ceil(side / roi_height))


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
        self._locks: dict[Path, threading.Lock] = {}  # one per classifier, see CascadeStage.lock
        self.broker = None
        self.publisher: MqttPublisher | None = None
        self.metrics = None
        self.sinks: list[Sink] = []
        if config.console:
            self.sinks.append(ConsoleSink(console_stream))
        self.captures: list[CaptureThread] = []
        self.workers: list[CameraWorker] = []
        self.collectors: dict[str, Collector] = {}  # cameras with collect enabled
        self.slots: dict[str, LatestFrameSlot] = {}
        self.source_status: dict[str, SourceStatus] = {}
        self.ota = OtaService(config)  # model updates: it knows each camera's active model
        # Models first: a bad bundle fails before any camera or broker is touched.
        # Per camera: its cascade stages, the main model's first (payloads call them levels).
        self.stages = {camera.name: self._stages(camera) for camera in config.cameras}
        # One daemon per state_dir: locked before the queue or the snapshots touch it.
        self.state_lock = StateDirLock.acquire(config.state_dir, config.device_id)
        # Then the MQTT settings (password file, TLS files): also before anything starts.
        if config.mqtt is not None:
            self.publisher = self._make_publisher()
        self.web: WebServer | None = None
        if config.web.enabled:  # its hub is a sink: in the list before the workers copy it
            from device.web.server import WebServer

            self.web = WebServer(self)
            self.sinks.append(self.web.hub)

    # ------------------------------------------------------------------ models

    def classifier(self, path: Path, top_k: int) -> Classifier:
        key = path.resolve()
        if key not in self._classifiers:
            self._locks[key] = threading.Lock()
            self._classifiers[key] = Classifier(
                path,
                accelerator=self.config.accelerator,
                accelerator_device=self.config.accelerator_device,
                threads=self.config.threads,
                top_k=top_k,
            )
            loaded = self._classifiers[key]
            log.info(
                "model %s (%s, %d labels) on %s via %s",
                loaded.bundle.name,
                loaded.bundle.manifest.task,
                len(loaded.bundle.labels),
                loaded.accelerator,
                loaded.runtime,
            )
        return self._classifiers[key]

    def _lock_of(self, classifier: Classifier) -> threading.Lock:
        return next(self._locks[key] for key, c in self._classifiers.items() if c is classifier)

    def replace_classifier(self, new: Classifier) -> tuple[threading.Lock, list[Classifier]]:
        """A model update (device.ota.swap): ``new`` joins the stats and the Edge TPU retry,
        and the classifiers no stage uses any more leave them (returned, to be closed)."""
        used = {id(s.classifier) for w in self.workers for s in w.stages} | {id(new)}
        key, old = new.bundle.path.resolve(), self._classifiers
        kept = {k: c for k, c in old.items() if id(c) in used and k != key}
        # A new dict, never changed in place: the stats and retry threads iterate the old one.
        self._classifiers = {key: new, **kept}
        lock = self._locks.setdefault(key, threading.Lock())
        return lock, [c for c in old.values() if id(c) not in used]

    def _stages(self, camera: CameraConfig) -> list[CascadeStage]:
        main = self.classifier(self.ota.model_for(camera), camera.top_k)
        stages = [CascadeStage.build(MAIN_STAGE, main, camera.smoothing, lock=self._lock_of(main))]
        for stage in camera.cascade:
            classifier = self.classifier(stage.model, stage.top_k)
            stages.append(
                CascadeStage.build(
                    stage.name, classifier, stage.smoothing, stage.when, self._lock_of(classifier)
                )
            )
        return stages

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

    # ------------------------------------------------------------------ MQTT

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
                version=__version__,
            )
        except MqttSetupError as exc:
            raise ConfigError(str(exc)) from None
        except (OSError, sqlite3.Error) as exc:  # the on-disk queue lives in state_dir
            raise ConfigError(
                f"state_dir {self.config.state_dir}: cannot keep the MQTT queue there ({exc})"
            ) from None

    def _start_publisher(self) -> None:
        mqtt = self.config.mqtt
        if mqtt is None or self.publisher is None:
            return
        if mqtt.embedded:
            self._start_embedded_broker(mqtt.host, mqtt.port)
        self.publisher.start()
        # First: an event is in the on-disk queue before the console announces it.
        self.sinks.insert(0, self.publisher)

    def _start_embedded_broker(self, host: str, port: int) -> None:
        from device.publish.embedded_broker import EmbeddedBroker, port_in_use

        if port_in_use(host, port):
            log.info("a broker already listens on %s:%d; using it", host, port)
            return
        self.broker = EmbeddedBroker(host, port, self.config.state_dir)
        try:
            self.broker.start()
        except RuntimeError as exc:
            log.warning("%s; continuing without MQTT", exc)
            self.broker = None

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        self.ota.start(self)  # first: it sets what Home Assistant discovery says of the model
        self._start_publisher()
        snapshots = SnapshotStore(self.config.snapshots, self.config.state_dir)
        for camera in self.config.cameras:
            self._add_camera(camera, snapshots)
        for thread in [*self.captures, *self.workers, *self.collectors.values()]:
            thread.start()
        threading.Thread(target=self._stats_loop, name="stats", daemon=True).start()
        if self.config.accelerator != "cpu" and self.config.accelerator_retry > 0:
            threading.Thread(target=self._accelerator_loop, name="accelerator", daemon=True).start()
        self._start_metrics()
        if self.web is not None:
            self.web.start(self.slots)
        systemd.notify("READY=1")
        log.info(
            "kestrel %s running: device %s, %d camera(s)",
            __version__,
            self.config.device_id,
            len(self.config.cameras),
        )

    def _add_camera(self, camera: CameraConfig, snapshots: SnapshotStore) -> None:
        """The camera's capture thread and inference worker, not started yet."""
        slot = LatestFrameSlot()
        min_size = inference_min_size(camera, self.stages[camera.name])
        capture = CaptureThread(
            camera,
            slot,
            source_factory=functools.partial(open_source, min_size=min_size),
            on_status=self._on_status,
        )
        if camera.collect.enabled:
            self.collectors[camera.name] = Collector(camera, snapshot_source=capture.snapshot)
        worker = CameraWorker(
            camera,
            self.stages[camera.name],
            slot,
            self.sinks,
            snapshots,
            snapshot_source=capture.snapshot,
            collector=self.collectors.get(camera.name),
        )
        worker.publish_initial_state()
        self.slots[camera.name] = slot
        self.captures.append(capture)
        self.workers.append(worker)

    def _start_metrics(self) -> None:
        if self.config.metrics_port is None:
            return
        from device.publish.prometheus import MetricsServer

        try:
            self.metrics = MetricsServer(
                self.config.metrics_port, self.stats, host=self.config.metrics_host
            )
            self.metrics.start()
        except OSError as exc:
            log.warning(
                "metrics_port %d: %s; running without /metrics", self.config.metrics_port, exc
            )

    # ------------------------------------------------------------------ running

    def _on_status(self, camera: str, status: SourceStatus) -> None:
        self.source_status[camera] = status
        payload = status_payload(status)
        for sink in self.sinks:
            sink.publish_status(camera, payload)

    def stats(self) -> dict[str, Any]:
        cameras = {
            worker.camera.name: camera_stats(
                capture.status, self.slots[worker.camera.name].dropped, worker.stats
            )
            for capture, worker in zip(self.captures, self.workers, strict=True)
        }
        for name, collector in self.collectors.items():
            cameras[name]["collect"] = collector.stats()
        return stats_payload(
            device_id=self.config.device_id,
            version=__version__,
            uptime_s=time.monotonic() - self.started,
            classifiers=list(self._classifiers.values()),
            rss_mb=current_rss_mb(),
            mqtt=self.publisher.counters if self.publisher else None,
            cameras=cameras,
        )

    def _accelerator_loop(self) -> None:
        while not self._stopping.wait(self.config.accelerator_retry):
            self.retry_accelerators()

    def _stats_loop(self) -> None:
        interval = self.config.mqtt.stats_interval if self.config.mqtt else 30.0
        watchdog = systemd.watchdog_interval()
        tick = min(interval, watchdog) if watchdog else interval
        rate = InferenceRate(since=time.monotonic())
        while not self._stopping.wait(tick):
            if watchdog:
                systemd.notify("WATCHDOG=1")
            now = time.monotonic()
            if now - rate.since < interval - 1e-3:
                continue
            payload = self.stats()
            rate.add_fps(payload, now)
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
        self.ota.stop(timeout=0.3)  # no update starts now; a clean stop ends no probation
        for worker in self.workers:
            worker.stop()
        for slot in self.slots.values():
            slot.close()  # wakes a worker waiting for a frame
        for capture in self.captures:
            capture.stop(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
        for worker in self.workers:
            worker.join(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        for collector in self.collectors.values():
            collector.stop(timeout=max(0.05, min(0.3, deadline - time.monotonic())))
        if self.web is not None:
            self.web.stop(timeout=max(0.05, min(0.5, deadline - time.monotonic())))
        if self.publisher is not None:
            # Disconnected, there is nothing to flush: do not wait out paho's reconnect
            # backoff (it sleeps in 1 s steps); unsent messages stay in the on-disk queue.
            budget = deadline - time.monotonic() if self.publisher.connected else 0.3
            self.publisher.stop(timeout=max(0.2, budget))
        if self.broker is not None:
            self.broker.stop(timeout=0.5)
        if self.metrics is not None:
            self.metrics.stop()
        for classifier in self._classifiers.values():
            classifier.close()  # an Edge TPU child process ends with its daemon, not after it
        # Last: every status line above (a source "stopped") still reaches the console; one
        # nobody reads costs no more than this.
        for sink in self.sinks:
            if isinstance(sink, ConsoleSink):
                sink.close(timeout=0.2)
        self.state_lock.release()


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
