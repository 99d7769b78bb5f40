"""The MQTT publisher against a real mosquitto, checked by a separate subscriber client:
availability, stop, latest-only messages, payload fields and QoS.

Brokers are started and killed by the tests (tests/device/broker.py). Where a test needs its
subscriber in place before the publisher (re)connects, the publisher goes through a TcpGate
that the test opens once the subscriber is subscribed: mosquitto without persistence forgets
every session when it dies, so a message reaching it before the subscriber would be lost to it.
"""

from __future__ import annotations

import json
import time

from publisher_helpers import DEVICE, TOPICS, decoded, mqtt_config, wait_until


def test_available_online_then_offline_after_stop(mosquitto, make_subscriber, make_publisher):
    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    wait_until(lambda: pub.connected, what="connected")
    time.sleep(0.1)  # "online" is on its way
    sub = make_subscriber(mosquitto.port, [TOPICS.available])
    sub.wait_subscribed()
    # Subscribed after the publisher: what arrives is the retained message.
    msgs = sub.wait_for(lambda ms: len(ms) >= 1)
    assert (msgs[0].payload, msgs[0].retain, msgs[0].qos) == (b"online", True, 1)
    assert pub.connected

    started = time.monotonic()
    pub.stop(timeout=2.0)
    assert time.monotonic() - started < 2.0
    sub.wait_for(lambda ms: ms[-1].payload == b"offline")
    late = make_subscriber(mosquitto.port, [TOPICS.available])
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert (retained.payload, retained.retain) == (b"offline", True)
    assert not pub.connected


def test_stop_returns_within_its_timeout_when_the_broker_is_gone(
    mosquitto, make_publisher, tmp_path
):
    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    wait_until(lambda: pub.connected, what="connected")
    mosquitto.pause()  # worst case: the connection looks alive, nothing is acknowledged
    for i in range(5):
        pub.publish_event("door", {"i": i})
    started = time.monotonic()
    pub.stop(timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert pub.counters["queued"] == 5  # kept for the next start
    mosquitto.kill()

    # A host that does not resolve, and a broker that was never there.
    for host in ("kestrel-no-such-host.invalid", "127.0.0.1"):
        down = make_publisher(
            mqtt_config(mosquitto.port, host=host), state_dir=tmp_path / host, device_id="x"
        )
        down.start()
        time.sleep(0.3)
        assert not down.connected and down.counters["last_error"]
        started = time.monotonic()
        down.stop(timeout=2.0)
        assert time.monotonic() - started < 2.0
        down.publish_event("door", {"i": 99})  # after stop: logged and ignored, no exception


def test_snapshot_status_latest_only_and_stats_not_queued(
    mosquitto, make_subscriber, make_gate, make_publisher
):
    gate = make_gate(mosquitto.port, open_=False)
    pub = make_publisher(mqtt_config(gate.port))
    pub.start()
    for i in range(3):
        pub.publish_snapshot("door", b"\xff\xd8jpeg%d" % i)
        pub.publish_status("door", {"state": ["opening", "reconnecting", "streaming"][i]})
    pub.publish_stats({"fps": 1.0})
    assert pub.counters["stats_skipped"] == 1 and pub.counters["queued"] == 0

    topics = [TOPICS.snapshot("door"), TOPICS.status("door"), TOPICS.stats]
    sub = make_subscriber(mosquitto.port, topics)
    sub.wait_subscribed()
    gate.open()
    sub.wait_for(lambda ms: len(ms) >= 2)
    wait_until(lambda: pub.connected, what="connected")
    pub.publish_stats({"fps": 2.0, "accelerator": "cpu"})
    sub.wait_for(lambda ms: len(ms) >= 3)
    time.sleep(0.2)
    assert sub.payloads(TOPICS.snapshot("door")) == [b"\xff\xd8jpeg2"]
    (status,) = decoded(sub, TOPICS.status("door"))
    assert status == {"state": "streaming", "device": DEVICE, "camera": "door"}
    (stats,) = decoded(sub, TOPICS.stats)
    assert stats["fps"] == 2.0 and stats["device"] == DEVICE

    late = make_subscriber(mosquitto.port, topics)
    late.wait_for(lambda ms: len(ms) >= 2)
    time.sleep(0.2)
    retained = {m.topic: m for m in late.received()}
    assert len(late.received()) == 2 and all(m.retain for m in retained.values())
    assert retained[TOPICS.snapshot("door")].payload == b"\xff\xd8jpeg2"
    assert json.loads(retained[TOPICS.status("door")].payload)["state"] == "streaming"


def test_payload_fields_and_qos(mosquitto, make_subscriber, make_publisher):
    sub = make_subscriber(mosquitto.port, ["kestrel/#"], qos=2)
    sub.wait_subscribed()
    pub = make_publisher(mqtt_config(mosquitto.port, qos={"state": 1, "event": 2}))
    pub.start()
    pub.publish_state("door", {"label": "cat", "labels": [{"label": "cat", "score": 0.9}]})
    pub.publish_event("door", {"type": "start", "seq": 77, "device": "other"})  # kept as given
    pub.publish_event("door", {"type": "end"})
    contract = {TOPICS.state("door"), TOPICS.event("door")}
    sub.wait_for(lambda ms: len([m for m in ms if m.topic in contract]) >= 3)
    (state,) = sub.received(TOPICS.state("door"))
    assert json.loads(state.payload) == {
        "label": "cat",
        "labels": [{"label": "cat", "score": 0.9}],
        "device": DEVICE,
        "seq": json.loads(state.payload)["seq"],  # its value: test_spool, test_queue_faults
    }
    assert b" " not in state.payload and state.qos == 1
    first, second = sub.received(TOPICS.event("door"))
    assert json.loads(first.payload) == {"type": "start", "seq": 77, "device": "other"}
    assert json.loads(second.payload)["seq"] > 77 and second.qos == 2
    wait_until(lambda: pub.counters["queued"] == 0, what="acknowledged")
    assert pub.counters["published"] >= 3
