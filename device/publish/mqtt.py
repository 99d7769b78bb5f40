"""MQTT publisher of the daemon (paho-mqtt 2, ``CallbackAPIVersion.VERSION2``).

Topics (``<prefix>`` is ``<topic_prefix>/<device_id>``, see :class:`Topics`):

======================================  ========  ======================================
``<prefix>/available``                  retained  ``online`` / ``offline`` (last will)
``<prefix>/<camera>/state``             retained  debounced state, JSON, spooled
``<prefix>/<camera>/event``             no        start / change / end, JSON, spooled
``<prefix>/<camera>/snapshot``          retained  JPEG, latest only, not spooled
``<prefix>/<camera>/status``            retained  source status JSON, latest only
``<prefix>/stats``                      no        JSON, dropped while offline
``homeassistant/device/<id>/config``    retained  Home Assistant device discovery
======================================  ========  ======================================

Delivery of states and events
-----------------------------
``publish_state`` / ``publish_event`` never touch the network: they add ``device`` and a
per-topic ``seq`` (1, 2, 3, ... persisted with the queue, so it keeps growing across restarts)
to the payload, append it to the on-disk :class:`~device.publish.spool.Spool` and wake the sender
thread. Whatever the configured QoS, states and events always go through the spool, so the
ones produced while the broker is away are kept (up to ``queue_max_messages``; beyond it the
oldest are dropped and counted).

The sender thread hands messages to paho in spool order, at most ``max_inflight`` unacknowledged
at a time, and deletes a message from the spool only when paho reports it done: the PUBACK
(QoS 1) / PUBCOMP (QoS 2) arrived, or for QoS 0 the moment paho accepted it on a live
connection (QoS 0 promises no more).

Exactly one mechanism re-sends: paho. The session is clean (MQTT 3.1.1, ``clean_session=True``);
paho keeps every QoS 1/2 message it was given until acknowledged and, after a reconnect, sends
the unacknowledged ones again (DUP flag) in their original order. The sender never hands the
same spool message to paho twice within one process, and after a reconnect it hands nothing new
until every message in flight at the disconnect is acknowledged, so nothing overtakes them.
The spool re-sends only at the next process start (messages not acknowledged when the daemon
stopped or was killed).

Guarantee: QoS 1/2 states and events are delivered at least once, in order per topic, as long
as the spool does not overflow. A subscriber sees a duplicate only when the broker (or the
network) lost a PUBACK of a message it had already forwarded: the broker dies between
forwarding and acknowledging, or the daemon dies between the broker's PUBACK and deleting the
row. A broker restart between messages, or one that dies with messages unprocessed in its
socket buffer (the in-flight case in the tests), gives exactly once. QoS 2 does not remove the
remaining window: a broker without persistence forgets the QoS 2 handshake when it dies.
Consumers that must not double count compare ``seq`` with the last one they saw. QoS 0 states
and events are kept while offline too, but one written to a connection that then dies is lost
(at most once, as QoS 0 says).

After a reconnect the newest retained state, snapshot and source status of each camera are
published again (the same bytes, so the same ``seq``), before anything newer: a broker that
restarted without persistence has lost them, and a dashboard would otherwise show nothing until
the next change. So a state may repeat after a reconnect; events never do.

Snapshots, source status and stats are not spooled: only the newest snapshot/status per camera
is kept in memory until it can be sent; stats are dropped while offline.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from device.config import MqttConfig
from device.publish.spool import Spool

log = logging.getLogger(__name__)

SPOOL_FILE = "mqtt-queue.sqlite3"
ONLINE, OFFLINE = b"online", b"offline"


class MqttSetupError(ValueError):
    """The MQTT settings cannot be used (unreadable password file, bad TLS files)."""


@dataclass(frozen=True)
class Topics:
    """Every topic name in one place."""

    topic_prefix: str
    device_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def base(self) -> str:
        return f"{self.topic_prefix}/{self.device_id}"

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def state(self, camera: str) -> str:
        return f"{self.base}/{camera}/state"

    def event(self, camera: str) -> str:
        return f"{self.base}/{camera}/event"

    def snapshot(self, camera: str) -> str:
        return f"{self.base}/{camera}/snapshot"

    def status(self, camera: str) -> str:
        return f"{self.base}/{camera}/status"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth / last-will topic."""
        return f"{self.discovery_prefix}/status"

    @property
    def ha_discovery(self) -> str:
        """Device-based discovery: one message for all the device's entities."""
        return f"{self.discovery_prefix}/device/{self.device_id}/config"


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays become plain numbers and lists."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "tolist"):
            return obj.tolist()
        if hasattr(obj, "item"):
            return obj.item()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=default).encode(
        "utf-8"
    )


