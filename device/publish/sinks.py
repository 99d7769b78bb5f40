"""Where a camera's state changes go: the :class:`Sink` interface (``MqttPublisher`` is one),
the console, and the snapshot files kept on disk."""

from __future__ import annotations

import collections
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from device.config import SnapshotConfig
from device.publish.payloads import MAIN_STAGE, now_iso

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where state changes go (MQTT, console). Implementations must not block."""

    def publish_state(self, camera: str, payload: dict) -> None: ...
    def publish_event(self, camera: str, payload: dict) -> None: ...
    def publish_snapshot(self, camera: str, jpeg: bytes) -> None: ...
    def publish_status(self, camera: str, payload: dict) -> None: ...


class ConsoleSink:
    """Prints one line per state change, for a human watching the terminal.

    Called from every camera's threads: each line is written whole under a lock, so lines of
    two cameras never run into each other.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def publish_state(self, camera: str, payload: dict) -> None:
        pass

    def publish_event(self, camera: str, payload: dict) -> None:
        current = ", ".join(f"{x['label']} {x['score']:.2f}" for x in payload["labels"]) or "-"
        path = payload.get("hierarchy")
        where = f"  [{' > '.join(x['label'] for x in path)}]" if path else ""
        stage = "" if payload["level"] == MAIN_STAGE else f" ({payload['level']})"
        self._line(
            f"{payload['timestamp']}  {camera}{stage}: {payload['type']:<6} {current}{where}"
        )

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        pass

    def publish_status(self, camera: str, payload: dict) -> None:
        self._line(f"{now_iso()}  {camera}: source {payload['state']} {payload['reason']}".rstrip())


class SnapshotStore:
    """JPEG files of transition frames, oldest deleted beyond ``max_files``."""

    def __init__(self, config: SnapshotConfig, state_dir: Path) -> None:
        self.config = config
        self.directory = config.directory or state_dir / "snapshots"
        self._lock = threading.Lock()
        self._files: collections.deque[Path] | None = None

    def encode(self, image: np.ndarray) -> bytes:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return data.tobytes()

    def save(self, camera: str, frame_id: int, jpeg: bytes) -> Path | None:
        if self.config.max_files == 0:
            return None
        try:
            with self._lock:  # shared by every camera's worker
                if self._files is None:
                    # Once: what earlier runs left, oldest first. Then tracked in memory, so a
                    # transition costs no directory listing.
                    self.directory.mkdir(parents=True, exist_ok=True)
                    existing = sorted(self.directory.glob("*.jpg"), key=lambda p: p.stat().st_mtime)
                    self._files = collections.deque(existing)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
                path = self.directory / f"{camera}-{stamp}-{frame_id}.jpg"
                path.write_bytes(jpeg)
                self._files.append(path)
                while len(self._files) > self.config.max_files:
                    self._files.popleft().unlink(missing_ok=True)
            return path
        except OSError as exc:
            log.warning("snapshot not saved in %s: %s", self.directory, exc)
            return None
