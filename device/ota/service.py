"""Model updates for one daemon: which model each camera starts with, the MQTT connection that
takes pushes, the thread that installs them, and the retained status.

:class:`OtaService` is what the daemon sees of :mod:`device.ota`:

- built before any model loads, it answers :meth:`~OtaService.model_for`: with
  ``ota.enabled``, the store's active bundle over the config's ``model`` (logged), or, after
  a crash loop on probation, the bundle before it;
- :meth:`~OtaService.start` opens its own MQTT connection (the publisher's settings, through
  :mod:`device.publish.client`: broker, credentials, TLS; client id ``<client id>-ota``),
  subscribed to exactly ``<prefix>/model/set`` and its groups' topics, and starts the thread
  that runs one install or rollback at a time;
- :meth:`~OtaService.stop` is a clean stop: it ends no probation.

Disabled, it answers ``model_for`` with the config's model and does nothing else.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device.config import CameraConfig, ConfigError, KestrelConfig
from device.inference.bundle import BundleError, load_bundle
from device.ota.protocol import Rollback
from device.ota.receiver import MIB, Received, Receiver, Refused, Started
from device.ota.signing import load_public_key
from device.ota.store import (
    CRASHES_TO_ROLL_BACK,
    PROBATION_S,
    ModelRef,
    ModelStore,
    Slot,
    crashes_so_far,
    state_dir_free,
)
from device.ota.updates import Outcome, UpdateRefused, Updates
from device.publish.homeassistant import device_sw_version
from device.publish.payloads import model_status_payload
from device.publish.topics import Topics, encode_json

if TYPE_CHECKING:
    from device.run.daemon import Daemon

log = logging.getLogger(__name__)


class OtaService:
    """See the module docstring."""

    def __init__(self, config: KestrelConfig) -> None:
        self.config = config
        self.enabled = config.ota.enabled
        self.store = ModelStore(config.state_dir)
        self.slots: dict[str, Slot] = {}
        self.daemon: Daemon | None = None
        self._on_probation = False  # this run uses an update that has not run a minute yet
        self._crash_loop: list[str] = []  # cameras rolled back at start-up
        self._status: dict[str, Any] | None = None
        self._client: Any = None
        self._timer: threading.Timer | None = None
        self._stopping = threading.Event()
        self._jobs: queue.Queue[Received | Rollback] = queue.Queue()
        self._lock = threading.Lock()  # the receiver: fed by paho's thread, expired by ours
        if not self.enabled:
            return
        if config.mqtt is None:
            raise ConfigError("ota.enabled: updates come through the broker, but mqtt is null")
        self.topics = Topics(config.mqtt.topic_prefix, config.device_id)
        self.subscriptions = [self.topics.model_command] + [
            self.topics.group_model_command(group) for group in config.ota.groups
        ]
        self.slots = self._usable(self.store.slots())
        if state_dir_free(config.state_dir):  # else the daemon stops at the lock
            self._record_start()
        keys = [load_public_key(text) for text in config.ota.trusted_keys]
        self.updates = Updates(config, self.store, keys, self.slots)
        max_bytes = int(config.ota.max_mb * MIB)
        self.receiver = Receiver(self.store.incoming, max_bytes, config.ota.transfer_timeout)

    def _usable(self, slots: dict[str, Slot]) -> dict[str, Slot]:
        """The slots of configured cameras whose bundle still loads (else: the config's)."""
        usable = {}
        for camera in self.config.cameras:
            slot = slots.get(camera.name)
            if slot is None:
                continue
            try:
                load_bundle(slot.current.path)
            except BundleError as exc:
                log.error(
                    "camera %s: the active model is unusable, using the config's: %s",
                    camera.name,
                    exc,
                )
                continue
            usable[camera.name] = slot
        return usable

    def model_for(self, camera: CameraConfig) -> Path:
        """The bundle folder the camera starts with."""
        configured = camera.model or self.config.model
        slot = self.slots.get(camera.name)
        if slot is None:
            return configured
        log.warning(
            "camera %s: model %s (%s) from %s, not the config's %s (ota.enabled: the last "
            "model pushed)",
            camera.name,
            slot.current.name,
            slot.current.sha256[:12],
            slot.current.path,
            configured,
        )
        return slot.current.path

    # ------------------------------------------------------------------ start / stop

    def start(self, daemon: Daemon) -> None:
        if not self.enabled:
            return
        from device.publish.client import make_client

        self.daemon = daemon
        if self._on_probation:
            self._start_probation()
        self._set_sw_version(resend=False)
        self._report_payload(self._startup_status())
        mqtt = self.config.mqtt
        assert mqtt is not None
        client_id = f"{mqtt.client_id or f'kestrel-{self.config.device_id}'}-ota"
        self._client = make_client(mqtt, client_id, max_inflight=10)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async(mqtt.host, mqtt.port, mqtt.keepalive, clean_start=True)
        self._client.loop_start()
        threading.Thread(target=self._run, name="ota", daemon=True).start()
        log.info("model updates: listening on %s", ", ".join(self.subscriptions))

    def _record_start(self) -> None:
        """Before any model loads (one that crashes the daemon while loading counts): the
        probation record of an update, or the roll-back of a crash loop."""
        try:
            self.store.clear_incoming()
            health = self.store.health()
            if health is None:
                return
            crashes = crashes_so_far(health)
            if crashes < CRASHES_TO_ROLL_BACK:
                self.store.record_start(crashes)
                self._on_probation = True
                return
            crashed = [n for n, s in self.slots.items() if s.current.sha256 == health.get("sha256")]
            changed = self.store.roll_back(crashed)
            self.store.end_probation()
            self.slots.update(changed)
            self._crash_loop = list(changed)
        except OSError as exc:
            log.error("model updates: cannot write to %s (%s)", self.store.root, exc)

    def _start_probation(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(PROBATION_S, self._proven)
        self._timer.daemon = True
        self._timer.start()

    def _proven(self) -> None:
        try:
            self.store.proven()
        except OSError as exc:
            log.error("model updates: cannot end the probation (%s)", exc)

    def stop(self, timeout: float = 0.3) -> None:
        if not self.enabled or self._client is None:
            return
        from device.publish.client import disconnect_within

        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        try:
            self.store.stopped_cleanly()
        except OSError as exc:
            log.error("model updates: cannot record the clean stop (%s)", exc)
        disconnect_within(self._client, time.monotonic() + timeout)
        with self._lock:
            self.receiver.close()

    # ------------------------------------------------------------------ status

    def _startup_status(self) -> dict[str, Any]:
        current = self.updates.current(self.config.cameras[0])
        if self._crash_loop:
            slot = self.slots[self._crash_loop[0]]
            crashed = slot.previous.name if slot.previous else "the update"
            return self._payload(
                "rolled_back",
                Outcome(
                    "rolled_back",
                    slot.current.name,
                    slot.current.sha256,
                    slot.previous.sha256 if slot.previous else None,
                    f"the daemon crashed {CRASHES_TO_ROLL_BACK} times within {PROBATION_S:g} s "
                    f"of starting with {crashed}: back to {slot.current.name}",
                ),
            )
        last = self.store.last_status() or {}
        if last.get("status") == "receiving":
            last |= {"status": "rejected", "reason": "transfer interrupted by a restart"}
        elif last.get("status") != "rejected" and last.get("sha256") != current.sha256:
            last = {}
        if last.get("status") == "rejected":  # what runs is what it says was kept
            last["previous"] = current.sha256
        if last:
            return last | {"groups": list(self.config.ota.groups)}
        return self._payload(
            "active", Outcome("active", current.name, current.sha256, None, "started")
        )

    def _payload(
        self, status: str, outcome: Outcome, request: str | None = None, camera: str | None = None
    ) -> dict[str, Any]:
        payload = model_status_payload(
            status,
            name=outcome.name,
            sha256=outcome.sha256,
            previous=outcome.previous,
            reason=outcome.reason,
            camera=camera,
            request=request,
            groups=self.config.ota.groups,
        )
        return payload | {"device": self.config.device_id}

    def _report_payload(self, payload: dict[str, Any]) -> None:
        self._status = payload
        try:
            self.store.save_status(payload)
        except OSError as exc:
            log.error("model updates: cannot keep the status (%s)", exc)
        if self._client is not None:
            self._client.publish(self.topics.model_status, encode_json(payload), 1, True)

    def _set_sw_version(self, resend: bool) -> None:
        """Home Assistant's device ``sw_version``: Kestrel's and the first camera's model."""
        publisher = self.daemon.publisher if self.daemon else None
        if publisher is None:
            return
        manifest = self.daemon.stages[self.config.cameras[0].name][0].manifest
        publisher.version = device_sw_version(__version__, manifest.name, manifest.model_sha256)
        if resend and self.config.mqtt and self.config.mqtt.home_assistant.enabled:
            publisher.rediscovery.request()

    # ------------------------------------------------------------------ MQTT (paho's thread)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("model updates: the broker refused the connection (%s)", reason)
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        if self._status is not None:
            client.publish(self.topics.model_status, encode_json(self._status), 1, True)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        for topic, code in zip(self.subscriptions, codes, strict=False):
            if code.is_failure:
                log.error(
                    "model updates: the broker refused the subscription to %s (%s)", topic, code
                )

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.retain:  # a command kept by the broker would be replayed at every connect
            log.warning("model updates: ignored a retained message on %s", message.topic)
            return
        publisher = self.daemon.publisher if self.daemon else None
        if publisher is not None and publisher.refused:  # the device id is another daemon's
            log.warning("model updates: ignored (device_id in use by another daemon)")
            return
        with self._lock:
            try:
                result = self.receiver.feed(message.payload)
            except Refused as refused:
                self._refused(refused)
                return
        if isinstance(result, Started):
            chunk = result.chunk
            outcome = Outcome(
                "receiving", chunk.name, chunk.sha256, self._running_sha(chunk.camera)
            )
            self._report_payload(self._payload("receiving", outcome, chunk.request, chunk.camera))
        elif result is not None:
            self._jobs.put(result)

    def _running(self, camera: str | None) -> ModelRef | None:
        """What the camera (the first, for the whole device) runs now."""
        try:
            return self.updates.current(self.updates.targets(camera)[0])
        except (UpdateRefused, BundleError, OSError):
            return None

    def _running_sha(self, camera: str | None) -> str | None:
        running = self._running(camera)
        return running.sha256 if running else None

    def _refused(self, refused: Refused) -> None:
        log.warning("model update refused: %s", refused.reason)
        outcome = Outcome(
            "rejected",
            refused.name,
            refused.sha256,
            self._running_sha(refused.camera),
            refused.reason,
        )
        self._report_payload(self._payload("rejected", outcome, refused.request, refused.camera))

    # ------------------------------------------------------------------ the OTA thread

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                job: Received | Rollback | None = self._jobs.get(timeout=1.0)
            except queue.Empty:
                job = None
            with self._lock:
                expired = self.receiver.expire()
            for refused in expired:
                self._refused(refused)
            if job is not None and not self._stopping.is_set():
                self._handle(job)

    def _handle(self, job: Received | Rollback) -> None:
        request, camera = (
            (job.chunk.request, job.chunk.camera)
            if isinstance(job, Received)
            else (job.request, job.camera)
        )
        assert self.daemon is not None
        try:
            if isinstance(job, Received):
                outcome = self.updates.install(self.daemon, job)
            else:
                outcome = self.updates.roll_back(self.daemon, job)
        except Exception as exc:  # UpdateRefused, or anything else: the daemon runs on
            if not isinstance(exc, UpdateRefused):
                log.exception("model update %s failed", request)
            running = self._running(camera)
            name, sha = (
                (job.chunk.name, job.chunk.sha256)
                if isinstance(job, Received)
                else (running.name if running else "", running.sha256 if running else "")
            )
            outcome = Outcome(
                "rejected", name, sha, self._running_sha(camera), str(exc) or repr(exc)
            )
            log.warning("model update %s rejected: %s", request, outcome.reason)
        else:
            log.warning(
                "model update %s: %s %s (%s)%s",
                request,
                outcome.status,
                outcome.name,
                outcome.sha256[:12],
                f": {outcome.reason}" if outcome.reason else "",
            )
            if outcome.status == "active" and outcome.reason != "already active":
                self._start_probation()
            elif self._timer is not None and outcome.status == "rolled_back":
                self._timer.cancel()
            self._set_sw_version(resend=True)
        self._report_payload(self._payload(outcome.status, outcome, request, camera))
