"""The paho client's set-up: password files, TLS files, credentials and certificates at a
real mosquitto."""

from __future__ import annotations

import logging
import time

import pytest
from broker import Mosquitto, make_certificates
from publisher_helpers import DEVICE, TOPICS, mqtt_config, wait_until

from device.publish.mqtt import MqttPublisher, MqttSetupError


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
