"""The MQTT publisher against a real mosquitto, checked by a separate subscriber client.

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

import numpy as np
import pytest
from broker import Mosquitto, make_certificates

from device.config import MqttConfig
from device.paths import REPO_ROOT
from device.publish.mqtt import (
    MqttPublisher,
    MqttSetupError,
    Topics,
    discovery_payload,
    encode_json,
)

DEVICE = "barn"
TOPICS = Topics("kestrel", DEVICE)


def mqtt_config(port: int, **overrides) -> MqttConfig:
    """Short backoff so reconnects happen within the test's time budget."""
    data = {
        "host": "127.0.0.1",
        "port": port,
        "keepalive": 5,
        "reconnect": {"min_delay": 0.05, "max_delay": 0.3},
    }
    data.update(overrides)
    return MqttConfig.model_validate(data)


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


def decoded(sub, topic: str) -> list[dict]:
    return [json.loads(p) for p in sub.payloads(topic)]


def seqs(sub, topic: str) -> list[int]:
    return [m["seq"] for m in decoded(sub, topic)]


def wait_online(sub, topic: str = TOPICS.available, timeout: float = 10.0) -> None:
    sub.wait_for(lambda ms: any(m.topic == topic and m.payload == b"online" for m in ms), timeout)


# -- pure helpers ------------------------------------------------------------------------------


def test_topics_and_payload_encoding():
    assert TOPICS.available == "kestrel/barn/available"
    assert TOPICS.state("door") == "kestrel/barn/door/state"
    assert TOPICS.event("door") == "kestrel/barn/door/event"
    assert TOPICS.snapshot("door") == "kestrel/barn/door/snapshot"
    assert TOPICS.status("door") == "kestrel/barn/door/status"
    assert TOPICS.stats == "kestrel/barn/stats"
    assert TOPICS.ha_status == "homeassistant/status"
    assert TOPICS.ha_discovery == "homeassistant/device/barn/config"
    assert Topics("site", "x", "ha").ha_status == "ha/status"
    body = encode_json({"label": "héron", "score": np.float32(0.5), "v": np.arange(2)})
    assert body == '{"label":"héron","score":0.5,"v":[0,1]}'.encode()


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


def test_password_file_problems_name_the_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(MqttSetupError, match=r"mqtt.password_file .*nope.txt"):
        MqttPublisher(mqtt_config(1, username="u", password_file=missing), DEVICE, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(MqttSetupError, match="empty"):
        MqttPublisher(mqtt_config(1, username="u", password_file=empty), DEVICE, tmp_path)
    with pytest.raises(MqttSetupError, match=r"needs mqtt\.username"):
        MqttPublisher(mqtt_config(1, password="x"), DEVICE, tmp_path)
    cfg = mqtt_config(1, tls={"enabled": True, "ca_file": str(tmp_path / "ca.crt")})
    with pytest.raises(MqttSetupError, match=r"mqtt.tls: .*ca.crt"):
        MqttPublisher(cfg, DEVICE, tmp_path)


# -- against mosquitto ---------------------------------------------------------------------------


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
    assert [e["seq"] for e in events] == list(range(1, 7))  # the counter survived the kill
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
        assert seqs(sub, TOPICS.event("door")) == list(range(1, 11))
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


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout} s")
        time.sleep(0.005)


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
    assert [e["seq"] for e in events] == list(range(1, produced + 1))
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
    assert state["label"] == "dog" and state["seq"] == 2
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
    assert seqs(sub, TOPICS.event("door")) == list(range(16, 26))  # the gap shows in seq


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
    sub.wait_for(lambda ms: len([m for m in ms if m.topic != TOPICS.available]) >= 3)
    (state,) = sub.received(TOPICS.state("door"))
    assert json.loads(state.payload) == {
        "label": "cat",
        "labels": [{"label": "cat", "score": 0.9}],
        "device": DEVICE,
        "seq": 1,
    }
    assert b" " not in state.payload and state.qos == 1
    first, second = sub.received(TOPICS.event("door"))
    assert json.loads(first.payload) == {"type": "start", "seq": 77, "device": "other"}
    assert json.loads(second.payload)["seq"] == 1 and second.qos == 2
    wait_until(lambda: pub.counters["queued"] == 0, what="acknowledged")
    assert pub.counters["published"] >= 3


def test_tls_and_password(mosquitto_dir, make_subscriber, make_publisher, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-Pa55word"
    tls = make_certificates(tmp_path / "certs")
    broker = Mosquitto(mosquitto_dir, tls=tls, users={"kestrel": secret}).start()
    try:
        sub = make_subscriber(
            broker.port, ["kestrel/#"], username="kestrel", password=secret, ca_file=tls.ca
        )
        sub.wait_subscribed()
        password_file = tmp_path / "password"
        password_file.write_text(secret + "\n")
        good = mqtt_config(
            broker.port,
            username="kestrel",
            password_file=str(password_file),
            tls={"enabled": True, "ca_file": str(tls.ca)},
        )
        pub = make_publisher(good)
        pub.start()
        pub.publish_event("door", {"type": "start"})
        sub.wait_for(lambda ms: any(m.topic == TOPICS.event("door") for m in ms))

        # A wrong password: one clear error, retries continue, the password is never shown.
        bad_secret = "wr0ng-Pa55word"
        bad = mqtt_config(
            broker.port,
            username="kestrel",
            password=bad_secret,
            client_id="bad",
            tls={"enabled": True, "ca_file": str(tls.ca)},
        )
        wrong = make_publisher(bad, device_id="wrong", state_dir=tmp_path / "wrong")
        wrong.start()
        time.sleep(1.0)
        assert not wrong.connected
        refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refused) >= 2 and "not authorized" in refused[0].getMessage().lower()
        assert sum(r.levelno == logging.ERROR for r in refused) == 1
        assert "not authorized" in wrong.counters["last_error"].lower()

        # A broker certificate we do not trust: a clear TLS error.
        other_ca = make_certificates(tmp_path / "other").ca
        untrusted = mqtt_config(
            broker.port, client_id="untrusted", tls={"enabled": True, "ca_file": str(other_ca)}
        )
        doubt = make_publisher(untrusted, device_id="doubt", state_dir=tmp_path / "doubt")
        doubt.start()
        wait_until(lambda: doubt.counters["last_error"], what="TLS error")
        assert "certificate verify failed" in doubt.counters["last_error"]

        shown = [caplog.text, repr(pub), repr(wrong), str(good), repr(bad), str(wrong.counters)]
        for text in shown:
            assert secret not in text and bad_secret not in text
    finally:
        broker.kill()
