"""The page's routes (Starlette): ``/``, the JSON API, the live updates, the MJPEG streams,
``/healthz`` and ``/metrics``. Every handler reads what the daemon already keeps (the
:class:`~device.web.hub.WebHub`, the stats payload, the capture threads); none of them touches
the inference path.

========================================  =====================================================
``/``                                     the page (static HTML/JS/CSS from this package)
``/api/state``                            every camera's current state, as on MQTT
``/api/cameras``                          each camera's models (name, sha256, task, labels), viewers
``/api/stats``                            the stats payload (accelerator, per-stage timings)
``/api/events?limit=N``                   the last N events, newest first, with snapshot links
``/api/events/<id>/snapshot``             the JPEG that came with an event
``/api/snapshot/<camera>``                the camera's last transition JPEG
``/api/live``                             server-sent events: state / event / status / stats
``/cameras/<camera>/stream.mjpeg``        multipart MJPEG with the label drawn on
``/healthz``                              200 or 503 with the reasons
``/metrics``                              Prometheus text (the same as ``metrics_port``'s)
========================================  =====================================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from device.capture import CaptureThread
from device.config import KestrelConfig
from device.publish.prometheus import render
from device.publish.topics import encode_json
from device.run.cascade import CascadeStage
from device.web.health import health
from device.web.hub import WebHub
from device.web.stream import MEDIA_TYPE, CameraStream, multipart_part

STATIC_DIR = Path(__file__).resolve().with_name("static")
STATS_EVERY = 2.0  # seconds between stats messages on /api/live
NO_CACHE = {"Cache-Control": "no-store"}


class DaemonView(Protocol):
    """What the page reads of the daemon (``device.run.daemon.Daemon``)."""

    config: KestrelConfig
    stages: Mapping[str, Sequence[CascadeStage]]
    captures: list[CaptureThread]
    publisher: Any

    def stats(self) -> dict[str, Any]: ...


class Json(JSONResponse):
    """JSON as MQTT sends it (numpy scalars as plain numbers): the same encoder."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)


def error(status: int, message: str) -> Json:
    return Json({"error": message}, status_code=status, headers=NO_CACHE)


def sse(kind: str, data: Any) -> bytes:
    """One server-sent event."""
    return b"event: " + kind.encode() + b"\ndata: " + encode_json(data) + b"\n\n"


