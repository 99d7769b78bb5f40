"""Fixtures for the device tests: a real mosquitto per test, subscribers, TCP gates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from broker import Mosquitto, Subscriber, TcpGate, mosquitto_binary


@pytest.fixture
def mosquitto_dir(tmp_path: Path) -> Path:
    """Folder for the broker's config and log; skips when mosquitto is not installed."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (Debian package mosquitto; deploy/test.sh has it)")
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
