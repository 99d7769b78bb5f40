"""What the page shows, as the daemon's sinks see it: :class:`WebHub` is a
:class:`~device.publish.sinks.Sink` beside MQTT and the console, so ``/api/state`` is the very
payload the MQTT state topic gets, and the page's live updates follow every state change.

The workers call the sink methods from their threads; the page's handlers read from the event
loop of the web server. :class:`Notifier` is the bridge: it wakes asyncio waiters from any
thread, without the publishing thread ever waiting on the web server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class Wakeup:
    """One asyncio waiter of a :class:`Notifier` (one page, one MJPEG viewer)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set_threadsafe(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True when notified within ``timeout`` s (since the last wait)."""
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for
                    await self._event.wait()
        woken = self._event.is_set()
        self._event.clear()
        return woken

    def close(self) -> None:
        self._notifier.remove(self)


class Notifier:
    """Wakes every registered asyncio waiter; ``notify`` may be called from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[Wakeup] = set()

    def waiter(self) -> Wakeup:
        """A new waiter, for the running event loop; ``close()`` it when done."""
        wakeup = Wakeup(self)
        with self._lock:
            self._waiters.add(wakeup)
        return wakeup

    def remove(self, wakeup: Wakeup) -> None:
        with self._lock:
            self._waiters.discard(wakeup)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._waiters)

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for wakeup in waiters:
            wakeup.set_threadsafe()


@dataclass(frozen=True)
class EventRecord:
    """A transition event as published, numbered, with the snapshot that came with it."""

    id: int
    camera: str
    event: dict[str, Any]
    jpeg: bytes | None

    def to_dict(self) -> dict[str, Any]:
        snapshot = f"api/events/{self.id}/snapshot" if self.jpeg is not None else None
        return {"id": self.id, "camera": self.camera, "snapshot": snapshot, "event": self.event}


# One entry of the change log the live page follows: (number, kind, camera, data).
Change = tuple[int, str, str, Any]


class WebHub:
    """The latest state, source status and snapshot of every camera, and the last events.

    ``state`` and ``status`` bodies are what MQTT publishes (``device`` added as the publisher
    adds it; ``seq`` is MQTT's own delivery counter and stays there). Memory is bounded: one
    state, status and snapshot per camera, ``max_events`` events, ``max_changes`` log entries.
    """

    def __init__(
        self, device_id: str, cameras: Iterable[str], max_events: int, max_changes: int = 500
    ) -> None:
        self.device_id = device_id
        self.cameras = list(cameras)
        self.notifier = Notifier()
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._statuses: dict[str, dict[str, Any]] = {}
        self._snapshots: dict[str, bytes] = {}
        self._pending: dict[str, bytes] = {}  # a camera's snapshot, until its event comes
        self._events: collections.deque[EventRecord] = collections.deque(maxlen=max_events)
        self._changes: collections.deque[Change] = collections.deque(maxlen=max_changes)
        self._count = 0
        self._event_ids = 0
        now = time.monotonic()
        # time.monotonic() since when each camera has delivered no frames (None: streaming).
        self._down_since: dict[str, float | None] = {name: now for name in self.cameras}

    # -- the Sink side (workers' and capture threads' calls): never blocks on the page -------

    def publish_state(self, camera: str, payload: dict) -> None:
        body = dict(payload)
        body.setdefault("device", self.device_id)
        with self._lock:
            self._states[camera] = body
            self._log("state", camera, body)
        self.notifier.notify()

    def publish_event(self, camera: str, payload: dict) -> None:
        body = dict(payload)
        body.setdefault("device", self.device_id)
        with self._lock:
            self._event_ids += 1
            record = EventRecord(self._event_ids, camera, body, self._pending.pop(camera, None))
            self._events.append(record)
            self._log("event", camera, record.to_dict())
        self.notifier.notify()

    def publish_snapshot(self, camera: str, jpeg: bytes) -> None:
        with self._lock:
            self._snapshots[camera] = self._pending[camera] = bytes(jpeg)

    def publish_status(self, camera: str, payload: dict) -> None:
        body = dict(payload) | {"camera": camera}
        with self._lock:
            self._statuses[camera] = body
            if payload.get("state") == "streaming":
                self._down_since[camera] = None
            elif self._down_since.get(camera) is None:
                self._down_since[camera] = time.monotonic()
            self._log("status", camera, body)
        self.notifier.notify()

    def _log(self, kind: str, camera: str, data: Any) -> None:
        self._count += 1
        self._changes.append((self._count, kind, camera, data))

    # -- the page's side ------------------------------------------------------------------

    def states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._states)

    def state(self, camera: str) -> dict[str, Any] | None:
        with self._lock:
            return self._states.get(camera)

    def statuses(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._statuses)

    def snapshot(self, camera: str) -> bytes | None:
        with self._lock:
            return self._snapshots.get(camera)

    def events(self, limit: int) -> list[EventRecord]:
        """The last ``limit`` events, newest first."""
        with self._lock:
            return list(reversed(self._events))[:limit]

    def event(self, event_id: int) -> EventRecord | None:
        with self._lock:
            return next((e for e in self._events if e.id == event_id), None)

    def down_since(self, camera: str) -> float | None:
        with self._lock:
            return self._down_since.get(camera)

    @property
    def cursor(self) -> int:
        """The number of the newest change: a page that has seen everything up to here."""
        with self._lock:
            return self._count

    def changes_after(self, cursor: int) -> list[Change] | None:
        """The changes after ``cursor``; None when some were already forgotten (start over)."""
        with self._lock:
            if self._count - cursor > len(self._changes):
                return None
            return [c for c in self._changes if c[0] > cursor]