class WebApp:
    """The handlers, over the daemon, its hub and the cameras' streams."""

    def __init__(
        self, daemon: DaemonView, hub: WebHub, streams: Mapping[str, CameraStream]
    ) -> None:
        self.daemon = daemon
        self.config = daemon.config.web
        self.hub = hub
        self.streams = dict(streams)
        self.closing = threading.Event()

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index),
            Route("/api/state", self.state),
            Route("/api/cameras", self.cameras),
            Route("/api/stats", self.stats),
            Route("/api/events", self.events),
            Route("/api/events/{event_id:int}/snapshot", self.event_snapshot),
            Route("/api/snapshot/{camera}", self.snapshot),
            Route("/api/live", self.live),
            Route("/cameras/{camera}/stream.mjpeg", self.mjpeg),
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]

    def close(self) -> None:
        """End every live connection (the server is stopping)."""
        self.closing.set()
        self.hub.notifier.notify()
        for stream in self.streams.values():
            stream.close()

    # -- pages and JSON -------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=NO_CACHE)

    async def state(self, request: Request) -> Response:
        return Json(self.hub.states(), headers=NO_CACHE)

    def camera_info(self, name: str) -> dict[str, Any]:
        stages = self.daemon.stages[name]
        stream = self.streams.get(name)
        return {
            "name": name,
            "stream": f"cameras/{name}/stream.mjpeg",
            "snapshot": f"api/snapshot/{name}",
            # Who watches, and how many frames were encoded for them since the start.
            "viewers": stream.viewers if stream else 0,
            "stream_frames": stream.encoded if stream else 0,
            "stream_encode_ms": round(stream.encode_ms, 3) if stream else None,  # one frame
            "models": [
                {
                    "stage": stage.name,
                    "name": stage.manifest.name,
                    "sha256": stage.manifest.model_sha256,
                    "task": stage.manifest.task,
                    "labels": list(stage.classifier.bundle.labels),
                }
                for stage in stages
            ],
        }

    async def cameras(self, request: Request) -> Response:
        info = [self.camera_info(name) for name in self.hub.cameras]
        return Json({"device": self.hub.device_id, "cameras": info}, headers=NO_CACHE)

    async def stats(self, request: Request) -> Response:
        return Json(await anyio.to_thread.run_sync(self.daemon.stats), headers=NO_CACHE)

    async def events(self, request: Request) -> Response:
        text = request.query_params.get("limit", "20")
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= self.config.events:
            return error(400, f"limit={text!r}: a whole number from 1 to {self.config.events}")
        return Json([e.to_dict() for e in self.hub.events(limit)], headers=NO_CACHE)

    async def event_snapshot(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        record = self.hub.event(event_id)
        if record is None or record.jpeg is None:
            why = "no such event (kept: the last web.events)" if record is None else "no snapshot"
            return error(404, f"event {event_id}: {why}")
        return Response(record.jpeg, media_type="image/jpeg")

    async def snapshot(self, request: Request) -> Response:
        camera = request.path_params["camera"]
        if camera not in self.hub.cameras:
            return error(404, f"no camera {camera!r} (cameras: {', '.join(self.hub.cameras)})")
        jpeg = self.hub.snapshot(camera)
        if jpeg is None:
            return error(404, f"camera {camera!r}: no snapshot yet (none since the start)")
        return Response(jpeg, media_type="image/jpeg", headers=NO_CACHE)

    async def healthz(self, request: Request) -> Response:
        ok, body = health(
            self.daemon.captures, self.daemon.publisher, self.hub, self.config.health_grace
        )
        return Json(body, status_code=200 if ok else 503, headers=NO_CACHE)

    async def metrics(self, request: Request) -> Response:
        text = render(await anyio.to_thread.run_sync(self.daemon.stats))
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- live -----------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        headers = NO_CACHE | {"X-Accel-Buffering": "no"}
        return StreamingResponse(self._live(), media_type="text/event-stream", headers=headers)

    def _hello(self) -> dict[str, Any]:
        return {
            "states": self.hub.states(),
            "statuses": self.hub.statuses(),
            "events": [e.to_dict() for e in self.hub.events(self.config.events)],
        }

    async def _live(self) -> AsyncIterator[bytes]:
        """Everything once (``hello``), then each change as it happens; stats every 2 s."""
        wakeup = self.hub.notifier.waiter()
        try:
            cursor = self.hub.cursor  # before the hello: a change in between comes twice
            yield sse("hello", self._hello())
            next_stats = 0.0
            while not self.closing.is_set():
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY
                    yield sse("stats", await anyio.to_thread.run_sync(self.daemon.stats))
                changes = self.hub.changes_after(cursor)
                if changes is None:  # this page fell behind the change log: start over
                    cursor = self.hub.cursor
                    yield sse("hello", self._hello())
                    continue
                for number, kind, camera, data in changes:
                    cursor = number
                    yield sse(kind, {"camera": camera, "data": data})
                if not changes and not await wakeup.wait(1.0):
                    yield b": keep-alive\n\n"
        finally:
            wakeup.close()

    async def mjpeg(self, request: Request) -> Response:
        camera = request.path_params["camera"]
        stream = self.streams.get(camera)
        if stream is None:
            return error(404, f"no camera {camera!r} (cameras: {', '.join(self.streams)})")
        headers = NO_CACHE | {"X-Accel-Buffering": "no"}
        return StreamingResponse(self._frames(stream), media_type=MEDIA_TYPE, headers=headers)

    async def _frames(self, stream: CameraStream) -> AsyncIterator[bytes]:
        wakeup = stream.notifier.waiter()
        stream.join()
        try:
            last = None
            while not stream.closed and not self.closing.is_set():
                latest = stream.latest()
                if latest is not None and latest[0] != last:
                    last = latest[0]
                    yield multipart_part(latest[1])
                else:
                    await wakeup.wait(1.0)
        finally:
            stream.leave()
            wakeup.close()


def build_app(web: WebApp) -> Starlette:
    return Starlette(routes=web.routes())
