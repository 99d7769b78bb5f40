"""Shared by the MQTT publisher tests: the config they use and ways to wait and decode."""

from __future__ import annotations

import json
import time

from device.config import MqttConfig
from device.publish.topics import Topics

DEVICE = "barn"
TOPICS = Topics("kestrel", DEVICE)


def mqtt_config(port: int, **overrides) -> MqttConfig:
    """Short backoff so reconnects happen within the test's time budget."""
    data = {
        "host": "127.0.0.1",
        "port": port,
        "keepalive": 5,
        "reconnect": {"min_delay": 0.05, "max_delay": 0.3},
    }
    data.update(overrides)
    return MqttConfig.model_validate(data)


def decoded(sub, topic: str) -> list[dict]:
    return [json.loads(p) for p in sub.payloads(topic)]


def seqs(sub, topic: str) -> list[int]:
    return [m["seq"] for m in decoded(sub, topic)]


def wait_online(sub, topic: str = TOPICS.available, timeout: float = 10.0) -> None:
    sub.wait_for(lambda ms: any(m.topic == topic and m.payload == b"online" for m in ms), timeout)


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.005)
