"""Fixtures of the web page tests: one ``kestrel run`` with the page on, shared by the tests of
this folder (starting a daemon costs seconds), on a real mosquitto and OpenCV-written videos.

Camera ``door`` loops a scene that changes every 2 s (the cat, a cross-fade, the coffee), so
its label keeps changing. Camera ``yard`` starts on a file that is not a video (it keeps
reconnecting): /healthz is 503 until a test writes a real video there.
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "run"))  # daemon_process

from broker import Mosquitto, Subscriber, free_port, mosquitto_binary
from daemon_process import (
    START_TIMEOUT,
    DaemonProcess,
    H,
    W,
    camera,
    scene_frames,
    started,
    write_config,
    write_video,
)
from web_helpers import STREAM_FPS, TOKEN, WebDaemon

from device.paths import SAMPLES_DIR


def _photos() -> dict:
    names = {"cat": "cat-chelsea.jpg", "coffee": "coffee.jpg"}
    return {
        key: cv2.resize(cv2.imread(str(SAMPLES_DIR / name)), (W, H), interpolation=cv2.INTER_AREA)
        for key, name in names.items()
    }


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def stop_while_watched(daemon: DaemonProcess, port: int) -> None:
    """SIGTERM with a viewer on the MJPEG stream and a page on the live events: the daemon
    still exits 0 within 2 s (the web server is stopped within Daemon.stop's budget)."""
    viewers = []
    for path in ("/cameras/door/stream.mjpeg", "/api/live"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", f"{path}?token={TOKEN}")
        response = connection.getresponse()
        assert response.status == 200 and response.read(64), path  # it is streaming
        viewers.append(connection)
    sent = daemon.send(signal.SIGTERM)
    code = daemon.wait_exit(10)
    took = time.monotonic() - sent
    for connection in viewers:
        connection.close()
    assert code == 0 and took <= 2.0, f"exit {code} {took:.2f} s after SIGTERM with viewers"


# Module scope, not package: tests/ has no __init__.py files, so a "package" fixture lived until
# the end of the session and its daemon played its looping video through every later test (a
# core of the 2 busy for the rest of the run).
@pytest.fixture(scope="module")
def web_daemon(tmp_path_factory) -> Iterator[WebDaemon]:
    if mosquitto_binary() is None:
        message = "mosquitto is not installed (Debian package mosquitto; deploy/test.sh has it)"
        if in_ci():
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("web")
    broker = Mosquitto(folder / "mosquitto").start()
    frames = scene_frames(_photos(), [("cat", 30), ("coffee", 30)])
    write_video(folder / "door.avi", frames)
    (folder / "yard.avi").write_bytes(b"not a video: the camera keeps reconnecting")
    port, metrics_port = free_port(), free_port()
    fast = {"min_delay": 0.1, "max_delay": 0.2}
    config = write_config(
        folder,
        broker.port,
        [camera("door.avi", loop=True), camera("yard.avi", name="yard", reopen=fast)],
        metrics_port=metrics_port,
        web={
            "enabled": True,
            "port": port,
            "token": "${KESTREL_WEB_TOKEN}",
            "stream_fps": STREAM_FPS,
            "health_grace": 0.5,
        },
    )
    sub = Subscriber(broker.port, ["kestrel/#"], client_id="web-test-subscriber")
    daemon = None
    try:
        sub.wait_subscribed()
        daemon = DaemonProcess(config, {"KESTREL_WEB_TOKEN": TOKEN})
        started(daemon, sub)
        daemon.wait_until(
            lambda: any("web page on" in line for line in daemon.stderr), START_TIMEOUT, "page"
        )
        yield WebDaemon(daemon, sub, port, metrics_port, folder, frames)
        stop_while_watched(daemon, port)
    finally:
        if daemon is not None:
            daemon.close()
            print(f"--- daemon exit {daemon.process.returncode}\n{daemon.log_tail(40)}")
        sub.close()
        broker.kill()
