"""Fixtures of the ``kestrel run`` tests: the sample photos at the video size, and daemons
that are always killed at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_process import DaemonProcess, H, W

from device.paths import SAMPLES_DIR


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """The cat and coffee sample photos at the video size, BGR."""
    folder = SAMPLES_DIR
    out = {}
    for name in ("cat", "coffee"):
        path = folder / ("cat-chelsea.jpg" if name == "cat" else "coffee.jpg")
        image = cv2.imread(str(path))
        assert image is not None, path
        out[name] = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
    return out


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., DaemonProcess]]:
    """``start_daemon(config_path, env=None)``; every daemon is killed at the end, its log printed
    (pytest shows it when the test failed)."""
    started: list[DaemonProcess] = []

    def start(config: Path, env: dict[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()
        print(f"--- daemon {daemon.pid} exit {daemon.process.returncode}\n{daemon.log_tail(60)}")


# --------------------------------------------------------------------------- helpers
