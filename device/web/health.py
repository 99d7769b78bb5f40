"""``/healthz``: 200 only while every camera streams (or is back within its reopen backoff)
and the MQTT publisher's threads are alive; otherwise 503 and the reasons."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from device.capture import CaptureThread
from device.web.hub import WebHub


def publisher_problem(publisher: Any) -> str | None:
    """Why the MQTT publisher is not alive, or None. Being disconnected is not a problem
    here (it reconnects with backoff, and the disk queue keeps what it cannot send); a dead
    send thread or paho network thread is."""
    if publisher is None:
        return None  # mqtt: null, nothing to be alive
    if not publisher.alive:
        return "MQTT publisher: its send thread or paho's network thread is not running"
    return None


def camera_problem(capture: CaptureThread, hub: WebHub, grace: float, now: float) -> str | None:
    """Why a camera is unhealthy, or None: it streams, or it has been without frames for no
    longer than its longest reopen delay plus ``grace`` seconds."""
    name = capture.camera.name
    status = capture.status
    if not capture.is_alive():
        return f"camera {name}: capture thread not running ({status.state}: {status.reason})"
    down = hub.down_since(name)
    if down is None:
        return None
    allowed = capture.camera.reopen.max_delay + grace
    if now - down <= allowed:
        return None
    return (
        f"camera {name}: no frames for {now - down:.1f} s (more than reopen.max_delay + "
        f"web.health_grace = {allowed:g} s): {status.state}, {status.reason}"
    )


def health(
    captures: Sequence[CaptureThread], publisher: Any, hub: WebHub, grace: float
) -> tuple[bool, dict[str, Any]]:
    """(healthy, the JSON body of /healthz)."""
    now = time.monotonic()
    problems = [p for c in captures if (p := camera_problem(c, hub, grace, now))]
    mqtt = publisher_problem(publisher)
    if mqtt:
        problems.append(mqtt)
    cameras = {c.camera.name: c.status.state for c in captures}
    broker = None
    if publisher is not None:
        broker = {"alive": mqtt is None, "connected": publisher.connected}
    body = {
        "status": "ok" if not problems else "unhealthy",
        "reasons": problems,
        "cameras": cameras,
        "mqtt": broker,
    }
    return not problems, body
