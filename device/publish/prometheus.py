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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stats: dict[str, Any]) -> str:
    """Stats dict (see ``Daemon.stats``) -> Prometheus text format."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP kestrel_{name} {help_text}")
        lines.append(f"# TYPE kestrel_{name} {kind}")
        for labels, value in samples:
            tags = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            lines.append(f"kestrel_{name}{{{tags}}} {value}")

    device = {"device": stats["device"]}
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        [(device, stats["uptime_s"])],
    )
    metric(
        "resident_memory_megabytes",
        "gauge",
        "Resident memory of the daemon.",
        [(device, stats["rss_mb"])],
    )
    metric(
        "accelerator_info",
        "gauge",
        "1 for the accelerator in use (cpu or edgetpu).",
        [(device | {"accelerator": stats["accelerator"], "runtime": stats["runtime"]}, 1)],
    )
    metric(
        "accelerator_failures_total",
        "counter",
        "Edge TPU invokes that failed: the model moved to the CPU (the frame was not lost).",
        [(device, stats["accelerator_failures"])],
    )
    metric(
        "accelerator_recoveries_total",
        "counter",
        "Times a model went back to the Edge TPU after a failure or a missing one.",
        [(device, stats["accelerator_recoveries"])],
    )
    cameras = stats["cameras"]
    counters = {
        "frames_total": ("frames", "Frames captured."),
        "dropped_frames_total": ("dropped", "Frames replaced by a newer one before inference."),
        "inferences_total": ("inferences", "Frames classified."),
        "motion_skipped_total": ("motion_skipped", "Frames skipped on a static scene."),
        "transitions_total": ("transitions", "State changes."),
        "source_reopens_total": ("reopens", "Times the source was reopened."),
        "errors_total": ("errors", "Frames that failed."),
    }
    for name, (key, help_text) in counters.items():
        metric(
            name,
            "counter",
            help_text,
            [(device | {"camera": cam}, c[key]) for cam, c in cameras.items()],
        )
    metric(
        "capture_fps",
        "gauge",
        "Frames per second delivered by the source.",
        [(device | {"camera": cam}, c["capture_fps"]) for cam, c in cameras.items()],
    )
    metric(
        "stage_milliseconds",
        "gauge",
        "Moving average of each pipeline stage.",
        [
            (device | {"camera": cam, "stage": stage}, ms)
            for cam, c in cameras.items()
            for stage, ms in c["stage_ms"].items()
        ],
    )
    metric(
        "source_streaming",
        "gauge",
        "1 while the source delivers frames.",
        [(device | {"camera": cam}, int(c["source"] == "streaming")) for cam, c in cameras.items()],
    )
    mqtt = stats.get("mqtt") or {}
    if mqtt:
        metric(
            "mqtt_connected",
            "gauge",
            "1 while connected to the broker.",
            [(device, int(bool(mqtt.get("connected"))))],
        )
        for key in ("published", "queued", "dropped", "reconnects"):
            if isinstance(mqtt.get(key), int | float):
                metric(f"mqtt_{key}", "gauge", f"MQTT publisher: {key}.", [(device, mqtt[key])])
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, port: int, stats: Callable[[], dict[str, Any]], host: str = "0.0.0.0"):
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
