"""Home Assistant discovery as Home Assistant reads it (ha_schema.py), sent through a real
mosquitto; re-sends on Home Assistant's birth message, rate-limited."""

from __future__ import annotations

import json
import time

import pytest
from ha_schema import check_device_discovery
from publisher_helpers import TOPICS, mqtt_config, wait_online


def published_topics(cameras: list[str]) -> set[str]:
    """Every topic the publisher sends that a dashboard may read (the Topics contract)."""
    per_camera = {f(c) for c in cameras for f in (TOPICS.state, TOPICS.snapshot, TOPICS.status)}
    return per_camera | {TOPICS.stats, TOPICS.available}


def test_the_discovery_checker_catches_what_home_assistant_refuses():
    good = {
        "dev": {"ids": ["x"]},
        "o": {"name": "k"},
        "cmps": {"a": {"p": "sensor", "uniq_id": "a", "stat_t": "k/x/s"}},
    }
    check_device_discovery("homeassistant/device/x/config", good)
    broken = [
        {**good, "dev": {"name": "no identifiers"}},
        {**good, "o": {}},
        {**good, "cmps": {}},
        {**good, "cmps": {"a": {"uniq_id": "a", "stat_t": "k/x/s"}}},  # no platform
        {**good, "cmps": {"a": {"p": "sensor", "stat_t": "k/x/s"}}},  # no unique_id
        {**good, "cmps": {"a": {"p": "thermometer", "uniq_id": "a", "stat_t": "k/x/s"}}},
        {**good, "cmps": {"a": {"p": "image", "uniq_id": "a"}}},  # no image topic
        {**good, "cmps": {"a": {"p": "sensor", "uniq_id": "a", "stat_t": "k/+/s"}}},
    ]
    for payload in broken:
        with pytest.raises(AssertionError):
            check_device_discovery("homeassistant/device/x/config", payload)
    with pytest.raises(AssertionError):
        check_device_discovery("homeassistant/sensor/x/config", good)


def test_home_assistant_discovery(mosquitto, make_subscriber, make_publisher, tmp_path):
    """What the broker holds for Home Assistant, read as Home Assistant reads it."""
    discovery = TOPICS.ha_discovery
    sub = make_subscriber(mosquitto.port, ["homeassistant/#", "kestrel/+/available"])
    sub.wait_subscribed()
    pub = make_publisher(
        mqtt_config(mosquitto.port), cameras=["door", "yard"], version="9.9", discovery_interval=0.2
    )
    pub.start()
    wait_online(sub)
    msgs = sub.wait_for(lambda ms: any(m.topic == discovery for m in ms))
    (message,) = [m for m in msgs if m.topic == discovery]
    assert message.qos == 1
    config = check_device_discovery(discovery, json.loads(message.payload))

    # Availability: the topic and payloads the publisher really uses.
    assert config["availability_topic"] == TOPICS.available
    assert config["payload_available"].encode() == sub.payloads(TOPICS.available)[-1] == b"online"
    assert config["payload_not_available"] == "offline"
    assert config["device"]["identifiers"] == ["kestrel_barn"]
    assert config["device"]["sw_version"] == "9.9" and config["origin"]["name"] == "kestrel"
    # Every entity reads a topic the publisher publishes, per camera the camera's own.
    components = config["components"]
    topics = published_topics(["door", "yard"])
    for key, component in components.items():
        read = {v for k, v in component.items() if k.endswith("_topic")}
        assert read and read <= topics, (key, read - topics)
        camera = next((c for c in ("door", "yard") if f"_{c}_" in key), None)
        if (camera and component["platform"] != "sensor") or key.endswith(("_label", "_source")):
            assert all(f"/{camera}/" in t for t in read), (key, read)
    by_platform = sorted(c["platform"] for k, c in components.items() if "_door_" in k)
    assert by_platform == ["binary_sensor", "image", "sensor", "sensor", "sensor", "sensor"]
    assert components["kestrel_barn_door_snapshot"]["image_topic"] == TOPICS.snapshot("door")
    assert components["kestrel_barn_yard_source"]["state_topic"] == TOPICS.status("yard")
    assert "cameras['yard'].fps" in components["kestrel_barn_yard_fps"]["value_template"]
    late = make_subscriber(mosquitto.port, [discovery])
    assert late.wait_for(lambda ms: len(ms) >= 1)[0].retain

    # Home Assistant restarts: its birth message makes us send discovery again.
    sub.client.publish("homeassistant/status", "online", qos=1)
    sub.wait_for(lambda ms: sum(m.topic == discovery for m in ms) >= 2)

    # Discovery disabled: the device is online but sends none.
    quiet = make_publisher(
        mqtt_config(mosquitto.port, home_assistant={"enabled": False}, client_id="quiet"),
        device_id="quiet",
        state_dir=tmp_path / "quiet",
    )
    quiet.start()
    wait_online(sub, "kestrel/quiet/available")
    sub.client.publish("homeassistant/status", "online", qos=1)
    sub.wait_for(lambda ms: sum(m.topic == discovery for m in ms) >= 3)
    assert not [m for m in sub.received() if m.topic == "homeassistant/device/quiet/config"]


def test_a_burst_of_home_assistant_births_gives_at_most_two_discovery_resends(
    mosquitto, make_subscriber, make_publisher
):
    discovery = TOPICS.ha_discovery
    sub = make_subscriber(mosquitto.port, [discovery])
    sub.wait_subscribed()
    pub = make_publisher(mqtt_config(mosquitto.port), discovery_interval=1.0)
    pub.start()
    sub.wait_for(lambda ms: len(ms) >= 1)  # the one sent at connect

    for _ in range(100):  # a flapping Home Assistant, or someone replaying its birth message
        sub.client.publish("homeassistant/status", "online", qos=1)
    # One at once, the rest of the burst coalesced into one at the end of the interval.
    sub.wait_for(lambda ms: len(ms) >= 3)
    time.sleep(2.0)  # two more intervals: nothing else may come
    assert len(sub.received(discovery)) == 3
    assert pub.connected
