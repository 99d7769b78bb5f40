"""Prometheus ``/metrics`` for the daemon: the stats payload in the text exposition format.

Served by the standard library's threading HTTP server on ``metrics_port`` when configured.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _mqtt_metrics(mqtt: dict[str, Any], device: dict[str, Any]) -> list[str]:
    if not mqtt:
        return []
    lines = _metric(
        "mqtt_connected",
        "gauge",
        "1 while connected to the broker.",
        [(device, int(bool(mqtt.get("connected"))))],
    )
    for key in ("published", "queued", "dropped", "reconnects"):
        if isinstance(mqtt.get(key), int | float):
            lines += _metric(
                f"mqtt_{key}", "gauge", f"MQTT publisher: {key}.", [(device, mqtt[key])]
            )
    return lines


class MetricsServer:
    """``/metrics`` over HTTP, answered from ``stats()`` at each request."""

    def __init__(
        self, port: int, stats: Callable[[], dict[str, Any]], host: str = "0.0.0.0"
    ) -> None:
        collect = stats

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render(collect()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()
        log.info("Prometheus metrics on :%d/metrics", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
