"""Home Assistant's MQTT device-discovery schema (HA 2024.11+), as its MQTT integration reads
a ``<prefix>/device/<object_id>/config`` message: abbreviations expanded first, then ``dev``
(``identifiers`` or ``connections``), ``o`` (``name``), and ``cmps``: a map of component id ->
config, each with ``p`` (a platform HA knows) and ``unique_id``; options given at the device
level (availability, qos) apply to every component. Written from HA's documentation
(mqtt/#device-discovery-payload) and its abbreviations table, independently of Kestrel's code.
"""

from __future__ import annotations

import re
from typing import Any

# The part of HA's abbreviations tables that matters here (abbreviations.py).
ABBREVIATIONS = {
    "dev": "device",
    "o": "origin",
    "cmps": "components",
    "p": "platform",
    "uniq_id": "unique_id",
    "stat_t": "state_topic",
    "avty_t": "availability_topic",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "json_attr_t": "json_attributes_topic",
    "val_tpl": "value_template",
    "img_t": "image_topic",
    "url_t": "url_topic",
    "cont_type": "content_type",
    "unit_of_meas": "unit_of_measurement",
    "stat_cla": "state_class",
    "dev_cla": "device_class",
    "ent_cat": "entity_category",
}
DEVICE_ABBREVIATIONS = {
    "ids": "identifiers",
    "cns": "connections",
    "mf": "manufacturer",
    "mdl": "model",
    "sw": "sw_version",
}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}

# Platforms HA's MQTT integration discovers.
PLATFORMS = {
    "alarm_control_panel", "binary_sensor", "button", "camera", "climate", "cover",
    "device_automation", "device_tracker", "event", "fan", "humidifier", "image",
    "lawn_mower", "light", "lock", "notify", "number", "scene", "select", "sensor", "siren",
    "switch", "tag", "text", "update", "vacuum", "valve", "water_heater",
}  # fmt: skip
ENTITY_CATEGORIES = {"config", "diagnostic"}
STATE_CLASSES = {"measurement", "total", "total_increasing", "measurement_angle"}
OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
DISCOVERY_TOPIC = re.compile(r"^(?P<prefix>.+)/device/(?P<object_id>[^/]+)/config$")


def expand(config: dict[str, Any], table: dict[str, str]) -> dict[str, Any]:
    return {table.get(key, key): value for key, value in config.items()}


def check_device_discovery(topic: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The expanded payload; AssertionError naming the first rule it breaks."""
    match = DISCOVERY_TOPIC.match(topic)
    assert match and OBJECT_ID.match(match["object_id"]), f"not a device discovery topic: {topic}"
    config = expand(payload, ABBREVIATIONS)
    device = expand(config.get("device") or {}, DEVICE_ABBREVIATIONS)
    identifiers = device.get("identifiers")
    if isinstance(identifiers, str):
        identifiers = [identifiers]
    assert identifiers or device.get("connections"), "dev: identifiers or connections required"
    assert all(isinstance(i, str) and i for i in identifiers or []), "dev.identifiers: strings"
    origin = expand(config.get("origin") or {}, ORIGIN_ABBREVIATIONS)
    assert isinstance(origin.get("name"), str) and origin["name"], "o: name is required"
    components = config.get("components")
    assert isinstance(components, dict) and components, "cmps: a non-empty map is required"
    unique_ids = set()
    expanded = {}
    for key, raw in components.items():
        assert OBJECT_ID.match(key), f"cmps: {key!r} is not a valid component id"
        component = expand(raw, ABBREVIATIONS)
        expanded[key] = component
        check_component(key, component)
        assert component["unique_id"] not in unique_ids, f"cmps.{key}: unique_id repeated"
        unique_ids.add(component["unique_id"])
    if "availability_topic" in config:
        assert "/" in config["availability_topic"] and "#" not in config["availability_topic"]
    return config | {"device": device, "origin": origin, "components": expanded}


def check_component(key: str, component: dict[str, Any]) -> None:
    platform = component.get("platform")
    assert platform in PLATFORMS, f"cmps.{key}: p {platform!r} is not a platform HA discovers"
    assert isinstance(component.get("unique_id"), str) and component["unique_id"], (
        f"cmps.{key}: unique_id is required in device discovery"
    )
    if platform in ("sensor", "binary_sensor"):
        assert component.get("state_topic"), f"cmps.{key}: {platform} needs state_topic"
    if platform == "image":
        topics = [t for t in ("image_topic", "url_topic") if component.get(t)]
        assert len(topics) == 1, f"cmps.{key}: image needs image_topic or url_topic (one)"
        if "image_topic" in topics:
            assert component.get("content_type", "image/jpeg").startswith("image/")
    if "entity_category" in component:
        assert component["entity_category"] in ENTITY_CATEGORIES, f"cmps.{key}: entity_category"
    if "state_class" in component:
        assert component["state_class"] in STATE_CLASSES, f"cmps.{key}: state_class"
    for name, value in component.items():
        if name.endswith("_topic"):
            assert isinstance(value, str) and value and "+" not in value and "#" not in value, (
                f"cmps.{key}.{name}: a topic to subscribe to, without wildcards"
            )
