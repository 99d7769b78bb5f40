"""The page's HTTP side through a real ``kestrel run`` (see conftest.py): the token, the JSON
API against what MQTT carries, events, snapshots, /healthz both ways, /metrics on both ports,
the MJPEG stream and the live updates."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request

import cv2
import numpy as np
from daemon_process import H, W, topic, write_video
from web_helpers import STREAM_FPS, TOKEN, wait_for

from device.web.stream import BOUNDARY


def test_every_request_needs_the_token_but_the_static_files(web_daemon):
    get = web_daemon.get
    status, headers, body = get("/api/state", token=None)
    assert status == 401 and "token required" in json.loads(body)["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert get("/api/state", token="x" * len(TOKEN))[0] == 401
    for path in ("/", "/healthz", "/metrics", "/cameras/door/stream.mjpeg", "/api/live"):
        assert get(path, token=None)[0] == 401, path
    assert get("/api/state")[0] == 200  # ?token=
    request = urllib.request.Request(
        web_daemon.url("/api/cameras", token=None), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        cameras = json.loads(response.read())["cameras"]
    assert [c["name"] for c in cameras] == ["door", "yard"]
    model = cameras[0]["models"][0]
    assert model["name"] == "imagenet-efficientnet-lite0" and len(model["labels"]) == 1000
    assert model["task"] == "hierarchical" and len(model["sha256"]) == 64
    status, _, script = get("/static/app.js", token=None)  # no camera data in it
    assert status == 200 and b"EventSource" in script


def test_api_state_is_the_mqtt_state_payload(web_daemon):
    state_topic = topic("door", "state")

    def same_state():
        retained = web_daemon.sub.received(state_topic)
        if not retained:
            return None
        mqtt = json.loads(retained[-1].payload)
        page = json.loads(web_daemon.get("/api/state")[2])["door"]
        return (mqtt, page) if mqtt["frame_id"] == page["frame_id"] else None

    mqtt, page = wait_for(same_state, 10, "one state on MQTT and /api/state", web_daemon.daemon)
    assert mqtt.pop("seq") >= 1  # MQTT's delivery counter, the one key the page leaves out
    assert page == mqtt
    assert page["model"]["name"] == "imagenet-efficientnet-lite0" and page["device"] == "testdev"


def test_events_newest_first_with_their_snapshots_and_a_checked_limit(web_daemon):
    def two_events():
        events = json.loads(web_daemon.get("/api/events?limit=50")[2])
        return events if len(events) >= 2 else None

    events = wait_for(two_events, 15, "two events", web_daemon.daemon)
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert {e["event"]["type"] for e in events} <= {"start", "change", "end"}
    (newest,) = json.loads(web_daemon.get("/api/events?limit=1")[2])
    assert newest["id"] >= events[0]["id"]
    status, headers, jpeg = web_daemon.get("/" + newest["snapshot"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (H, W, 3)
    for bad in ("0", "51", "many", "-3"):
        status, _, body = web_daemon.get(f"/api/events?limit={bad}")
        assert status == 400 and "limit=" in json.loads(body)["error"], bad
    assert web_daemon.get("/api/events/999999/snapshot")[0] == 404


def test_snapshot_is_the_mqtt_snapshot_and_404_for_an_unknown_camera(web_daemon):
    snapshot_topic = topic("door", "snapshot")

    def same_snapshot():
        published = web_daemon.sub.payloads(snapshot_topic)
        status, _, body = web_daemon.get("/api/snapshot/door")
        return status == 200 and published and body == published[-1]

    wait_for(same_snapshot, 15, "the MQTT snapshot on /api/snapshot/door", web_daemon.daemon)
    status, _, body = web_daemon.get("/api/snapshot/garage")
    assert status == 404 and "garage" in json.loads(body)["error"]
    status, _, body = web_daemon.get("/cameras/garage/stream.mjpeg")
    assert status == 404 and "garage" in json.loads(body)["error"]


def test_healthz_is_503_naming_the_camera_until_every_camera_streams(web_daemon):
    status, _, body = web_daemon.get("/healthz")
    health = json.loads(body)
    assert status == 503, health
    assert [r for r in health["reasons"] if r.startswith("camera yard:")], health
    assert not [r for r in health["reasons"] if "door" in r or "MQTT" in r], health
    assert health["mqtt"] == {"alive": True, "connected": True}
    # The camera comes back: a real video where the broken file was.
    write_video(web_daemon.folder / "yard.avi", web_daemon.frames[:30])

    def healthy():
        status, _, body = web_daemon.get("/healthz")
        return (status, json.loads(body)) if status == 200 else None

    _, health = wait_for(healthy, 10, "200 from /healthz", web_daemon.daemon)
    assert health["status"] == "ok" and health["cameras"]["yard"] == "streaming"


def test_metrics_on_the_page_and_on_metrics_port(web_daemon):
    _, headers, page = web_daemon.get("/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{web_daemon.metrics_port}/metrics", timeout=5
    ) as response:
        own = response.read()
    for text in (page, own):
        assert b'kestrel_frames_total{device="testdev",camera="door"}' in text
        assert b'kestrel_accelerator_info{device="testdev",accelerator="cpu"' in text


def read_mjpeg(web_daemon, seconds: float) -> list[bytes]:
    """The JPEGs of the door camera's stream received within ``seconds``."""
    connection = http.client.HTTPConnection("127.0.0.1", web_daemon.port, timeout=5)
    connection.request("GET", f"/cameras/door/stream.mjpeg?token={TOKEN}")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
    jpegs, deadline = [], time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            assert response.readline() == f"--{BOUNDARY}\r\n".encode()
            headers = {}
            while (line := response.readline().strip()) != b"":
                key, _, value = line.decode().partition(": ")
                headers[key.lower()] = value
            assert headers["content-type"] == "image/jpeg"
            jpegs.append(response.read(int(headers["content-length"])))
            assert response.read(2) == b"\r\n"
    finally:
        connection.close()
    return jpegs


