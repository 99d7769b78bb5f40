"""What the model-update daemon tests share: a daemon config with ``ota`` on, ``kestrel push``
as a subprocess, and readers of the retained model status and the camera's state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker import Subscriber
from daemon_process import DEVICE, camera, scene_frames, write_config, write_video

PUSH_TIMEOUT = 60.0


def ota_config(
    folder: Path, port: int, photos: dict, *, device: str = DEVICE, ota: dict | None = None, **top
) -> Path:
    """A daemon on a looping video of the cat, with model updates on; 5 inferences a second
    on one thread, so that three of them and a smoke test share two cores."""
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "door.avi", scene_frames(photos, [("cat", 30)]))
    cam = camera("door.avi", loop=True, max_fps=5.0, smoothing={"min_dwell": 0.2})
    return write_config(
        folder,
        port,
        [cam],
        device_id=device,
        threads=1,
        ota={"enabled": True} | (ota or {}),
        **top,
    )


def push(port: int, *args: str, timeout: float = PUSH_TIMEOUT) -> subprocess.CompletedProcess:
    """``kestrel push ARGS --host 127.0.0.1 --port PORT``, as a user runs it."""
    command = [sys.executable, "-m", "device.cli", "push", *args]
    command += ["--host", "127.0.0.1", "--port", str(port), "--timeout", str(timeout)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30)


def model_topic(device: str = DEVICE) -> str:
    return f"kestrel/{device}/model"


def statuses(sub: Subscriber, device: str = DEVICE) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.received(model_topic(device))]


def states(sub: Subscriber, device: str = DEVICE) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.received(f"kestrel/{device}/door/state")]


def stats(sub: Subscriber, device: str = DEVICE) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.received(f"kestrel/{device}/stats")]


def wait_answer(
    sub: Subscriber, request: str, timeout: float = PUSH_TIMEOUT, device: str = DEVICE
) -> dict[str, Any]:
    """The device's final status for ``request`` (active, rejected or rolled_back)."""

    def final() -> dict[str, Any] | None:
        for status in reversed(statuses(sub, device)):
            if status.get("request") == request and status["status"] != "receiving":
                return status
        return None

    sub.wait_until(lambda: final() is not None, timeout, f"a final status for {request}")
    answer = final()
    assert answer is not None
    return answer


class Pusher:
    """A paho client that publishes raw model update messages with QoS 1, as ``kestrel push``
    does, for messages that ``kestrel push`` would never send."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-pusher", protocol=mqtt.MQTTv5
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, messages: list[bytes], device: str = DEVICE) -> None:
        infos = [
            self.client.publish(f"kestrel/{device}/model/set", message, qos=1)
            for message in messages
        ]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def subscriptions_of(log: str, client_id: str) -> list[str]:
    """The topics ``client_id`` subscribed to, from a debug mosquitto log."""
    topics, inside = [], False
    for line in log.splitlines():
        text = line.split(": ", 1)[-1]
        if text.startswith("Received SUBSCRIBE from "):
            inside = text.endswith(f" {client_id}")
        elif inside and text.startswith("\t"):
            topics.append(text.strip().rsplit(" (", 1)[0])
        else:
            inside = False
    return topics
