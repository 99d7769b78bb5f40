"""The deploy ACL examples on a real mosquitto (MQTT 5: a denied publish is answered "Not
authorized"): devices read their command topics and may not write them; they write their
model status; the deployer pushes and reads the statuses."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto

from device.paths import REPO_ROOT

MOSQUITTO = REPO_ROOT / "deploy" / "mosquitto"
USERS = {"barn-1": "pw-1", "barn-2": "pw-2", "kestrel": "pw-k", "deployer": "pw-d"}


class _Client:
    def __init__(self, port: int, user: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append((message.topic, bytes(message.payload)))
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, codes, properties) -> None:
        with self._cond:
            self.granted += [code.value for code in codes]
            self._cond.notify_all()

    def subscribe(self, *topics: str) -> list[int]:
        """The SUBACK codes: 1 = granted at QoS 1, 135 = not authorized."""
        start = len(self.granted)
        self.client.subscribe([(t, 1) for t in topics])
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.granted) >= start + len(topics), 5)
            return self.granted[start:]

    def publish(self, topic: str, payload: bytes = b"x", retain: bool = False) -> str:
        """The broker's answer to a QoS 1 publish: "Success" or "Not authorized"."""
        answer: list[str] = []
        done = threading.Event()

        def on_publish(client, userdata, mid, reason, properties) -> None:
            answer.append(str(reason) if reason.is_failure else "Success")  # or "no subscriber"
            done.set()

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=1, retain=retain)
        assert done.wait(5)
        return answer[0]

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(t == topic for t, _ in self.messages), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_with(mosquitto_dir) -> Iterator:
    started: list[Mosquitto] = []

    def start(acl_file: str) -> Mosquitto:
        broker = Mosquitto(mosquitto_dir / acl_file, users=USERS)
        shutil.copy(MOSQUITTO / acl_file, broker.folder / "acl")
        with broker.config_path.open("a") as conf:
            conf.write(f"acl_file {broker.folder / 'acl'}\n")
        started.append(broker.start())
        return broker

    yield start
    for broker in started:
        broker.kill()


def test_the_fleet_acl_keeps_each_device_to_its_own_commands(broker_with):
    broker = broker_with("acl-fleet.example")
    device, other = _Client(broker.port, "barn-1"), _Client(broker.port, "barn-2")
    deployer = _Client(broker.port, "deployer")
    try:
        own = ("kestrel/barn-1/model/set", "kestrel/group/barn/model/set")
        assert device.subscribe(*own) == [1, 1]
        assert other.subscribe("kestrel/barn-2/model/set") == [1]
        # mosquitto 2.0 grants any subscription and filters what it delivers by the ACL.
        device.subscribe("kestrel/barn-2/model/set")
        assert deployer.publish("kestrel/barn-1/model/set") == "Success"
        assert deployer.publish("kestrel/group/barn/model/set") == "Success"
        assert deployer.publish("kestrel/barn-2/model/set") == "Success"
        assert device.wait_for(own[0]) and device.wait_for(own[1])
        assert other.wait_for("kestrel/barn-2/model/set")
        assert not device.wait_for("kestrel/barn-2/model/set", timeout=0.3)  # not another's
        # A device may not push, not even to itself, nor write another's status.
        assert device.publish("kestrel/barn-1/model/set") == "Not authorized"
        assert device.publish("kestrel/group/barn/model/set") == "Not authorized"
        assert device.publish("kestrel/barn-1/model", b"{}", retain=True) == "Success"
        assert other.publish("kestrel/barn-1/model", b"forged") == "Not authorized"
        assert device.publish("kestrel/barn-1/door/state") == "Success"
        assert device.publish("kestrel/barn-2/door/state") == "Not authorized"
        # The deployer reads the statuses it waits on.
        assert deployer.subscribe("kestrel/+/model") == [1]
        assert deployer.wait_for("kestrel/barn-1/model")
    finally:
        for client in (device, other, deployer):
            client.close()


def test_the_shared_account_reads_commands_and_cannot_push(broker_with):
    broker = broker_with("acl.example")
    device = _Client(broker.port, "kestrel")
    try:
        assert device.subscribe("kestrel/barn-1/model/set", "kestrel/group/barn/model/set") == [
            1,
            1,
        ]
        assert device.publish("kestrel/barn-1/model/set") == "Not authorized"
        assert device.publish("kestrel/group/barn/model/set") == "Not authorized"
        assert device.publish("kestrel/barn-1/model") == "Success"
        assert device.publish("kestrel/barn-1/available") == "Success"
    finally:
        device.close()