def test_mjpeg_stream_is_the_camera_with_its_label_at_a_capped_rate(web_daemon):
    started = time.monotonic()
    jpegs = read_mjpeg(web_daemon, 1.5)
    elapsed = time.monotonic() - started
    # Capped: the camera delivers 15 fps, the stream at most STREAM_FPS (one frame of slack).
    assert 3 <= len(jpegs) <= STREAM_FPS * elapsed + 1, (len(jpegs), elapsed)
    image = cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (H, W, 3)
    # The label's black band at the top left, over a photo that has none there.
    assert image[2:8, 2:40].mean() < 40 and image[H // 2 :, :].mean() > 40

    def door() -> dict:
        return json.loads(web_daemon.get("/api/cameras")[2])["cameras"][0]

    # The viewer hung up: nobody watches, so nothing is encoded any more.
    wait_for(lambda: door()["viewers"] == 0, 5, "the viewer gone", web_daemon.daemon)
    time.sleep(0.3)  # an encode already under way when the viewer left may still finish
    encoded = door()["stream_frames"]
    assert encoded >= len(jpegs)
    time.sleep(0.5)
    assert door()["stream_frames"] == encoded


def test_live_updates_arrive_within_a_second_of_the_mqtt_state(web_daemon):
    """The same state (camera, frame_id) over server-sent events and over MQTT: < 1 s apart."""
    seen: dict[tuple[str, int], float] = {}
    connection = http.client.HTTPConnection("127.0.0.1", web_daemon.port, timeout=10)
    connection.request("GET", f"/api/live?token={TOKEN}")
    response = connection.getresponse()
    assert response.headers["Content-Type"].startswith("text/event-stream")

    def read_events() -> None:
        kind = None
        try:
            for raw in response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "state":
                    data = json.loads(line.removeprefix("data: "))
                    if data["data"]["frame_id"] is not None:
                        key = (data["camera"], data["data"]["frame_id"])
                        seen.setdefault(key, time.monotonic())
        except (OSError, ValueError, AttributeError):
            pass  # the test closed the connection (http.client then has no socket)

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    states = {topic(camera, "state") for camera in ("door", "yard")}
    before = len(web_daemon.sub.received())
    mqtt_at: dict[tuple[str, int], float] = {}

    def new_state_both_ways():
        for message in web_daemon.sub.received()[before:]:
            if message.topic in states:
                payload = json.loads(message.payload)
                mqtt_at.setdefault((payload["camera"], payload["frame_id"]), time.monotonic())
        both = [key for key in mqtt_at if key in seen]
        return both or None

    try:
        frames = wait_for(new_state_both_ways, 25, "a state change on both", web_daemon.daemon)
    finally:
        connection.close()
    for frame in frames:
        assert abs(seen[frame] - mqtt_at[frame]) < 1.0, (seen[frame], mqtt_at[frame])
