"""Prometheus ``/metrics`` for the daemon: the stats payload in the text exposition format.

Served on ``metrics_host:metrics_port`` when configured, by :class:`MetricsServer`: one
thread, bounded, so that idle connections cannot grow the daemon.
"""

from __future__ import annotations

import contextlib
import io
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

log = logging.getLogger(__name__)


Sample = tuple[dict[str, Any], float]

# Per-camera counters: metric name -> (key in the camera's stats, help text).
CAMERA_COUNTERS = {
    "frames_total": ("frames", "Frames captured."),
    "dropped_frames_total": ("dropped", "Frames replaced by a newer one before inference."),
    "inferences_total": ("inferences", "Frames classified."),
    "motion_skipped_total": ("motion_skipped", "Frames skipped on a static scene."),
    "transitions_total": ("transitions", "State changes."),
    "source_reopens_total": ("reopens", "Times the source was reopened."),
    "errors_total": ("errors", "Frames that failed."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _metric(name: str, kind: str, help_text: str, samples: list[Sample]) -> list[str]:
    """One metric family: HELP, TYPE and a line per sample."""
    lines = [f"# HELP kestrel_{name} {help_text}", f"# TYPE kestrel_{name} {kind}"]
    for labels, value in samples:
        tags = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        lines.append(f"kestrel_{name}{{{tags}}} {value}")
    return lines


def render(stats: dict[str, Any]) -> str:
    """Stats dict (see ``Daemon.stats``) -> Prometheus text format."""
    device = {"device": stats["device"]}
    lines = _device_metrics(stats, device)
    lines += _camera_metrics(stats["cameras"], device)
    lines += _collect_metrics(stats["cameras"], device)
    lines += _mqtt_metrics(stats.get("mqtt") or {}, device)
    return "\n".join(lines) + "\n"


def _device_metrics(stats: dict[str, Any], device: dict[str, Any]) -> list[str]:
    accelerator = device | {"accelerator": stats["accelerator"], "runtime": stats["runtime"]}
    return [
        *_metric(
            "uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            [(device, stats["uptime_s"])],
        ),
        *_metric(
            "resident_memory_megabytes",
            "gauge",
            "Resident memory of the daemon.",
            [(device, stats["rss_mb"])],
        ),
        *_metric(
            "accelerator_info",
            "gauge",
            "1 for the accelerator in use (cpu or edgetpu).",
            [(accelerator, 1)],
        ),
        *_metric(
            "accelerator_failures_total",
            "counter",
            "Edge TPU invokes that failed: the model moved to the CPU (the frame was not lost).",
            [(device, stats["accelerator_failures"])],
        ),
        *_metric(
            "accelerator_recoveries_total",
            "counter",
            "Times a model went back to the Edge TPU after a failure or a missing one.",
            [(device, stats["accelerator_recoveries"])],
        ),
    ]


def _camera_metrics(cameras: dict[str, dict[str, Any]], device: dict[str, Any]) -> list[str]:
    def per_camera(key: str) -> list[Sample]:
        return [(device | {"camera": cam}, c[key]) for cam, c in cameras.items()]

    lines: list[str] = []
    for name, (key, help_text) in CAMERA_COUNTERS.items():
        lines += _metric(name, "counter", help_text, per_camera(key))
    stages = [
        (device | {"camera": cam, "stage": stage}, ms)
        for cam, c in cameras.items()
        for stage, ms in c["stage_ms"].items()
    ]
    streaming = [
        (device | {"camera": cam}, int(c["source"] == "streaming")) for cam, c in cameras.items()
    ]
    lines += _metric(
        "capture_fps",
        "gauge",
        "Frames per second delivered by the source.",
        per_camera("capture_fps"),
    )
    lines += _metric(
        "stage_milliseconds", "gauge", "Moving average of each pipeline stage.", stages
    )
    lines += _metric("source_streaming", "gauge", "1 while the source delivers frames.", streaming)
    return lines


def _collect_metrics(cameras: dict[str, dict[str, Any]], device: dict[str, Any]) -> list[str]:
    """The frames kept for a dataset (cameras with ``collect`` on; see device/run/collect.py)."""
    collecting = {cam: c["collect"] for cam, c in cameras.items() if "collect" in c}
    if not collecting:
        return []

    def per_key(key: str) -> list[Sample]:
        return [(device | {"camera": cam}, c[key]) for cam, c in collecting.items()]

    def per_label(key: str, label: str) -> list[Sample]:
        return [
            (device | {"camera": cam, label: name}, n)
            for cam, c in collecting.items()
            for name, n in c[key].items()
        ]

    return [
        *_metric(
            "collect_saved_total",
            "counter",
            "Frames kept, by reason.",
            per_label("saved", "reason"),
        ),
        *_metric(
            "collect_dropped_total",
            "counter",
            "Frames to keep that were lost (queue_full, write_failed).",
            per_label("dropped", "why"),
        ),
        *_metric(
            "collect_rate_limited_total",
            "counter",
            "Frames over max_per_minute.",
            per_key("rate_limited"),
        ),
        *_metric(
            "collect_pruned_total",
            "counter",
            "Oldest frames deleted beyond the bounds.",
            per_key("pruned"),
        ),
        *_metric("collect_files", "gauge", "Frames kept on disk.", per_key("files")),
        *_metric("collect_megabytes", "gauge", "Size of the frames kept on disk.", per_key("mb")),
    ]


def _mqtt_metrics(mqtt: dict[str, Any], device: dict[str, Any]) -> list[str]:
    if not mqtt:
        return []
    lines = _metric(
        "mqtt_connected",
        "gauge",
        "1 while connected to the broker.",
        [(device, int(bool(mqtt.get("connected"))))],
    )
    for key in ("published", "queued", "dropped", "denied", "reconnects"):
        if isinstance(mqtt.get(key), int | float):
            lines += _metric(
                f"mqtt_{key}", "gauge", f"MQTT publisher: {key}.", [(device, mqtt[key])]
            )
    return lines


class _Handler(BaseHTTPRequestHandler):
    """One request already read whole (``request`` is ``(socket, bytes)``): the standard
    library's parsing and replies, without its blocking reads."""

    collect: Callable[[], dict[str, Any]]

    def setup(self) -> None:
        self.connection, data = self.request
        self.rfile = io.BytesIO(data)
        self.wfile = self.connection.makefile("wb")

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.wfile.close()

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics here")
            return
        body = render(self.collect()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class MetricsServer:
    """``/metrics`` over HTTP, answered from ``stats()`` at each request.

    It has no authentication, so it listens on 127.0.0.1 unless told otherwise. One thread and
    a selector serve every connection: an idle or slow client costs a socket, never a thread.
    At most ``max_connections`` are open (the oldest is closed to make room for a new one),
    and one that has not sent its whole request within ``request_timeout`` s is closed.
    """

    MAX_REQUEST = 8192  # bytes of request line and headers; a scrape sends a few hundred

    def __init__(
        self,
        port: int,
        stats: Callable[[], dict[str, Any]],
        host: str = "127.0.0.1",
        *,
        max_connections: int = 32,
        request_timeout: float = 5.0,
    ) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._handler = type("Handler", (_Handler,), {"collect": staticmethod(stats)})
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        # Open connections, oldest first: (request bytes so far, deadline).
        self._clients: dict[socket.socket, tuple[bytearray, float]] = {}
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="metrics", daemon=True)

    @property
    def server_address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> None:
        self.thread.start()
        host, port = self.server_address
        log.info("Prometheus metrics on %s:%d/metrics", host, port)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self.thread.is_alive():
            self.thread.join(2.0)
        for client in list(self._clients):
            self._close(client)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            deadlines = [deadline for _, deadline in self._clients.values()]
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is not self._wake_r:
                    self._receive(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            for client, (_, deadline) in list(self._clients.items()):
                if deadline <= now:
                    self._close(client)  # never sent a whole request: slow or idle

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                log.warning("metrics: cannot accept a connection: %s", exc)
                return
            if len(self._clients) >= self.max_connections:
                self._close(next(iter(self._clients)))  # the oldest makes room
            client.setblocking(False)
            self._clients[client] = (bytearray(), time.monotonic() + self.request_timeout)
            self._selector.register(client, selectors.EVENT_READ)

    def _receive(self, client: socket.socket) -> None:
        try:
            data = client.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        buffer, _ = self._clients[client]
        buffer += data
        if not data or len(buffer) > self.MAX_REQUEST:
            self._close(client)
        elif b"\r\n\r\n" in buffer or b"\n\n" in buffer:
            self._respond(client, bytes(buffer))

    def _respond(self, client: socket.socket, request: bytes) -> None:
        self._selector.unregister(client)
        del self._clients[client]
        # The reply is a few KB (the socket's buffer takes it); a client that does not
        # read holds this thread for request_timeout at most.
        client.settimeout(self.request_timeout)
        try:
            self._handler((client, request), client.getpeername(), self)
        except Exception as exc:  # a failed reply must never end the server
            log.debug("metrics: reply failed: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _close(self, client: socket.socket) -> None:
        if self._clients.pop(client, None) is not None:
            self._selector.unregister(client)
        client.close()
