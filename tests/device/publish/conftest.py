"""The ``make_publisher`` fixture: publishers stopped at the end of the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from publisher_helpers import DEVICE

from device.config import MqttConfig
from device.publish.mqtt import MqttPublisher


@pytest.fixture
def make_publisher(tmp_path):
    made: list[MqttPublisher] = []

    def make(config: MqttConfig, device_id: str = DEVICE, state_dir: Path | None = None, **kw):
        kw.setdefault("cameras", ["door"])
        pub = MqttPublisher(config, device_id, state_dir or tmp_path / "state", **kw)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.stop(timeout=1.0)
