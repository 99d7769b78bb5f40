"""Two publishers with the same device_id on one real mosquitto: the first keeps its topics,
the second refuses to publish (loudly) and says no ``offline`` for the first when it stops.
A claim left retained by a killed daemon does not stop the next start."""

from __future__ import annotations

import json
import logging
import time

import pytest
from publisher_helpers import TOPICS, mqtt_config, wait_online, wait_until


@pytest.mark.parametrize("same_client_id", [False, True], ids=["own-client-ids", "same-client-id"])
def test_a_second_daemon_with_the_same_device_id_refuses(
    same_client_id, mosquitto, make_subscriber, make_publisher, tmp_path, caplog
):
    caplog.set_level(logging.ERROR)
    sub = make_subscriber(mosquitto.port, ["kestrel/#"])
    sub.wait_subscribed()
    first = make_publisher(mqtt_config(mosquitto.port, client_id=None if same_client_id else "a"))
    first.start()
    wait_online(sub)
    first.publish_state("door", {"label": "cat", "by": "first"})
    wait_until(lambda: first.counters["queued"] == 0, what="the first's state delivered")

    second = make_publisher(
        mqtt_config(mosquitto.port, client_id=None if same_client_id else "b"),
        state_dir=tmp_path / "second",
    )
    second.start()
    second.publish_state("door", {"label": "dog", "by": "second"})
    wait_until(lambda: "already in use" in (second.counters["last_error"] or ""), what="refusal")
    refusal = [r.getMessage() for r in caplog.records if "already in use" in r.getMessage()]
    assert refusal and "device_id 'barn'" in refusal[0] and "pid" in refusal[0]
    assert not second.connected

    # The first one is connected and its retained messages are its own again.
    wait_until(lambda: first.connected, what="the first connected")
    late = make_subscriber(mosquitto.port, [TOPICS.available, TOPICS.state("door")])
    late.wait_until(lambda: latest_state(late, "first") and latest_online(late), 10, "first's")
    second.stop(timeout=1.0)
    first.publish_state("door", {"label": "cat", "by": "first", "n": 2})
    sub.wait_for(lambda ms: any(b'"n":2' in m.payload for m in ms))
    # What a dashboard reads: the retained availability says the first is online.
    after = make_subscriber(mosquitto.port, [TOPICS.available])
    after.wait_until(lambda: latest_online(after), 5, "retained 'online' after the second left")
    assert first.connected

    first.stop(timeout=1.0)
    sub.wait_for(lambda ms: ms[-1].topic == TOPICS.available and ms[-1].payload == b"offline")


def latest_state(sub, by: str) -> bool:
    states = sub.payloads(TOPICS.state("door"))
    return bool(states) and json.loads(states[-1])["by"] == by


def latest_online(sub) -> bool:
    return sub.payloads(TOPICS.available)[-1:] == [b"online"]


def test_a_stray_offline_is_answered_online_while_the_publisher_lives(
    mosquitto, make_subscriber, make_publisher
):
    """Another client's retained "offline" on our topic (a refused newcomer's goodbye, a stale
    will delivered late) would tell dashboards a live device is gone: it is answered at once."""
    sub = make_subscriber(mosquitto.port, [TOPICS.available])
    sub.wait_subscribed()
    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    wait_online(sub)
    sub.client.publish(TOPICS.available, "offline", qos=1, retain=True).wait_for_publish()
    sub.wait_for(lambda ms: [m.payload for m in ms][-2:] == [b"offline", b"online"], timeout=5)
    late = make_subscriber(mosquitto.port, [TOPICS.available])
    late.wait_until(lambda: latest_online(late), 5, "retained 'online'")
    pub.stop(timeout=1.0)  # its own goodbye is not answered
    sub.wait_for(lambda ms: ms[-1].payload == b"offline")
    time.sleep(0.3)
    assert sub.payloads(TOPICS.available)[-1] == b"offline"


def test_a_claim_left_by_a_killed_daemon_does_not_stop_the_next_one(
    mosquitto, make_subscriber, make_publisher
):
    sub = make_subscriber(mosquitto.port, ["kestrel/#"])
    sub.wait_subscribed()
    stale = {"instance": "0" * 32, "host": "elsewhere", "pid": 1, "started": "yesterday"}
    sub.client.publish(TOPICS.instance, json.dumps(stale), qos=1, retain=True).wait_for_publish()
    sub.client.publish(TOPICS.available, "online", qos=1, retain=True).wait_for_publish()

    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    pub.publish_event("door", {"type": "start"})
    sub.wait_for(lambda ms: any(m.topic == TOPICS.event("door") for m in ms))
    claims = [json.loads(p) for p in sub.payloads(TOPICS.instance) if p]
    assert claims[-1]["instance"] != stale["instance"]  # it claimed the id for itself
    time.sleep(0.5)  # what a live holder would have answered by now
    assert pub.connected and pub.counters["last_error"] is None


def test_stopped_while_it_waits_for_a_holder_to_answer_it_still_says_offline(
    mosquitto, make_subscriber, make_publisher
):
    sub = make_subscriber(mosquitto.port, [TOPICS.available, TOPICS.instance])
    sub.wait_subscribed()
    stale = {"instance": "0" * 32, "host": "elsewhere", "pid": 1, "started": "yesterday"}
    sub.client.publish(TOPICS.instance, json.dumps(stale), qos=1, retain=True).wait_for_publish()
    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    wait_online(sub)  # "online" is out; the spooled messages wait out the holder's grace
    pub.stop(timeout=1.0)
    sub.wait_for(lambda ms: ms[-1].topic == TOPICS.available and ms[-1].payload == b"offline")
