"""The page's parts on their own: the ``web:`` section, the MJPEG encoder (only while watched,
never consuming a frame), the publisher's liveness in /healthz, a port already in use."""

from __future__ import annotations

import fnmatch
import socket
import threading
import time
import tomllib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from broker import free_port

from device.capture import LatestFrameSlot, make_frame
from device.cli import main
from device.config import ConfigError, KestrelConfig, MqttConfig, WebConfig, parse_config
from device.config.web import is_loopback
from device.paths import REPO_ROOT
from device.publish.mqtt import MqttPublisher
from device.web.app import STATIC_DIR
from device.web.health import publisher_problem
from device.web.server import WebServer
from device.web.stream import CameraStream, render_jpeg, state_caption

TOKEN = "0123456789abcdef0123"


# --------------------------------------------------------------------------- config


def test_web_is_off_and_on_loopback_by_default():
    web = KestrelConfig().web
    assert not web.enabled and web.host == "127.0.0.1" and web.port == 8080 and web.token is None
    assert [is_loopback(h) for h in ("127.0.0.1", "127.3.0.9", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "::", "kestrel.local"))


def test_the_token_comes_from_the_environment_and_is_never_shown():
    data = {"web": {"enabled": True, "host": "0.0.0.0", "token": "${KESTREL_WEB_TOKEN}"}}
    config = parse_config(data, "k.yaml", env={"KESTREL_WEB_TOKEN": TOKEN})
    assert config.web.token.get_secret_value() == TOKEN and TOKEN not in repr(config)
    with pytest.raises(ConfigError, match="KESTREL_WEB_TOKEN is not set"):
        parse_config(data, "k.yaml", env={})
    short = {"web": {"enabled": True, "token": "hunter2-hunter2"}}
    with pytest.raises(ConfigError, match=r"web\.token: at least 16") as refused:
        parse_config(short, "k.yaml")
    assert "hunter2" not in str(refused.value)


def test_daemon_refuses_to_start_on_the_network_without_a_token(tmp_path, capsys):
    path = tmp_path / "kestrel.yaml"
    path.write_text(
        "mqtt: null\nweb: {enabled: true, host: 0.0.0.0, token: '${KESTREL_WEB_TOKEN:-}'}\n"
        "cameras: [{name: door, source: demo}]\n"
    )
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "web.token is required" in err and "0.0.0.0" in err
    assert not (tmp_path / "state").exists()  # refused before touching anything


# --------------------------------------------------------------------------- the stream


def frames(count: int, start: int = 0) -> list:
    rng = np.random.default_rng(start)
    return [
        make_frame(rng.integers(60, 200, (240, 320, 3), dtype=np.uint8), "BGR", start + i)
        for i in range(count)
    ]


def test_peek_leaves_the_frame_to_inference():
    slot = LatestFrameSlot()
    first, second = frames(2)
    slot.put(first)
    assert slot.peek() is first and slot.peek(newer_than=-1, timeout=0) is first
    assert slot.get(timeout=0) is first  # peeked, still there for the worker
    assert slot.peek() is first  # taken, still the newest picture
    assert slot.peek(newer_than=first.frame_id, timeout=0.05) is None
    threading.Timer(0.05, slot.put, [second]).start()
    assert slot.peek(newer_than=first.frame_id, timeout=2) is second
    slot.close()
    assert slot.peek() is None


def test_caption_and_picture():
    state = {
        "labels": [{"label": "aphid", "score": 0.71}],
        "hierarchy": [{"label": "insect", "score": 0.9}, {"label": "aphid", "score": 0.7}],
    }
    assert state_caption(state) == "insect > aphid 0.70"
    assert state_caption({"labels": []}) == "-" and state_caption(None) == "-"
    frame = frames(1)[0]
    plain = cv2.imdecode(np.frombuffer(render_jpeg(frame, "-", 640, 90), np.uint8), 1)
    drawn = cv2.imdecode(np.frombuffer(render_jpeg(frame, "aphid 0.71", 640, 90), np.uint8), 1)
    assert drawn.shape == (240, 320, 3) and not frame.image.flags.writeable
    assert np.abs(drawn[:20, :120].astype(int) - plain[:20, :120]).mean() > 20  # the label
    assert np.abs(drawn[100:].astype(int) - plain[100:]).mean() < 2  # nothing else changed
    small = cv2.imdecode(np.frombuffer(render_jpeg(frame, "x", 160, 90), np.uint8), 1)
    assert small.shape == (120, 160, 3)
    yuv = make_frame(cv2.cvtColor(frame.image, cv2.COLOR_BGR2YUV_I420), "YUV420", 7)
    assert cv2.imdecode(np.frombuffer(render_jpeg(yuv, "x", 640, 90), np.uint8), 1).shape == (
        240,
        320,
        3,
    )


def feed(slot: LatestFrameSlot, stop: threading.Event) -> None:
    """A camera at ~50 fps, whose frames inference takes as they come."""
    frame_id = 0
    while not stop.is_set():
        slot.put(frames(1, frame_id)[0])
        assert slot.get(timeout=0) is not None
        frame_id += 1
        time.sleep(0.02)


def test_frames_are_encoded_only_while_someone_watches_and_at_the_capped_rate():
    slot, stop = LatestFrameSlot(), threading.Event()
    stream = CameraStream("door", slot, lambda: "cat 0.9", WebConfig(stream_fps=10))
    camera = threading.Thread(target=feed, args=(slot, stop), daemon=True)
    camera.start()
    try:
        time.sleep(0.3)
        assert stream.encoded == 0 and stream.latest() is None  # nobody watches
        stream.join()
        stream.join()  # a second viewer shares the same JPEGs
        time.sleep(0.8)
        count = stream.encoded
        assert 4 <= count <= 10, count  # 10 fps, whatever the camera's 50
        stream.leave()
        time.sleep(0.3)
        assert stream.encoded > count  # one viewer left
        stream.leave()
        time.sleep(0.3)
        idle = stream.encoded
        time.sleep(0.4)
        assert stream.encoded == idle and stream.latest() is None  # the last one left
    finally:
        stop.set()
        stream.close()
        camera.join(1)


# --------------------------------------------------------------------------- health, ports


def test_a_publisher_whose_threads_are_gone_is_not_alive(mosquitto, tmp_path):
    config = MqttConfig(host="127.0.0.1", port=mosquitto.port)
    publisher = MqttPublisher(config, "webtest", tmp_path / "state", cameras=["door"])
    assert "is not running" in publisher_problem(publisher)  # never started
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher_problem(publisher) is None
    finally:
        publisher.stop(timeout=1.0)
    assert publisher_problem(publisher) is not None  # stopped: /healthz says 503
    assert publisher_problem(None) is None  # mqtt: null


def test_a_port_in_use_leaves_the_daemon_without_its_page(caplog):
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        config = KestrelConfig(mqtt=None, web=WebConfig(enabled=True, port=port))
        server = WebServer(SimpleNamespace(config=config))
        server.start({})
        assert not server.running
        server.stop()
    assert f"web: cannot listen on 127.0.0.1:{port}" in caplog.text


def test_the_page_files_are_package_data():
    """An installed kestrel (a wheel, not this checkout) must still have its page."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["device.web"]
    files = [p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*")]
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    page = (STATIC_DIR / "index.html").read_text() + (STATIC_DIR / "app.js").read_text()
    assert "http://" not in page and "https://" not in page  # nothing from the internet
