"""The zero-setup broker: a real mosquitto child that routes retained messages by topic, speaks
MQTT 5 and dies with its daemon (amqtt, its predecessor, replayed every retained message to
every subscriber and never answered an MQTT 5 CONNECT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
from broker import Subscriber, free_port, mosquitto_binary

from device.publish.embedded_broker import EmbeddedBroker, port_in_use

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")


@pytest.fixture
def embedded(tmp_path):
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    yield broker
    broker.stop()


def _publish_retained(port: int, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_retained_messages_reach_only_matching_subscribers_once(embedded):
    _publish_retained(embedded.port, "kestrel/barn/door/state", b'{"label": "cat"}')
    other = Subscriber(embedded.port, ["nothing/here"], client_id="other")
    matching = Subscriber(embedded.port, ["kestrel/#"], client_id="matching")
    try:
        matching.wait_for(lambda ms: len(ms) >= 1)
        other.wait_subscribed()
        time.sleep(0.3)  # anything wrongly replayed would have arrived by now
        assert other.received() == []
        got = matching.received()
        assert [(m.topic, m.payload, m.retain) for m in got] == [
            ("kestrel/barn/door/state", b'{"label": "cat"}', True)
        ]
    finally:
        other.close()
        matching.close()


def test_an_mqtt5_client_is_answered(embedded):
    connected: list[bool] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: connected.append(not rc.is_failure)
    client.connect("127.0.0.1", embedded.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert connected == [True]
    finally:
        client.disconnect()
        client.loop_stop()


def test_stop_ends_the_broker(tmp_path):
    broker = EmbeddedBroker("127.0.0.1", free_port(), tmp_path)
    broker.start()
    assert port_in_use("127.0.0.1", broker.port)
    broker.stop()
    assert not port_in_use("127.0.0.1", broker.port)


def test_the_broker_dies_with_a_killed_daemon(tmp_path):
    port = free_port()
    script = (
        "import sys, time; from pathlib import Path\n"
        "from device.publish.embedded_broker import EmbeddedBroker\n"
        f"EmbeddedBroker('127.0.0.1', {port}, Path(sys.argv[1])).start()\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline().strip() == "ready"
        assert port_in_use("127.0.0.1", port)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not port_in_use("127.0.0.1", port), "mosquitto outlived its daemon"
    finally:
        parent.kill()


def test_a_missing_mosquitto_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("device.publish.embedded_broker.Path.exists", lambda self: False)
    with pytest.raises(RuntimeError, match="apt install mosquitto"):
        EmbeddedBroker("127.0.0.1", free_port(), tmp_path).start()
