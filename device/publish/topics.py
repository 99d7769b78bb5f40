"""The MQTT topic contract: every topic name, the availability payloads and the JSON encoding.

Topics (``<prefix>`` is ``<topic_prefix>/<device_id>``, see :class:`Topics`):

======================================  ========  ======================================
``<prefix>/available``                  retained  ``online`` / ``offline`` (last will)
``<prefix>/instance``                   retained  JSON claim of the device id by one process
``<prefix>/<camera>/state``             retained  debounced state, JSON, spooled
``<prefix>/<camera>/event``             no        start / change / end, JSON, spooled
``<prefix>/<camera>/snapshot``          retained  JPEG, latest only, not spooled
``<prefix>/<camera>/status``            retained  source status JSON, latest only
``<prefix>/stats``                      no        JSON, dropped while offline
``<prefix>/model``                      retained  model update status JSON (device.ota)
``<prefix>/model/set``                  (in)      model update chunks, ``kestrel push``
``<topic_prefix>/group/<g>/model/set``  (in)      the same, for every device of group g
``homeassistant/device/<id>/config``    retained  Home Assistant device discovery
======================================  ========  ======================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Payloads of the availability topic (also Home Assistant's birth message).
ONLINE, OFFLINE = b"online", b"offline"


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
    def instance(self) -> str:
        """The retained claim of the device id (see :mod:`device.publish.presence`)."""
        return f"{self.base}/instance"

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
    def model_status(self) -> str:
        """The retained status of model updates (device.ota)."""
        return f"{self.base}/model"

    @property
    def model_command(self) -> str:
        """Where ``kestrel push`` sends this device's bundles (subscribed, never published)."""
        return f"{self.base}/model/set"

    def group_model_command(self, group: str) -> str:
        """Where ``kestrel push --group`` sends bundles for every device of ``group``."""
        return f"{self.topic_prefix}/group/{group}/model/set"

    @property
    def direct(self) -> tuple[str, ...]:
        """The topics the publisher hands straight to paho (not queued, not counted)."""
        return (self.available, self.instance, self.ha_discovery)

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth / last-will topic."""
        return f"{self.discovery_prefix}/status"

    @property
    def ha_discovery(self) -> str:
        """Device-based discovery: one message for all the device's entities."""
        return f"{self.discovery_prefix}/device/{self.device_id}/config"


def _plain_json(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy arrays and scalars, paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; numpy scalars and arrays become plain numbers and lists."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=_plain_json)
    return text.encode("utf-8")
