"""Home Assistant MQTT discovery: one device-based message (HA 2024.11+) for every entity.

Per camera: the label (with the whole state as attributes), its score, a ``detected`` binary
sensor, the snapshot as an image entity and the source status; for the device: the
accelerator and, per camera, the inference rate from the stats topic. The templates read the
state keys ``label``, ``labels[0].score``, ``detected``; status ``state``; stats
``accelerator`` and ``cameras.<name>.fps``.

:class:`ResendLimiter` bounds the re-sends asked for by Home Assistant's birth messages.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from device import __version__
from device.publish.topics import OFFLINE, ONLINE, Topics

Component = dict[str, Any]


class ResendLimiter:
    """At most one ``send()`` per ``interval`` seconds, whatever the number of requests: the
    first request is served at once, those that follow within the interval become one send at
    its end (a flapping Home Assistant once made 1,000 births -> 1,000 retained re-sends)."""

    def __init__(self, send: Callable[[], None], interval: float) -> None:
        self._send = send
        self.interval = max(0.0, interval)
        self._lock = threading.Lock()
        self._last = -math.inf
        self._timer: threading.Timer | None = None
        self._closed = False

    def request(self) -> None:
        with self._lock:
            if self._closed or self._timer is not None:
                return  # a send is already due: this request joins it
            now = time.monotonic()
            wait = self._last + self.interval - now
            if wait > 0:
                self._timer = threading.Timer(wait, self._deferred)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = now
        self._send()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            self._last = time.monotonic()
        self._send()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()


def device_sw_version(version: str, model_name: str, model_sha256: str) -> str:
    """The device's ``sw_version`` once models change over the air (device.ota): Kestrel's
    version and the active model, e.g. ``0.1.0, model door-v2 (1f3a9c0d2e4b)``."""
    return f"{version}, model {model_name} ({model_sha256[:12]})"


def discovery_payload(
    topics: Topics, cameras: Sequence[str], version: str = "", qos: int = 1
) -> dict[str, Any]:
    """The retained message for ``<discovery_prefix>/device/<id>/config``."""
    uid = f"kestrel_{topics.device_id}"
    components: dict[str, Component] = {}
    for camera in cameras:
        components |= _camera_components(topics, uid, camera)
    components[f"{uid}_accelerator"] = _accelerator_sensor(topics, uid)
    return {
        "device": _device(topics.device_id, uid, version),
        "origin": {"name": "kestrel", "sw_version": __version__},
        "components": components,
        "availability_topic": topics.available,
        "payload_available": ONLINE.decode(),
        "payload_not_available": OFFLINE.decode(),
        "qos": qos,
    }


def _device(device_id: str, uid: str, version: str) -> dict[str, Any]:
    device: dict[str, Any] = {
        "identifiers": [uid],
        "name": f"Kestrel {device_id}",
        "manufacturer": "Kestrel",
        "model": "image classifier",
    }
    if version:
        device["sw_version"] = version
    return device


def _camera_components(topics: Topics, uid: str, camera: str) -> dict[str, Component]:
    """The camera's entities keyed by unique id, in a fixed order."""
    prefix = f"{uid}_{camera}"
    state = topics.state(camera)
    entities = (
        _label_sensor(prefix, camera, state),
        _score_sensor(prefix, camera, state),
        _detected_sensor(prefix, camera, state),
        _snapshot_image(prefix, camera, topics.snapshot(camera)),
        _source_sensor(prefix, camera, topics.status(camera)),
        _fps_sensor(prefix, camera, topics.stats),
    )
    return {entity["unique_id"]: entity for entity in entities}


def _label_sensor(prefix: str, camera: str, state_topic: str) -> Component:
    return {
        "p": "sensor",
        "name": f"{camera} label",
        "unique_id": f"{prefix}_label",
        "state_topic": state_topic,
        "value_template": "{{ value_json.label if value_json.label else 'none' }}",
        "json_attributes_topic": state_topic,
        "icon": "mdi:label-outline",
    }


def _score_sensor(prefix: str, camera: str, state_topic: str) -> Component:
    return {
        "p": "sensor",
        "name": f"{camera} score",
        "unique_id": f"{prefix}_score",
        "state_topic": state_topic,
        "value_template": (
            "{{ (value_json.labels[0].score * 100) | round(1) if value_json.labels else 0 }}"
        ),
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:gauge",
    }


def _detected_sensor(prefix: str, camera: str, state_topic: str) -> Component:
    return {
        "p": "binary_sensor",
        "name": f"{camera} detected",
        "unique_id": f"{prefix}_detected",
        "state_topic": state_topic,
        "value_template": "{{ 'ON' if value_json.detected else 'OFF' }}",
        "device_class": "occupancy",
    }


def _snapshot_image(prefix: str, camera: str, snapshot_topic: str) -> Component:
    return {
        "p": "image",
        "name": f"{camera} snapshot",
        "unique_id": f"{prefix}_snapshot",
        "image_topic": snapshot_topic,
        "content_type": "image/jpeg",
    }


def _source_sensor(prefix: str, camera: str, status_topic: str) -> Component:
    return {
        "p": "sensor",
        "name": f"{camera} source",
        "unique_id": f"{prefix}_source",
        "state_topic": status_topic,
        "value_template": "{{ value_json.state }}",
        "entity_category": "diagnostic",
        "icon": "mdi:cctv",
    }


def _fps_sensor(prefix: str, camera: str, stats_topic: str) -> Component:
    return {
        "p": "sensor",
        "name": f"{camera} inference rate",
        "unique_id": f"{prefix}_fps",
        "state_topic": stats_topic,
        "value_template": f"{{{{ value_json.cameras['{camera}'].fps }}}}",
        "unit_of_measurement": "fps",
        "state_class": "measurement",
        "entity_category": "diagnostic",
    }


def _accelerator_sensor(topics: Topics, uid: str) -> Component:
    return {
        "p": "sensor",
        "name": "accelerator",
        "unique_id": f"{uid}_accelerator",
        "state_topic": topics.stats,
        "value_template": "{{ value_json.accelerator }}",
        "entity_category": "diagnostic",
        "icon": "mdi:chip",
    }
