"""The /metrics server: local by default, bounded under idle connections."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from device.publish.prometheus import MetricsServer, render

STATS = {
    "device": "barn",
    "uptime_s": 1.0,
    "rss_mb": 80.0,
    "accelerator": "cpu",
    "runtime": "ai_edge_litert",
    "accelerator_failures": 0,
    "accelerator_recoveries": 0,
    "cameras": {},
    "mqtt": {},
}


@pytest.fixture
def server():
    metrics = MetricsServer(0, lambda: STATS)
    metrics.start()
    yield metrics
    metrics.stop()


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def test_it_listens_on_this_machine_only_by_default(server):
    assert server.server_address[0] == "127.0.0.1"
    status, body = scrape(server.port)
    assert status == 200 and 'kestrel_uptime_seconds{device="barn"} 1.0' in body
    assert scrape(server.port, "/other")[0] == 404


def test_300_idle_connections_neither_grow_threads_nor_block_metrics(server):
    before = threading.active_count()
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.5)  # let the server accept them all (the old one spawned a thread each)
        during = threading.active_count()
        status, body = scrape(server.port)
    finally:
        for sock in idle:
            sock.close()
    print(f"threads: {before} before, {during} with 300 idle connections")
    assert during - before < 30, f"{before} -> {during} threads"
    assert status == 200 and "kestrel_uptime_seconds" in body


def test_a_connection_that_never_sends_a_request_is_closed():
    metrics = MetricsServer(0, lambda: STATS, request_timeout=0.3)
    metrics.start()
    try:
        sock = socket.create_connection(("127.0.0.1", metrics.port), timeout=5)
        sock.sendall(b"GET /metr")  # and never the rest
        assert sock.recv(1024) == b""  # closed by the server, not held forever
        sock.close()
        assert scrape(metrics.port)[0] == 200
    finally:
        metrics.stop()


def test_metrics_host_chooses_the_address():
    metrics = MetricsServer(0, lambda: STATS, host="0.0.0.0")
    try:
        assert metrics.server_address[0] == "0.0.0.0"
    finally:
        metrics.stop()


def test_mqtt_counters_include_the_denied_messages():
    """A broker's ACL refusing publishes is what an operator must see on a dashboard."""
    mqtt = {"connected": True, "published": 7, "queued": 0, "dropped": 1, "denied": 3}
    text = render({**STATS, "mqtt": mqtt})
    assert 'kestrel_mqtt_denied{device="barn"} 3' in text
    assert 'kestrel_mqtt_dropped{device="barn"} 1' in text
