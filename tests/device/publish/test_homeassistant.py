"""Home Assistant discovery: the payload, and how the publisher sends it (real mosquitto)."""

from __future__ import annotations

import json

from publisher_helpers import TOPICS, mqtt_config, wait_online

from device.publish.homeassistant import discovery_payload


def test_discovery_payload_is_device_based():
    payload = discovery_payload(TOPICS, ["door", "yard"], version="1.2")
    assert payload["device"]["identifiers"] == ["kestrel_barn"]
    assert payload["device"]["sw_version"] == "1.2" and payload["origin"]["name"] == "kestrel"
    assert payload["availability_topic"] == TOPICS.available
    comps = payload["components"]
    door = {k: v for k, v in comps.items() if "_door_" in k}
    assert sorted(c["p"] for c in door.values()) == [
        "binary_sensor",
        "image",
        "sensor",
        "sensor",
        "sensor",
        "sensor",
    ]
    assert all(c["unique_id"] == k for k, c in comps.items())
    assert comps["kestrel_barn_door_snapshot"]["image_topic"] == TOPICS.snapshot("door")
    assert comps["kestrel_barn_door_detected"]["state_topic"] == TOPICS.state("door")
    assert comps["kestrel_barn_yard_source"]["state_topic"] == TOPICS.status("yard")
    assert comps["kestrel_barn_accelerator"]["state_topic"] == TOPICS.stats
    assert "cameras['yard'].fps" in comps["kestrel_barn_yard_fps"]["value_template"]


def test_home_assistant_discovery(mosquitto, make_subscriber, make_publisher, tmp_path):
    discovery = TOPICS.ha_discovery
    sub = make_subscriber(mosquitto.port, ["homeassistant/#", "kestrel/+/available"])
    sub.wait_subscribed()
    pub = make_publisher(mqtt_config(mosquitto.port), cameras=["door", "yard"], version="9.9")
    pub.start()
    msgs = sub.wait_for(lambda ms: any(m.topic == discovery for m in ms))
    (config,) = [m for m in msgs if m.topic == discovery]
    payload = json.loads(config.payload)
    assert payload == discovery_payload(TOPICS, ["door", "yard"], "9.9")
    assert payload["components"]["kestrel_barn_yard_label"]["state_topic"] == TOPICS.state("yard")
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
