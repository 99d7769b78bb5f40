"""The paho-mqtt client as Kestrel configures it: MQTT 5, clean start, credentials, TLS.

The publisher's callbacks are attached by :class:`~device.publish.mqtt.MqttPublisher`; this
module only turns an :class:`~device.config.MqttConfig` into a client, and reports settings that
cannot work (a password file that cannot be read, TLS files that do not load) as
:class:`MqttSetupError` before anything connects. :class:`Denials` keeps the publishes the
broker refused (MQTT 5 gives the reason in the PUBACK; 3.1.1 acknowledged them silently).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from device.config import MqttConfig, TlsConfig
from device.publish.topics import OFFLINE, Topics

log = logging.getLogger(__name__)

# Room above the publisher's own bound for "available", discovery and snapshots.
EXTRA_INFLIGHT = 20


class MqttSetupError(ValueError):
    """The MQTT settings cannot be used (unreadable password file, bad TLS files)."""


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


def make_client(config: MqttConfig, client_id: str, max_inflight: int) -> mqtt.Client:
    """A paho client with backoff, bounds, credentials and TLS set; not connected."""
    password = read_password(config)
    if password is not None and not config.username:
        raise MqttSetupError("mqtt.password needs mqtt.username")
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5: the broker says why it refuses a publish (an ACL). The session is clean
        # (clean_start at connect, no session expiry): one re-send mechanism, see
        # device.publish.mqtt.
        protocol=mqtt.MQTTv5,
    )
    client.reconnect_delay_set(config.reconnect.min_delay, config.reconnect.max_delay)
    client.max_inflight_messages_set(max_inflight + EXTRA_INFLIGHT)
    client.max_queued_messages_set(0)
    if config.username:
        client.username_pw_set(config.username, password)
    if config.tls.enabled:
        _configure_tls(client, config.tls)
    client.on_socket_open = _no_delay
    return client


def disconnect_within(client: mqtt.Client, deadline: float) -> None:
    """Disconnect and stop paho's network thread, giving up at ``deadline`` (monotonic)."""
    client.disconnect()
    # loop_stop joins paho's thread, which may sit in a backoff sleep or a blocking
    # connect(): join it from a helper so the caller keeps its deadline.
    joiner = threading.Thread(target=client.loop_stop, daemon=True)
    joiner.start()
    joiner.join(max(0.0, deadline - time.monotonic()))


def say_offline(client: mqtt.Client, topics: Topics, deadline: float) -> None:
    """End the device id's claim and publish "offline" (retained), waited for until shortly
    before ``deadline``: the clean disconnect that follows sends no will."""
    client.publish(topics.instance, b"", qos=1, retain=True)
    info = client.publish(topics.available, OFFLINE, qos=1, retain=True)
    if info.rc == mqtt.MQTT_ERR_SUCCESS:
        wait = max(0.0, deadline - time.monotonic() - 0.2)
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(wait)
        if not info.is_published():
            log.warning("MQTT: 'offline' not acknowledged before the deadline")


def _configure_tls(client: mqtt.Client, tls: TlsConfig) -> None:
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


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Disable Nagle: an event sent right after a snapshot would otherwise wait for the
    broker's delayed ACK (up to ~40 ms measured)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Denials:
    """Publishes the broker refused (a PUBACK / PUBREC reason code such as "Not authorized"):
    counted, logged once per topic. Thread-safe; called from paho's network thread.

    ``uncounted`` are the topics published straight to paho (availability, discovery), which
    the publisher never counts as published; ``counted`` is the number of the others."""

    def __init__(self, uncounted: frozenset[str] = frozenset()) -> None:
        self._lock = threading.Lock()
        self._uncounted = uncounted
        self._logged: set[str] = set()
        self.count = 0
        self.counted = 0
        self.last: str | None = None  # the newest refusal, as text

    def record(self, client: mqtt.Client, mid: int, reason: Any) -> None:
        # paho keeps the message until on_publish returns; its topic is only known there.
        message = getattr(client, "_out_messages", {}).get(mid)
        topic = message.topic if message is not None else f"message {mid}"
        text = f"the broker denied a publish to {topic}: {reason}"
        with self._lock:
            self.count += 1
            self.counted += topic not in self._uncounted
            self.last = text
            first = topic not in self._logged
            self._logged.add(topic)
        if first:
            log.error("MQTT: %s (further denials of this topic are only counted)", text)
