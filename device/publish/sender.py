"""The publisher's sender thread: hands the outbox's messages to paho, in order.

See :mod:`device.publish.mqtt` for the delivery guarantees this implements. Each round: collect
the acknowledgements paho reported, then (while connected) re-send the retained messages after
a reconnect, the latest-only messages, and as many spooled messages as ``max_inflight`` allows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from device.publish.outbox import Outbox

log = logging.getLogger(__name__)


class PublisherCounts:
    """The publisher's own counters (thread-safe); the outbox counts queued, dropped and
    in-flight messages itself."""

    NAMES = ("published", "republished", "reconnects", "stats_skipped", "errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, increment: int = 1) -> None:
        with self._lock:
            self._values[name] += increment

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class Sender:
    """The sender thread over one paho client and one outbox."""

    def __init__(
        self,
        client: mqtt.Client,
        outbox: Outbox,
        counts: PublisherCounts,
        max_inflight: int,
        connected: Callable[[], bool],
    ) -> None:
        self._client = client
        self._outbox = outbox
        self._counts = counts
        self._max_inflight = max_inflight
        self._connected = connected
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.stopping = False  # set once by stop(); the thread then ends
        self.republish_pending = False  # set by a reconnect, cleared by the thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mqtt-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something to send, or an acknowledgement to collect."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Ask the thread to end and wait for it up to ``timeout`` seconds."""
        self.stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def threads_alive(self) -> bool:
        """This send thread and paho's network thread (``loop_start``) both run."""
        network = getattr(self._client, "_thread", None)  # paho has no public way to ask
        return self.alive and network is not None and network.is_alive()

    def collect_acks(self) -> None:
        done = self._outbox.collect_acks()
        if done:
            self._counts.add("published", done)

    def _loop(self) -> None:
        while not self.stopping:
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self.collect_acks()
                if self._connected() and not self.stopping:
                    if self.republish_pending and not self._outbox.holding:
                        self._republish_retained()
                    self._send_latest()
                    self._drain()
            except Exception:  # the sender must survive anything; the spool keeps the data
                self._counts.add("errors")
                log.exception("MQTT: sender error")
                time.sleep(0.1)
        self.collect_acks()

    def _republish_retained(self) -> None:
        # After the in-flight messages, before anything newer: the broker ends up holding the
        # newest value of each retained topic either way.
        self.republish_pending = False
        retained = self._outbox.retained()
        for topic, (body, qos) in retained.items():
            self._client.publish(topic, body, qos=qos, retain=True)
        self._counts.add("republished", len(retained))

    def _send_latest(self) -> None:
        for topic, message in self._outbox.take_latest().items():
            info = self._client.publish(topic, message.body, qos=message.qos, retain=message.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS and message.qos == 0:
                # Not handed over: keep it unless a newer one arrived meanwhile.
                self._outbox.keep_latest(topic, message)
                continue
            if message.retain:
                self._outbox.remember_retained(topic, message.body, message.qos)
            self._counts.add("published")

    def _drain(self) -> None:
        sent_qos0: list[int] = []
        for msg in self._outbox.next_to_send(self._max_inflight):
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if msg.qos == 0:
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # paho dropped it; it stays in the spool for the next connection
                sent_qos0.append(msg.id)
                self._outbox.handed_over(msg, mid=None)
            else:
                # Even with rc NO_CONN paho keeps a QoS 1/2 message and sends it on reconnect.
                self._outbox.handed_over(msg, mid=info.mid)
        if sent_qos0:
            self._outbox.sent(sent_qos0)
            self._counts.add("published", len(sent_qos0))
