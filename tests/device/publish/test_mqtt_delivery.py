"""Delivery of states and events across broker outages, restarts and killed processes.

Brokers are started and killed by the tests (tests/device/broker.py). Where a test needs its
subscriber in place before the publisher (re)connects, the publisher goes through a TcpGate
that the test opens once the subscriber is subscribed: mosquitto without persistence forgets
every session when it dies, so a message reaching it before the subscriber would be lost to it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker import Mosquitto
from publisher_helpers import DEVICE, TOPICS, decoded, mqtt_config, seqs, wait_online, wait_until

from device.config import MqttConfig
from device.paths import REPO_ROOT

PUBLISHER_SCRIPT = """
import json, sys, time
from pathlib import Path
from device.config import MqttConfig
from device.publish.mqtt import MqttPublisher
config = MqttConfig.model_validate(json.loads(sys.argv[1]))
pub = MqttPublisher(config, sys.argv[2], Path(sys.argv[3]), cameras=["door"])
pub.start()
for i in range(int(sys.argv[4])):
    pub.publish_event("door", {"type": "start", "i": i})
print("ready", flush=True)
time.sleep(120)
"""


def spawn_publisher(config: MqttConfig, device_id: str, state_dir: Path, events: int):
    """A publisher in its own process (killed with SIGKILL by the tests)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            PUBLISHER_SCRIPT,
            json.dumps(config.model_dump(mode="json")),
            device_id,
            str(state_dir),
            str(events),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = proc.stdout.readline()
    assert line.strip() == b"ready", proc.stderr.read().decode() if proc.poll() else line
    return proc


def test_last_will_offline_when_the_process_is_killed(mosquitto, make_subscriber, tmp_path):
    sub = make_subscriber(mosquitto.port, ["kestrel/victim/available"])
    sub.wait_subscribed()
    proc = spawn_publisher(mqtt_config(mosquitto.port), "victim", tmp_path / "state", 0)
    try:
        wait_online(sub, "kestrel/victim/available")
        proc.kill()  # SIGKILL: no DISCONNECT, the broker must publish the will
        proc.wait(10)
        sub.wait_for(lambda ms: ms[-1].payload == b"offline", timeout=5)
    finally:
        proc.kill()
        proc.wait(10)
    late = make_subscriber(mosquitto.port, ["kestrel/victim/available"])
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_events_of_a_killed_process_are_sent_at_the_next_start(
    mosquitto, make_subscriber, make_gate, make_publisher, tmp_path
):
    gate = make_gate(mosquitto.port, open_=False)  # the broker is unreachable for now
    state_dir = tmp_path / "state"
    proc = spawn_publisher(mqtt_config(gate.port), DEVICE, state_dir, 5)
    proc.kill()
    proc.wait(10)

    sub = make_subscriber(mosquitto.port, [TOPICS.event("door")])
    sub.wait_subscribed()
    gate.open()
    pub = make_publisher(mqtt_config(gate.port), state_dir=state_dir)
    pub.start()
    sub.wait_for(lambda ms: len(ms) >= 5)
    pub.publish_event("door", {"type": "end", "i": 5})
    sub.wait_for(lambda ms: len(ms) >= 6)
    events = decoded(sub, TOPICS.event("door"))
    assert [e["i"] for e in events] == list(range(6))
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})  # across the kill
    assert all(e["device"] == DEVICE for e in events)


