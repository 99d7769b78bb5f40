"""Publishes the broker refuses (MQTT 5 PUBACK "Not authorized") against a real mosquitto with
an ACL file: counted as ``denied``, logged once per topic, never counted as published."""

from __future__ import annotations

import json
import logging

from broker import Mosquitto
from publisher_helpers import TOPICS, mqtt_config, wait_online, wait_until


def broker_denying(folder, topic: str) -> Mosquitto:
    """mosquitto where anonymous clients may use every topic but ``topic``."""
    broker = Mosquitto(folder)
    acl = broker.folder / "acl"
    acl.write_text(f"topic readwrite #\ntopic deny {topic}\n")
    with broker.config_path.open("a") as config:
        config.write(f"acl_file {acl}\n")
    return broker.start()


def test_denied_publishes_are_counted_and_logged_not_published(
    mosquitto_dir, make_subscriber, make_publisher, caplog
):
    caplog.set_level(logging.WARNING)
    broker = broker_denying(mosquitto_dir, TOPICS.event("door"))
    try:
        sub = make_subscriber(broker.port, ["kestrel/#"])
        sub.wait_subscribed()
        pub = make_publisher(mqtt_config(broker.port))
        pub.start()
        wait_online(sub)
        for i in range(5):
            pub.publish_event("door", {"type": "start", "i": i})
            pub.publish_state("door", {"label": "cat", "i": i})
        sub.wait_for(lambda ms: len([m for m in ms if m.topic == TOPICS.state("door")]) >= 5)
        wait_until(lambda: pub.counters["queued"] == 0, what="every message acknowledged")
        counters = pub.counters
        assert counters["denied"] == 5
        # The 5 states; "online" and discovery go straight to paho and are not counted.
        assert counters["published"] == 5, counters
        assert not sub.received(TOPICS.event("door"))
        assert [json.loads(p)["i"] for p in sub.payloads(TOPICS.state("door"))] == list(range(5))
        denied = [r.getMessage() for r in caplog.records if "denied" in r.getMessage()]
        assert len(denied) == 1, denied  # once per topic
        assert TOPICS.event("door") in denied[0] and "not authorized" in denied[0].lower()
        assert "denied" in counters["last_error"]
    finally:
        broker.kill()
