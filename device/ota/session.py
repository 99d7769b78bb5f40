"""The push side's MQTT connection: connect, watch the devices' retained model statuses and
availability, publish the chunks with QoS 1 and wait for every acknowledgement.

Built on :mod:`device.publish.client` (MQTT 5: the broker says why it refuses a publish or a
subscription, e.g. an ACL), so ``kestrel push`` takes the same credentials and TLS settings as
the daemon.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from device.config import MqttConfig
from device.publish.client import disconnect_within, make_client

RETAINED_GRACE_S = 0.5  # after SUBACK, for the retained statuses to arrive


class PushError(RuntimeError):
    """The push could not be sent (no broker, refused login, denied topic)."""


class PushSession:
    """One push's connection; every wait is for a condition, bounded by a deadline."""

    def __init__(self, config: MqttConfig, client_id: str, max_inflight: int = 20) -> None:
        self.config = config
        self.prefix = config.topic_prefix
        self.client = make_client(config, client_id, max_inflight)
        self._cond = threading.Condition()
        self._connect_reason: Any = None
        self._subscribed: list[Any] | None = None
        self._acked = 0
        self.denied: list[str] = []
        self.statuses: dict[str, dict[str, Any]] = {}  # device -> its latest model status
        self.available: dict[str, str] = {}  # device -> online / offline
        self.on_status: Callable[[str, dict[str, Any]], None] | None = None
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._cond:
            self._connect_reason = reason
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self._cond:
            self._subscribed = list(codes)
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._cond:
            self._acked += 1
            if reason.is_failure:
                self.denied.append(str(reason))
            self._cond.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        parts = message.topic[len(self.prefix) + 1 :].split("/")
        if len(parts) != 2:
            return
        device, kind = parts
        if kind == "available":
            with self._cond:
                self.available[device] = message.payload.decode("utf-8", "replace")
                self._cond.notify_all()
            return
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(status, dict):
            return
        with self._cond:
            self.statuses[device] = status
            self._cond.notify_all()
        if self.on_status is not None:
            self.on_status(device, status)

    # ------------------------------------------------------------------ steps

    def wait_for(self, condition: Callable[[], bool], deadline: float) -> bool:
        with self._cond:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def connect(self, deadline: float) -> None:
        where = f"{self.config.host}:{self.config.port}"
        try:
            self.client.connect(self.config.host, self.config.port, self.config.keepalive)
        except (OSError, ValueError) as exc:
            raise PushError(f"cannot connect to the broker at {where}: {exc}") from None
        self.client.loop_start()
        if not self.wait_for(lambda: self._connect_reason is not None, deadline):
            raise PushError(f"no answer from the broker at {where}")
        if self._connect_reason.is_failure:
            raise PushError(f"the broker at {where} refused the login: {self._connect_reason}")

    def watch(self, devices: str, deadline: float) -> None:
        """Subscribe to the statuses and availability of ``devices`` (an id or ``+``); for
        ``+`` (a group), give the retained ones a moment to arrive: they say who is in it."""
        topics = [f"{self.prefix}/{devices}/model", f"{self.prefix}/{devices}/available"]
        self.client.subscribe([(topic, 1) for topic in topics])
        if not self.wait_for(lambda: self._subscribed is not None, deadline):
            raise PushError("the broker did not confirm the subscription to the statuses")
        refused = [
            t for t, code in zip(topics, self._subscribed or [], strict=False) if code.is_failure
        ]
        if refused:
            raise PushError(f"the broker refused reading {', '.join(refused)} (its ACL?)")
        if devices == "+":
            time.sleep(RETAINED_GRACE_S)

    def publish_all(self, topic: str, messages: Sequence[bytes], deadline: float) -> None:
        """Publish with QoS 1 and wait for every PUBACK; a refusal is a :class:`PushError`."""
        start = self._acked
        for message in messages:
            self.client.publish(topic, message, qos=1)
        done = self.wait_for(lambda: self._acked - start >= len(messages) or self.denied, deadline)
        if self.denied:
            raise PushError(f"the broker refused the push to {topic}: {self.denied[0]} (its ACL?)")
        if not done:
            sent = self._acked - start
            raise PushError(f"the broker acknowledged {sent} of {len(messages)} chunks in time")

    def close(self) -> None:
        disconnect_within(self.client, time.monotonic() + 2.0)
