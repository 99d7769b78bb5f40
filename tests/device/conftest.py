"""Fixtures for the device tests: a real mosquitto per test, subscribers, TCP gates, and a
fake USB Coral (the one piece of hardware that cannot be here)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker import Mosquitto, Subscriber, TcpGate, mosquitto_binary

MISSING_MOSQUITTO = "mosquitto is not installed (Debian package mosquitto; deploy/test.sh has it)"


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, .ci/run): what is missing there fails, never skips."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    # In CI a missing broker must fail the run: skipped, most MQTT tests would pass unseen
    # (the fixture below skips, and so do modules marked skipif mosquitto_binary() is None).
    if in_ci() and mosquitto_binary() is None:
        raise pytest.UsageError(f"CI=true but {MISSING_MOSQUITTO}: the MQTT tests cannot run")


@pytest.fixture
def mosquitto_dir(tmp_path: Path) -> Path:
    """Folder for the broker's config and log; skips when mosquitto is not installed (fails
    in CI)."""
    if mosquitto_binary() is None:
        if in_ci():
            pytest.fail(f"CI=true but {MISSING_MOSQUITTO}")
        pytest.skip(MISSING_MOSQUITTO)
    return tmp_path / "mosquitto"


@pytest.fixture
def mosquitto(mosquitto_dir: Path) -> Iterator[Mosquitto]:
    """A running broker on a free 127.0.0.1 port; always killed at the end."""
    broker = Mosquitto(mosquitto_dir).start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def debug_mosquitto(mosquitto_dir: Path) -> Iterator[Mosquitto]:
    """Like ``mosquitto``, logging every packet: ``packets_from(client_id)`` tells what a
    client sent itself from what the broker did for it (a last will)."""
    broker = Mosquitto(mosquitto_dir, debug=True).start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def make_subscriber() -> Iterator[Callable[..., Subscriber]]:
    """``make_subscriber(port, topics)``: subscribers closed at the end of the test."""
    made: list[Subscriber] = []

    def make(port: int, topics=("#",), **kwargs) -> Subscriber:
        sub = Subscriber(port, topics, client_id=f"test-subscriber-{len(made)}", **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def make_gate() -> Iterator[Callable[..., TcpGate]]:
    """``make_gate(target_port, open_=True)``: relays closed at the end of the test."""
    made: list[TcpGate] = []

    def make(target_port: int, **kwargs) -> TcpGate:
        gate = TcpGate(target_port, **kwargs)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.close()


class FakeCoral:
    """A USB Coral that can be unplugged: its delegate loads only while plugged in, and an
    interpreter built with it fails to invoke once it is gone. The model runs on the real
    runtime's CPU kernels either way (the delegate object is a stand-in)."""

    def __init__(self) -> None:
        from device.inference.runtime import Runtime, find_runtime

        self.plugged = True
        real = find_runtime()
        coral = self

        class CoralInterpreter(real.interpreter_class):
            def __init__(self, *args, experimental_delegates=None, **kwargs):
                self.on_tpu = bool(experimental_delegates)
                super().__init__(*args, **kwargs)

            def invoke(self):
                if self.on_tpu and not coral.plugged:
                    raise RuntimeError("Failed to invoke: USB transfer error")
                super().invoke()

        self.runtime = Runtime("fake-coral", CoralInterpreter, self.load)

    def load(self, library, options):
        if not self.plugged:
            raise OSError("Failed to load delegate from libedgetpu.so.1: no Edge TPU found")
        return object()


@pytest.fixture
def fake_coral() -> FakeCoral:
    """A plugged-in fake Coral; set ``plugged = False`` to pull it out."""
    return FakeCoral()
