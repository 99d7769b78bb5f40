"""MQTT publisher of the daemon (paho-mqtt 2, ``CallbackAPIVersion.VERSION2``).

Where the rest lives: topics and JSON in :mod:`device.publish.topics`, Home Assistant discovery
in :mod:`device.publish.homeassistant`, pending messages in :mod:`device.publish.outbox` (over
:mod:`device.publish.spool`), paho's set-up in :mod:`device.publish.client`, the claim of the
device id in :mod:`device.publish.presence`.

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

Exactly one mechanism re-sends: paho. The session is clean (MQTT 5, ``clean_start``, no
session expiry); paho keeps every QoS 1/2 message it was given until acknowledged and, after a
reconnect, sends the unacknowledged ones again (DUP flag) in their original order. The sender
never hands the same spool message to paho twice within one process, and after a reconnect it
hands nothing new until every message in flight at the disconnect is acknowledged. The spool
re-sends only at the next process start (messages not acknowledged when the daemon stopped or
was killed).

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
the next change. So a state may repeat after a reconnect; events never do. A publish refused
by the broker (MQTT 5 reason code, e.g. its ACL) leaves the spool, counted as ``denied``.

Snapshots, source status and stats are not spooled: the newest snapshot/status per camera waits
in memory; stats are dropped while offline. A stray retained ``offline`` is answered ``online``.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from device.config import MqttConfig
from device.publish.client import (
    Denials,
    MqttSetupError,
    disconnect_within,
    make_client,
    say_offline,
)
from device.publish.homeassistant import ResendLimiter, discovery_payload
from device.publish.outbox import LatestMessage, Outbox
from device.publish.presence import Presence
from device.publish.sender import PublisherCounts, Sender
from device.publish.topics import OFFLINE, ONLINE, Topics, encode_json

# MqttSetupError is what the constructor raises for unusable settings.
__all__ = ["MqttPublisher", "MqttSetupError"]

log = logging.getLogger(__name__)

DISCOVERY_INTERVAL = 30.0  # seconds: at most one discovery re-send per Home Assistant birth burst


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
        version: str = "",
        max_inflight: int = 20,
        discovery_interval: float = DISCOVERY_INTERVAL,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.cameras = list(cameras)
        self.version = version
        self.max_inflight = max(1, int(max_inflight))
        self.topics = Topics(config.topic_prefix, device_id, config.home_assistant.discovery_prefix)
        self._address = f"{config.host}:{config.port}"
        self._client = make_client(config, self._client_id(), self.max_inflight)
        self._attach_callbacks()
        self._outbox = Outbox(state_dir, config.queue_max_messages)
        self._counts = PublisherCounts()
        self._denials = Denials(uncounted=frozenset(self.topics.direct))
        self._sender = Sender(
            self._client, self._outbox, self._counts, self.max_inflight, lambda: self._connected
        )
        self._lock = threading.Lock()  # the connection history and the problem text
        self._connected = False
        self._ever_connected = False
        self._started = self._stopped = False
        self._problem: str | None = None
        self.rediscovery = ResendLimiter(self._resend_discovery, discovery_interval)
        self._presence = Presence()
        self._refused: str | None = None  # another live instance holds the device id

    def _attach_callbacks(self) -> None:
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def alive(self) -> bool:  # its send thread and paho's network thread run
        return self._sender.threads_alive

    @property
    def refused(self) -> bool:  # another live daemon holds the device id (presence.py)
        return self._refused is not None

    @property
    def counters(self) -> dict[str, Any]:
        """published, republished (retained, after reconnects), queued (in the spool), dropped
        (spool overflow), denied (by the broker), reconnects, last_error, in_flight, ..."""
        counts = self._counts.snapshot()
        with self._lock:
            last_error = self._problem or self._denials.last
        return {
            # A denied message was counted as published when handed over (or acknowledged).
            "published": max(0, counts["published"] - self._denials.counted),
            "republished": counts["republished"],
            **self._outbox.counters(),  # queued, dropped, queue_reset (a corrupt file moved aside)
            "denied": self._denials.count,
            "reconnects": counts["reconnects"],
            "last_error": last_error,
            "in_flight": self._outbox.in_flight,
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
        self._client.connect_async(
            self.config.host, self.config.port, self.config.keepalive, clean_start=True
        )
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
        body = self._with_device(payload)
        body.setdefault("camera", camera)
        self._set_latest(self.topics.status(camera), encode_json(body), 1)

    def publish_stats(self, payload: Mapping[str, Any]) -> None:
        """Non-retained stats; dropped (and counted) while not connected."""
        if not self._connected or self._sender.stopping:
            self._counts.add("stats_skipped")
            return
        body = encode_json(self._with_device(payload))
        message = LatestMessage(body, self.config.qos.stats, retain=False)
        self._outbox.set_latest(self.topics.stats, message)
        self._sender.wake()

    def stop(self, timeout: float = 2.0) -> None:
        """Flush what can be flushed, publish ``offline`` and disconnect, within ``timeout``
        seconds even when the broker is gone. Unsent states/events stay in the spool."""
        if self._stopped:
            return
        self._stopped = True
        self.rediscovery.close()
        deadline = time.monotonic() + max(0.1, timeout)
        if self._started and self._connected:
            self._flush(until=time.monotonic() + 0.5 * timeout)
        self._sender.stop(timeout=max(0.0, deadline - time.monotonic()) * 0.5)
        if self._started:
            self._disconnect(deadline)
        self._connected = False
        if not self._sender.alive:
            self._outbox.close()
        log.info("MQTT: stopped (%d message(s) left in the queue)", self._outbox.queued)

    # -- stopping ----------------------------------------------------------------------------

    def _flush(self, until: float) -> None:
        """Half of stop's time to drain the spool and the latest-only messages..."""
        while time.monotonic() < until and self._connected and not self._outbox.idle():
            time.sleep(0.01)

    def _disconnect(self, deadline: float) -> None:
        # Connected but not settled yet (presence.py) still said "online": say "offline" too.
        if self._client.is_connected() and not self._refused:
            say_offline(self._client, self.topics, deadline)
        if not self._sender.alive:
            self._sender.collect_acks()  # acks that came in while "offline" was on its way
        disconnect_within(self._client, deadline)

    # -- enqueueing --------------------------------------------------------------------------

    def _with_device(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(payload)
        body.setdefault("device", self.device_id)
        return body

    def _spool_json(self, topic: str, payload: Mapping[str, Any], qos: int, retain: bool) -> None:
        try:
            self._outbox.put_json(topic, self._with_device(payload), qos, retain)
        except RuntimeError:  # the spool was closed by stop()
            log.warning("MQTT: %s published after stop; not queued", topic)
            return
        except (sqlite3.Error, OSError) as exc:
            # A full disk must not stop inference: count, log, go on.
            self._counts.add("errors")
            log.error("MQTT: cannot queue a message for %s: %s", topic, exc)
            return
        self._sender.wake()

    def _set_latest(self, topic: str, body: bytes, qos: int) -> None:
        if self._stopped:
            return
        self._outbox.set_latest(topic, LatestMessage(body, qos, topic != self.topics.stats))
        self._sender.wake()

    def _client_id(self) -> str:
        return self.config.client_id or f"kestrel-{self.device_id}"

    # -- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: Any,
        properties: Any,
    ) -> None:
        if self._sender.stopping or self._refused:
            return
        if reason_code.is_failure:
            self._note_problem(
                f"broker {self._address} refused the connection: {reason_code}", logging.ERROR
            )
            return
        with self._lock:
            reconnected, self._ever_connected = self._ever_connected, True
            self._problem = None
        if reconnected:
            self._counts.add("reconnects")
            self._sender.republish_pending = True
        log.info("MQTT: connected to %s", self._address)
        client.subscribe(self.topics.instance, qos=1)  # before the claim: see presence.py
        client.publish(self.topics.instance, self._presence.claim_again(), qos=1, retain=True)
        client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        client.subscribe(self.topics.available, qos=1)  # to answer a stray "offline"
        if self.config.home_assistant.enabled:
            client.subscribe(self.topics.ha_status, qos=1)
            self._publish_discovery(client)
        # Spooled messages wait until no other live instance holds the id (presence.py).
        self._presence.connecting(self._settled)

    def _settled(self) -> None:
        if not self._refused and not self._sender.stopping and self._client.is_connected():
            self._connected = True
            self._sender.wake()

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
        self._outbox.hold()
        self._presence.disconnected()
        if was_connected and not self._sender.stopping:
            self._note_problem(
                f"connection to {self._address} lost ({reason_code}); reconnecting",
                logging.WARNING,
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        # Called with paho's message lock held: no locks here, the sender thread does the work.
        if reason_code.is_failure:
            # Sending it again would be refused again: it leaves the queue, counted as denied.
            self._denials.record(client, mid, reason_code)
        self._outbox.acknowledged(mid)
        self._sender.wake()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._sender.stopping or self._refused:
            return
        if message.topic == self.topics.instance:
            self._on_claim(client, message)
        elif message.topic == self.topics.available and message.payload == OFFLINE:
            # Someone's "offline" (a refused newcomer's, a stale will) while we are alive: untrue.
            client.publish(self.topics.available, ONLINE, qos=1, retain=True)
        # A retained "online" arrives on every subscribe; discovery was just sent on connect.
        elif (
            message.topic == self.topics.ha_status
            and not message.retain
            and message.payload.strip().lower() == ONLINE
        ):
            self.rediscovery.request()

    def _resend_discovery(self) -> None:
        if self._connected and not self._sender.stopping:
            log.info("MQTT: Home Assistant came online; re-sending discovery")
            self._publish_discovery(self._client)

    def _on_claim(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        verdict = self._presence.judge(message.payload, bool(message.retain))
        if verdict == "refuse":
            self._refuse(client)
        elif verdict == "reassert":
            log.error("MQTT: %s", self._presence.newcomer_text(message.payload, self.device_id))
            # The newcomer may have overwritten our retained messages: ours again.
            client.publish(self.topics.instance, self._presence.payload(), qos=1, retain=True)
            client.publish(self.topics.available, ONLINE, qos=1, retain=True)
            self._sender.republish_pending = True
            if self.config.home_assistant.enabled:
                self._publish_discovery(client)
            self._sender.wake()

    def _refuse(self, client: mqtt.Client) -> None:
        """Another live instance holds the device id: leave the broker to it, for good."""
        text = self._presence.refusal_text(self.device_id, self._address)
        with self._lock:
            self._refused = self._problem = text
        self._connected = False
        log.error("MQTT: %s", text)
        client.disconnect()  # a clean disconnect: the broker sends no will ("offline") for us

    def _publish_discovery(self, client: mqtt.Client) -> None:
        payload = discovery_payload(self.topics, self.cameras, self.version)
        client.publish(self.topics.ha_discovery, encode_json(payload), qos=1, retain=True)

    def _note_problem(self, text: str, level: int) -> None:
        """Log a connection problem once; repeats of the same text go to debug."""
        with self._lock:
            repeated = text == self._problem
            self._problem = text
        log.log(logging.DEBUG if repeated else level, "MQTT: %s", text)