def discovery_payload(
    topics: Topics, cameras: Sequence[str], version: str = "", qos: int = 1
) -> dict[str, Any]:
    """Home Assistant device-based discovery (``<prefix>/device/<id>/config``, HA 2024.11+).

    Per camera: the label (with the whole state as attributes), its score, a ``detected``
    binary sensor, the snapshot as an image entity and the source status; for the device:
    the accelerator and, per camera, the inference rate from the stats topic. Templates read
    the state keys ``label``, ``labels[0].score``, ``detected``; status ``state``; stats
    ``accelerator`` and ``cameras.<name>.fps``.
    """
    dev = topics.device_id
    uid = f"kestrel_{dev}"
    components: dict[str, dict[str, Any]] = {}
    for cam in cameras:
        state = topics.state(cam)
        components[f"{uid}_{cam}_label"] = {
            "p": "sensor",
            "name": f"{cam} label",
            "unique_id": f"{uid}_{cam}_label",
            "state_topic": state,
            "value_template": "{{ value_json.label if value_json.label else 'none' }}",
            "json_attributes_topic": state,
            "icon": "mdi:label-outline",
        }
        components[f"{uid}_{cam}_score"] = {
            "p": "sensor",
            "name": f"{cam} score",
            "unique_id": f"{uid}_{cam}_score",
            "state_topic": state,
            "value_template": (
                "{{ (value_json.labels[0].score * 100) | round(1) if value_json.labels else 0 }}"
            ),
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:gauge",
        }
        components[f"{uid}_{cam}_detected"] = {
            "p": "binary_sensor",
            "name": f"{cam} detected",
            "unique_id": f"{uid}_{cam}_detected",
            "state_topic": state,
            "value_template": "{{ 'ON' if value_json.detected else 'OFF' }}",
            "device_class": "occupancy",
        }
        components[f"{uid}_{cam}_snapshot"] = {
            "p": "image",
            "name": f"{cam} snapshot",
            "unique_id": f"{uid}_{cam}_snapshot",
            "image_topic": topics.snapshot(cam),
            "content_type": "image/jpeg",
        }
        components[f"{uid}_{cam}_source"] = {
            "p": "sensor",
            "name": f"{cam} source",
            "unique_id": f"{uid}_{cam}_source",
            "state_topic": topics.status(cam),
            "value_template": "{{ value_json.state }}",
            "entity_category": "diagnostic",
            "icon": "mdi:cctv",
        }
        components[f"{uid}_{cam}_fps"] = {
            "p": "sensor",
            "name": f"{cam} inference rate",
            "unique_id": f"{uid}_{cam}_fps",
            "state_topic": topics.stats,
            "value_template": f"{{{{ value_json.cameras['{cam}'].fps }}}}",
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        }
    components[f"{uid}_accelerator"] = {
        "p": "sensor",
        "name": "accelerator",
        "unique_id": f"{uid}_accelerator",
        "state_topic": topics.stats,
        "value_template": "{{ value_json.accelerator }}",
        "entity_category": "diagnostic",
        "icon": "mdi:chip",
    }
    device = {"identifiers": [uid], "name": f"Kestrel {dev}", "manufacturer": "Kestrel"}
    device["model"] = "image classifier"
    if version:
        device["sw_version"] = version
    origin = {"name": "kestrel"} | ({"sw_version": version} if version else {})
    return {
        "device": device,
        "origin": origin,
        "components": components,
        "availability_topic": topics.available,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "qos": qos,
    }