def test_first_connect_fails_then_the_broker_arrives(
    mosquitto_dir, make_subscriber, make_gate, make_publisher, caplog
):
    caplog.set_level(logging.DEBUG, logger="device.publish.mqtt")
    broker = Mosquitto(mosquitto_dir)  # not started yet
    gate = make_gate(broker.port, open_=False)
    try:
        pub = make_publisher(mqtt_config(gate.port))
        pub.start()  # must not raise
        for i in range(10):
            pub.publish_event("door", {"type": "change", "i": i})
            pub.publish_state("door", {"label": f"l{i}"})
        time.sleep(2.0)
        assert not pub.connected
        counters = pub.counters
        assert counters["queued"] == 20 and counters["published"] == 0
        assert "refused" in counters["last_error"].lower()
        failures = [r for r in caplog.records if "cannot connect" in r.getMessage()]
        assert len(failures) > 2  # it kept trying...
        assert sum(r.levelno >= logging.WARNING for r in failures) == 1  # ...and said so once

        broker.start()
        sub = make_subscriber(broker.port, [TOPICS.event("door"), TOPICS.state("door")])
        sub.wait_subscribed()
        gate.open()
        sub.wait_for(lambda ms: len(ms) >= 20)
        assert (s := seqs(sub, TOPICS.event("door"))) == list(range(s[0], s[0] + 10))
        assert [e["i"] for e in decoded(sub, TOPICS.event("door"))] == list(range(10))
        assert [s["label"] for s in decoded(sub, TOPICS.state("door"))] == [
            f"l{i}" for i in range(10)
        ]
        wait_until(lambda: pub.counters["queued"] == 0, what="acknowledged")
        late = make_subscriber(broker.port, [TOPICS.state("door")])
        (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
        assert retained.retain and json.loads(retained.payload)["label"] == "l9"
    finally:
        broker.kill()


def test_broker_killed_and_restarted_mid_run(mosquitto, make_subscriber, make_gate, make_publisher):
    """Events keep coming while the broker is hung, killed and restarted: each arrives exactly
    once and in order, including those in flight (sent, unacknowledged) when it died."""
    gate = make_gate(mosquitto.port)
    sub = make_subscriber(mosquitto.port, [TOPICS.event("door"), TOPICS.state("door")])
    sub.wait_subscribed()
    pub = make_publisher(mqtt_config(gate.port))
    pub.start()
    wait_until(lambda: pub.connected, what="connected")

    produced = 0
    running, go = threading.Event(), threading.Event()
    running.set()
    go.set()

    def produce() -> None:
        nonlocal produced
        while running.is_set():
            go.wait()
            pub.publish_event("door", {"type": "change", "i": produced})
            if produced % 5 == 0:
                pub.publish_state("door", {"label": f"l{produced}"})
            produced += 1
            time.sleep(0.01)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        time.sleep(0.3)
        go.clear()  # between two messages...
        time.sleep(0.05)
        wait_until(lambda: pub.counters["queued"] == 0, what="spool drained")
        mosquitto.pause()  # ...the broker hangs: what is sent now stays unacknowledged
        go.set()
        wait_until(lambda: pub.counters["in_flight"] >= 5, what="messages in flight")
        in_flight = pub.counters["in_flight"]
        mosquitto.kill()
        gate.close()  # hold the publisher off until the subscriber is back
        time.sleep(0.4)  # events keep coming into the spool
        assert not pub.connected and pub.counters["queued"] > in_flight
        mosquitto.start()
        sub.wait_subscribed(2)
        gate.open()
        wait_until(lambda: pub.connected, what="reconnected")
        time.sleep(0.3)
    finally:
        running.clear()
        go.set()
        producer.join()
    sub.wait_for(lambda ms: sum(m.topic == TOPICS.event("door") for m in ms) >= produced)
    time.sleep(0.2)  # a duplicate would arrive now
    events = decoded(sub, TOPICS.event("door"))
    assert [e["i"] for e in events] == list(range(produced))
    assert (s := [e["seq"] for e in events]) == list(range(s[0], s[0] + produced))
    assert pub.counters["reconnects"] == 1 and pub.counters["dropped"] == 0
    assert in_flight >= 5
    last_state = f"l{(produced - 1) // 5 * 5}"
    late = make_subscriber(mosquitto.port, [TOPICS.state("door")])
    (retained,) = late.wait_for(lambda ms: len(ms) >= 1)
    assert json.loads(retained.payload)["label"] == last_state


def test_retained_messages_are_sent_again_when_the_broker_lost_them(
    mosquitto, make_subscriber, make_publisher
):
    """A broker restarted without persistence forgets every retained message. After the
    reconnect the publisher sends its newest state, snapshot and status again (the same bytes:
    the state keeps its seq), so a dashboard that subscribes afterwards still gets them."""
    pub = make_publisher(mqtt_config(mosquitto.port))
    pub.start()
    wait_until(lambda: pub.connected, what="connected")
    pub.publish_state("door", {"label": "cat"})
    pub.publish_state("door", {"label": "dog"})
    pub.publish_snapshot("door", b"\xff\xd8 a jpeg")
    pub.publish_status("door", {"state": "streaming"})
    topics = [TOPICS.state("door"), TOPICS.snapshot("door"), TOPICS.status("door")]
    first = make_subscriber(mosquitto.port, topics)
    first.wait_for(lambda ms: {m.topic for m in ms} == set(topics) and len(ms) >= 3)
    wait_until(lambda: pub.counters["queued"] == 0, what="spool drained")
    assert pub.counters["republished"] == 0  # nothing is repeated at the first connect

    mosquitto.kill()
    wait_until(lambda: not pub.connected, what="disconnected")
    mosquitto.start()  # persistence false: the retained messages are gone
    wait_until(lambda: pub.counters["reconnects"] == 1 and pub.connected, what="reconnected")
    # Subscribe only once the republished messages are at the broker: a subscriber that is
    # already there gets them live, without the retain flag this test is about.
    wait_until(
        lambda: pub.counters["republished"] == 3 and pub.counters["queued"] == 0,
        what="republished and delivered",
    )
    late = make_subscriber(mosquitto.port, topics)
    got = {m.topic: m for m in late.wait_for(lambda ms: len({m.topic for m in ms}) == 3)}
    assert all(m.retain for m in got.values())
    state = json.loads(got[TOPICS.state("door")].payload)
    assert state["label"] == "dog"
    assert state["seq"] == json.loads(first.payloads(TOPICS.state("door"))[-1])["seq"]
    assert got[TOPICS.snapshot("door")].payload == b"\xff\xd8 a jpeg"
    assert json.loads(got[TOPICS.status("door")].payload)["state"] == "streaming"
    assert pub.counters["republished"] == 3


def test_spool_overflow_drops_the_oldest(mosquitto, make_subscriber, make_gate, make_publisher):
    gate = make_gate(mosquitto.port, open_=False)
    pub = make_publisher(mqtt_config(gate.port, queue_max_messages=10))
    pub.start()
    for i in range(25):
        pub.publish_event("door", {"type": "change", "i": i})
    assert pub.counters["queued"] == 10 and pub.counters["dropped"] == 15
    sub = make_subscriber(mosquitto.port, [TOPICS.event("door")])
    sub.wait_subscribed()
    gate.open()
    sub.wait_for(lambda ms: len(ms) >= 10)
    assert (s := seqs(sub, TOPICS.event("door"))) == list(range(s[0], s[0] + 10))
