"""``kestrel run`` end to end over TLS with a password: a real mosquitto that accepts only TLS
and known users, the daemon as users run it, a separate subscriber (see daemon_process.py)."""

from __future__ import annotations

import json
import signal

import pytest
from broker import Mosquitto, make_certificates
from daemon_process import (
    AVAILABLE,
    DEVICE,
    camera,
    decoded,
    lineage,
    scene_frames,
    started,
    topic,
    write_config,
    write_video,
)

pytestmark = pytest.mark.slow

SECRET = "tls-Pa55word"


@pytest.fixture
def tls_broker(mosquitto_dir, tmp_path):
    tls = make_certificates(tmp_path / "certs")
    broker = Mosquitto(mosquitto_dir, tls=tls, users={"kestrel": SECRET, "reader": SECRET})
    broker.start()
    try:
        yield broker, tls
    finally:
        broker.kill()


def test_daemon_over_tls_with_a_password_file(
    tmp_path, photos, tls_broker, make_subscriber, start_daemon
):
    """Labels, retained state and a clean ``offline`` arrive over TLS; the password is read from
    its file and shown nowhere; the broker saw the daemon connect over TLS only."""
    broker, tls = tls_broker
    (tmp_path / "password").write_text(SECRET + "\n")
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 30)]))
    mqtt = {
        "username": "kestrel",
        "password_file": "password",  # relative to the config's folder
        "tls": {"enabled": True, "ca_file": str(tls.ca)},
    }
    config = write_config(tmp_path, broker.port, [camera("door.avi", loop=True)], mqtt=mqtt)
    sub = make_subscriber(
        broker.port,
        [AVAILABLE, topic("door", "event"), topic("door", "state")],
        username="reader",
        password=SECRET,
        ca_file=tls.ca,
    )
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    state_topic = topic("door", "state")
    sub.wait_for(
        lambda ms: any(m.topic == state_topic and json.loads(m.payload)["detected"] for m in ms),
        timeout=20,
    )
    (start,) = decoded(sub.received(topic("door", "event")))[:1]
    assert start["type"] == "start" and "cat" in lineage(start)
    assert decoded(sub.received(state_topic))[-1]["device"] == DEVICE

    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    sub.wait_for(lambda ms: [m.payload for m in ms if m.topic == AVAILABLE][-1] == b"offline")
    log = broker.log()
    assert f"as kestrel-{DEVICE}" in log and "u'kestrel'" in log, log  # authenticated
    assert f"Client kestrel-{DEVICE} disconnected." in log, log  # a clean goodbye
    everything = "\n".join([*daemon.stdout, *daemon.stderr])
    assert SECRET not in everything and "Traceback" not in everything