def read_password(config: MqttConfig) -> str | None:
    """The password from the config or the first line of ``password_file``."""
    if config.password is not None:
        return config.password.get_secret_value()
    if config.password_file is None:
        return None
    path = Path(config.password_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MqttSetupError(
            f"mqtt.password_file {path}: cannot read ({exc.strerror or exc})"
        ) from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise MqttSetupError(f"mqtt.password_file {path}: the first line (the password) is empty")
    return lines[0]


class MqttPublisher:
    """Publishes states, events, snapshots, status and stats; see the module docstring.

    Thread-safe; ``publish_*`` never block on the network.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        state_dir: Path,
        *,
        cameras: Sequence[str] = (),
        labels: Mapping[str, Sequence[str]] | None = None,
        version: str = "",
        max_inflight: int = 20,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.cameras = list(cameras)
        self.labels = dict(labels or {})  # reserved: the label sensors are free text
        self.version = version
        self.max_inflight = max(1, int(max_inflight))
        self.topics = Topics(config.topic_prefix, device_id, config.home_assistant.discovery_prefix)
        self._address = f"{config.host}:{config.port}"
        password = read_password(config)
        if password is not None and not config.username:
            raise MqttSetupError("mqtt.password needs mqtt.username (MQTT 3.1.1)")
        self._client = self._make_client(password)
        del password
        self._spool = Spool(Path(state_dir).expanduser() / SPOOL_FILE, config.queue_max_messages)

        self._lock = threading.Lock()  # counters, latest-only messages, problem text
        self._wake = threading.Event()
        self._acks: collections.deque[int] = collections.deque()  # mids from on_publish
        self._latest: dict[str, tuple[bytes, int, bool]] = {}  # topic -> newest unsent
        # Sender-thread state: paho mid -> spool id of messages handed over and not yet acked.
        self._inflight: dict[int, int] = {}
        self._cursor = 0  # highest spool id handed to paho in this process
        self._resync = False  # set on disconnect: hand nothing new until the inflight is acked
        # The newest retained message handed to paho per topic, re-sent after a reconnect.
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._republish = False  # set by a reconnect, cleared by the sender
        self._connected = False
        self._ever_connected = False
        self._started = self._stopping = self._stopped = False
        self._sender: threading.Thread | None = None
        self._problem: str | None = None
        self._counts = {
            "published": 0,
            "republished": 0,
            "reconnects": 0,
            "stats_skipped": 0,
            "errors": 0,
        }

    # -- set-up ------------------------------------------------------------------------------

    def _make_client(self, password: str | None) -> mqtt.Client:
        cfg = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"kestrel-{self.device_id}",
            clean_session=True,  # one re-send mechanism: see the module docstring
            protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(cfg.reconnect.min_delay, cfg.reconnect.max_delay)
        # Headroom above our own bound for available / discovery / snapshots.
        client.max_inflight_messages_set(self.max_inflight + 20)
        client.max_queued_messages_set(0)
        if cfg.username:
            client.username_pw_set(cfg.username, password)
        if cfg.tls.enabled:
            tls = cfg.tls
            try:
                client.tls_set(
                    ca_certs=str(tls.ca_file) if tls.ca_file else None,
                    certfile=str(tls.cert_file) if tls.cert_file else None,
                    keyfile=str(tls.key_file) if tls.key_file else None,
                )
            except (OSError, ValueError) as exc:
                files = [str(p) for p in (tls.ca_file, tls.cert_file, tls.key_file) if p]
                raise MqttSetupError(
                    f"mqtt.tls: cannot load {', '.join(files) or 'the system CAs'} ({exc})"
                ) from None
            if tls.insecure:
                client.tls_insecure_set(True)
        client.on_socket_open = _no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def __repr__(self) -> str:
        state = "connected" if self._connected else "disconnected"
        return f"MqttPublisher({self.device_id!r}, {self._address}, {state})"

    # -- public API --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def counters(self) -> dict[str, Any]:
        """published, republished (retained messages sent again after reconnects), queued (in
        the spool), dropped (spool overflow), reconnects, last_error, in_flight, stats_skipped,
        errors."""
        with self._lock:
            counts = dict(self._counts)
            last_error = self._problem
        return {
            "published": counts["published"],
            "republished": counts["republished"],
            "queued": len(self._spool),
            "dropped": self._spool.dropped,
            "reconnects": counts["reconnects"],
            "last_error": last_error,
            "in_flight": len(self._inflight),
            "stats_skipped": counts["stats_skipped"],
            "errors": counts["errors"],
            "connected": self._connected,
        }

    def start(self) -> None:
        """Connect in the background; never raises because the broker is down or unknown."""
        if self._started:
            return
        self._started = True
        # The will must be set before connecting: the broker publishes it if we vanish.
        self._client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        self._client.connect_async(self.config.host, self.config.port, self.config.keepalive)
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        log.info("MQTT: connecting to %s as %s", self._address, self._client_id())
        # loop_start runs loop_forever(retry_first_connection=True): a failed first connect
        # (broker not up yet, DNS failure) is retried with the same backoff as a lost one.
        self._client.loop_start()

    def publish_state(self, camera: str, payload: Mapping[str, Any]) -> None:
        """Retained debounced state, through the spool (QoS ``qos.state``)."""
        self._spool_json(self.topics.state(camera), payload, self.config.qos.state, True)

    def publish_event(self, camera: str, payload: Mapping[str, Any]) -> None:
        """Non-retained transition event, through the spool (QoS ``qos.event``)."""
        self._spool_json(self.topics.event(camera), payload, self.config.qos.event, False)

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        """Retained JPEG; only the newest unsent one per camera is kept."""
        self._set_latest(self.topics.snapshot(camera), bytes(jpeg), self.config.qos.snapshot)

    def publish_status(self, camera: str, payload: Mapping[str, Any]) -> None:
        """Retained source status (streaming / reconnecting / ...); newest only, QoS 1."""
        body = dict(payload)
        body.setdefault("device", self.device_id)
        body.setdefault("camera", camera)
        self._set_latest(self.topics.status(camera), encode_json(body), 1)

    def publish_stats(self, payload: Mapping[str, Any]) -> None:
        """Non-retained stats; dropped (and counted) while not connected."""
        if not self._connected or self._stopping:
            with self._lock:
                self._counts["stats_skipped"] += 1
            return
        body = dict(payload)
        body.setdefault("device", self.device_id)
        with self._lock:
            self._latest[self.topics.stats] = (encode_json(body), self.config.qos.stats, False)
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Flush what can be flushed, publish ``offline`` and disconnect, within ``timeout``
        seconds even when the broker is gone. Unsent states/events stay in the spool."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + max(0.1, timeout)
        if self._started and self._connected:
            # Half the time to drain the spool and the latest-only messages...
            flush_until = time.monotonic() + 0.5 * timeout
            while time.monotonic() < flush_until and self._connected and not self._idle():
                time.sleep(0.01)
        self._stopping = True
        self._wake.set()
        if self._sender is not None:
            self._sender.join(max(0.0, deadline - time.monotonic()) * 0.5)
        if self._started:
            if self._connected:
                # ...then "offline" (retained), waited for: a clean disconnect sends no will.
                info = self._client.publish(self.topics.available, OFFLINE, qos=1, retain=True)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    wait = max(0.0, deadline - time.monotonic() - 0.2)
                    with contextlib.suppress(RuntimeError, ValueError):
                        info.wait_for_publish(wait)
                    if not info.is_published():
                        log.warning("MQTT: 'offline' not acknowledged before the deadline")
            if self._sender is None or not self._sender.is_alive():
                self._collect_acks()  # acks that came in while "offline" was on its way
            self._client.disconnect()
            # loop_stop joins paho's thread, which may sit in a backoff sleep or a blocking
            # connect(): join it from a helper so this call keeps its deadline.
            joiner = threading.Thread(target=self._client.loop_stop, daemon=True)
            joiner.start()
            joiner.join(max(0.0, deadline - time.monotonic()))
        self._connected = False
        if self._sender is None or not self._sender.is_alive():
            self._spool.close()
        log.info("MQTT: stopped (%d message(s) left in the queue)", self._queued_safe())

    # -- enqueueing --------------------------------------------------------------------------

    def _spool_json(self, topic: str, payload: Mapping[str, Any], qos: int, retain: bool) -> None:
        body = dict(payload)
        body.setdefault("device", self.device_id)
        try:
            if "seq" in body:
                self._spool.put(topic, encode_json(body), qos, retain)
            else:
                self._spool.put_sequenced(
                    topic, lambda seq: encode_json(body | {"seq": seq}), qos, retain, topic
                )
        except RuntimeError:  # the spool was closed by stop()
            log.warning("MQTT: %s published after stop; not queued", topic)
            return
        except (sqlite3.Error, OSError) as exc:
            # A full disk must not stop inference: count, log, go on.
            with self._lock:
                self._counts["errors"] += 1
            log.error("MQTT: cannot queue a message for %s: %s", topic, exc)
            return
        self._wake.set()

    def _set_latest(self, topic: str, body: bytes, qos: int) -> None:
        if self._stopped:
            return
        with self._lock:
            self._latest[topic] = (body, qos, topic != self.topics.stats)
        self._wake.set()

    def _idle(self) -> bool:
        with self._lock:
            latest = bool(self._latest)
        return not latest and not self._inflight and len(self._spool) == 0

    def _queued_safe(self) -> int:
        try:
            return len(self._spool)
        except Exception:  # closed
            return -1

    def _client_id(self) -> str:
        return self.config.client_id or f"kestrel-{self.device_id}"

    # -- sender thread -----------------------------------------------------------------------

    def _send_loop(self) -> None:
        while not self._stopping:
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._collect_acks()
                if self._connected and not self._stopping:
                    if self._republish and not self._resync:
                        self._republish_retained()
                    self._send_latest()
                    self._drain()
            except Exception:  # the sender must survive anything; the spool keeps the data
                with self._lock:
                    self._counts["errors"] += 1
                log.exception("MQTT: sender error")
                time.sleep(0.1)
        self._collect_acks()

    def _collect_acks(self) -> None:
        done: list[int] = []
        while self._acks:
            spool_id = self._inflight.pop(self._acks.popleft(), None)
            if spool_id is not None:
                done.append(spool_id)
        if done:
            self._spool.remove(done)
            with self._lock:
                self._counts["published"] += len(done)
        if self._resync and not self._inflight:
            self._resync = False

    def _republish_retained(self) -> None:
        # After the in-flight messages, before anything newer: the broker ends up holding the
        # newest value of each retained topic either way.
        self._republish = False
        for topic, (body, qos) in self._retained.items():
            self._client.publish(topic, body, qos=qos, retain=True)
        with self._lock:
            self._counts["republished"] += len(self._retained)

    def _send_latest(self) -> None:
        with self._lock:
            latest, self._latest = self._latest, {}
        for topic, (body, qos, retain) in latest.items():
            info = self._client.publish(topic, body, qos=qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and qos == 0:
                # Not handed over: keep it unless a newer one arrived meanwhile.
                with self._lock:
                    self._latest.setdefault(topic, (body, qos, retain))
                continue
            if retain:
                self._retained[topic] = (body, qos)
            with self._lock:
                self._counts["published"] += 1

    def _drain(self) -> None:
        # After a reconnect paho re-sends what was in flight; wait for it so nothing overtakes.
        if self._resync:
            return
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        sent_qos0: list[int] = []
        for msg in self._spool.peek(room, after=self._cursor):
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if msg.qos == 0:
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # paho dropped it; it stays in the spool for the next connection
                sent_qos0.append(msg.id)
            else:
                # Even with rc NO_CONN paho keeps a QoS 1/2 message and sends it on reconnect.
                self._inflight[info.mid] = msg.id
            if msg.retain:
                self._retained[msg.topic] = (msg.payload, msg.qos)
            self._cursor = msg.id
        if sent_qos0:
            self._spool.remove(sent_qos0)
            with self._lock:
                self._counts["published"] += len(sent_qos0)

    # -- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if self._stopping:
            return
        if reason_code.is_failure:
            self._note_problem(
                f"broker {self._address} refused the connection: {reason_code}", logging.ERROR
            )
            return
        with self._lock:
            if self._ever_connected:
                self._counts["reconnects"] += 1
                self._republish = True
            self._ever_connected = True
            self._problem = None
        log.info("MQTT: connected to %s", self._address)
        client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        if self.config.home_assistant.enabled:
            client.subscribe(self.topics.ha_status, qos=1)
            self._publish_discovery(client)
        self._connected = True
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the exception says why.
        exc = sys.exc_info()[1]
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._note_problem(f"cannot connect to {self._address}: {why}", logging.WARNING)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any,
    ) -> None:
        was_connected, self._connected = self._connected, False
        self._resync = True
        if was_connected and not self._stopping:
            self._note_problem(
                f"connection to {self._address} lost ({reason_code}); reconnecting",
                logging.WARNING,
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        # Called with paho's message lock held: no locks here, the sender thread does the work.
        self._acks.append(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic != self.topics.ha_status or self._stopping:
            return
        # A retained "online" arrives on every subscribe; discovery was just sent on connect.
        if message.payload.strip().lower() == ONLINE and not message.retain:
            log.info("MQTT: Home Assistant came online; re-sending discovery")
            self._publish_discovery(client)

    def _publish_discovery(self, client: mqtt.Client) -> None:
        payload = discovery_payload(self.topics, self.cameras, self.version)
        client.publish(self.topics.ha_discovery, encode_json(payload), qos=1, retain=True)

    def _note_problem(self, text: str, level: int) -> None:
        """Log a connection problem once; repeats of the same text go to debug."""
        with self._lock:
            repeated = text == self._problem
            self._problem = text
        log.log(logging.DEBUG if repeated else level, "MQTT: %s", text)


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Disable Nagle: an event sent right after a snapshot would otherwise wait for the
    broker's delayed ACK (up to ~40 ms measured)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
