"""``kestrel run`` with no configuration at all (the newcomer's one command): the shipped
model, the demo source, and a mosquitto the daemon starts itself on 127.0.0.1:1883 and stops
when it exits. Read back by a separate MQTT subscriber (see daemon_process.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from broker import Subscriber, mosquitto_binary, wait_for_port
from daemon_process import START_TIMEOUT, classify_labels

from device.config import MqttConfig
from device.paths import SAMPLES_DIR, is_image_file
from device.publish.embedded_broker import CONFIG_NAME, port_in_use

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
]

DEFAULT = MqttConfig()  # the zero-setup broker address: the defaults, nothing configured
STATE = "kestrel/kestrel/demo/state"


def _bare_run(home: Path) -> subprocess.Popen[str]:
    """``kestrel run`` without --config; HOME moves the default state_dir (~/.local/state/
    kestrel) into the test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KESTREL_", "NOTIFY_"))}
    env |= {"HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "device.cli", "-v", "run"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_config_at_all_starts_its_broker_and_publishes_demo_labels(tmp_path):
    if port_in_use(DEFAULT.host, DEFAULT.port):
        pytest.skip(f"{DEFAULT.host}:{DEFAULT.port} is taken: the embedded broker would not start")
    daemon = _bare_run(tmp_path)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(daemon.stderr), daemon=True)
    reader.start()
    sub = None
    try:
        wait_for_port(DEFAULT.port, timeout=START_TIMEOUT)
        sub = Subscriber(DEFAULT.port, [STATE], client_id="zero-setup-reader")
        labelled = sub.wait_for(
            lambda ms: any(json.loads(m.payload)["label"] for m in ms), timeout=30
        )
        state = next(json.loads(m.payload) for m in labelled if json.loads(m.payload)["label"])
        assert state["detected"] and state["camera"] == "demo" and state["labels"]
        # What kestrel classify says of one of the photos (the demo once said "Egyptian Mau"
        # of the cat that classify calls "cat").
        photos = sorted(p for p in SAMPLES_DIR.iterdir() if is_image_file(p))
        assert state["label"] in set(classify_labels(photos).values()) - {""}, state
        # The broker is the daemon's own child, configured in the default state_dir.
        config = tmp_path / ".local/state/kestrel" / CONFIG_NAME
        assert f"listener {DEFAULT.port} 127.0.0.1" in config.read_text()
        sub.close()
        sub = None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
        reader.join(5)
        wait_for_port(DEFAULT.port, timeout=5, up=False)  # stopped with the daemon
    finally:
        if sub is not None:
            sub.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        reader.join(5)
        print("".join(log[-40:]))
    assert "Traceback" not in "".join(log)
