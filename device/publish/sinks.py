"""Where a camera's state changes go: the :class:`Sink` interface (``MqttPublisher`` is one),
the console, and the snapshot files kept on disk."""

from __future__ import annotations

import collections
import logging
import os
import queue
import select
import sys
import threading
import time
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

    Never blocks its callers (every camera's threads): lines go into a bounded queue that a
    thread of its own writes out. A console nobody reads (a full pipe under a supervisor) only
    costs lines: beyond ``max_lines`` waiting they are dropped and counted (``dropped``).
    """

    MAX_LINE = 1000  # characters; a line stays below PIPE_BUF, so a writable pipe takes it whole

    def __init__(self, stream: Any = None, max_lines: int = 1000) -> None:
        self.stream = stream or sys.stdout
        self.dropped = 0
        self._lines: queue.Queue[str] = queue.Queue(maxsize=max(1, max_lines))
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._write_lines, name="console", daemon=True)
        self._thread.start()

    def _line(self, text: str) -> None:
        try:
            self._lines.put_nowait(text[: self.MAX_LINE] + "\n")
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("console: standard output is not being read; dropping lines")

    def close(self, timeout: float = 0.2) -> None:
        """Write what is queued for up to ``timeout`` seconds, then stop (the rest is dropped)."""
        deadline = time.monotonic() + timeout
        while not self._lines.empty() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        self._closing.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self.dropped:
            log.warning("console: %d line(s) dropped (output not read)", self.dropped)

    def _write_lines(self) -> None:
        while not self._closing.is_set():
            try:
                text = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            # Wait until the stream takes the line without blocking: a thread stuck in write()
            # would hold stdout's lock, and the interpreter could not flush it at exit.
            while not self._closing.is_set() and not self._writable(0.2):
                pass
            if self._closing.is_set():
                return
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # closed or broken: the pipeline goes on regardless
                self.dropped += 1

    def _writable(self, timeout: float) -> bool:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return True  # not a file (a StringIO): writing cannot block
        try:
            return bool(select.select([], [fd], [], timeout)[1])
        except (OSError, ValueError):
            return True

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
    """JPEG files of transition frames; the oldest are deleted beyond ``max_files`` or
    ``max_mb`` (they share ``state_dir`` with the message queue: they must not fill its disk).

    A file is written under a temporary name and renamed when whole, so a full disk leaves no
    truncated or zero-byte JPEG; what an earlier run left so (a power cut) is deleted at start.
    """

    def __init__(self, config: SnapshotConfig, state_dir: Path) -> None:
        self.config = config
        self.directory = config.directory or state_dir / "snapshots"
        self._lock = threading.Lock()
        self._files: collections.deque[tuple[Path, int]] | None = None  # oldest first
        self._bytes = 0

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
                    # Once: what earlier runs left. Then tracked in memory, so a transition
                    # costs no directory listing.
                    self._files = self._existing()
                    self._bytes = sum(size for _, size in self._files)
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
                path = self.directory / f"{camera}-{stamp}-{frame_id}.jpg"
                write_whole(path, jpeg)
                self._files.append((path, len(jpeg)))
                self._bytes += len(jpeg)
                self._prune()
            return path
        except OSError as exc:
            log.warning("snapshot not saved in %s: %s", self.directory, exc)
            return None

    def _existing(self) -> collections.deque[tuple[Path, int]]:
        """The snapshots on disk, oldest first; zero-byte and half-written ones deleted."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.directory.iterdir():
            if not path.name.endswith((".jpg", PARTIAL)):
                continue
            info = path.stat()
            if info.st_size == 0 or path.name.endswith(PARTIAL):
                path.unlink(missing_ok=True)
                log.info("snapshot %s: deleted (%d bytes, left unfinished)", path, info.st_size)
            else:
                found.append((info.st_mtime, path, info.st_size))
        return collections.deque((path, size) for _, path, size in sorted(found))

    def _prune(self) -> None:
        assert self._files is not None
        max_bytes = self.config.max_mb * 1e6
        # The newest one stays even when it alone is over the size bound.
        while len(self._files) > self.config.max_files or (
            self._bytes > max_bytes and len(self._files) > 1
        ):
            path, size = self._files.popleft()
            path.unlink(missing_ok=True)
            self._bytes -= size


PARTIAL = ".partial"  # suffix of a snapshot being written


def write_whole(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: written aside, then renamed."""
    partial = path.with_name(path.name + PARTIAL)
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise
