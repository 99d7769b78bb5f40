"""The latest-frame hand-off between a camera's capture thread and its inference worker."""

from __future__ import annotations

import threading

from device.capture.base import Frame


class LatestFrameSlot:
    """Latest-frame-wins hand-off between capture and inference (a one-frame mailbox)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._latest: Frame | None = None  # the newest put, taken or not (for peek)
        self._dropped = 0
        self._closed = False

    def put(self, frame: Frame) -> None:
        """Offer a frame; it replaces one not yet taken, which counts as dropped."""
        with self._cond:
            if self._closed:
                return
            if self._frame is not None:
                self._dropped += 1
            self._frame = self._latest = frame
            self._cond.notify_all()

    def peek(self, newer_than: int | None = None, timeout: float | None = 0.0) -> Frame | None:
        """The newest frame put, whether inference took it or not, without taking it (the web
        page's stream reads it so: inference still gets every frame it would have).

        With ``newer_than``, waits up to ``timeout`` s for a frame whose ``frame_id`` is above
        it; None if none came, or once the slot is closed. Frames are read-only: copy to draw.
        """

        def fresh() -> bool:
            latest = self._latest
            return latest is not None and (newer_than is None or latest.frame_id > newer_than)

        with self._cond:
            if not self._cond.wait_for(lambda: fresh() or self._closed, timeout):
                return None
            return None if self._closed else self._latest

    def get(self, timeout: float | None) -> Frame | None:
        """Take the newest frame not taken yet, waiting up to ``timeout`` s for one.

        None on timeout or once the slot is closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            if self._closed:
                return None
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def wait_taken(self, timeout: float | None) -> bool:
        """Wait until the slot holds no frame (the last one was taken); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._frame is None or self._closed, timeout)

    def close(self) -> None:
        """Wake every waiter; later gets return None and later puts are ignored."""
        with self._cond:
            self._closed = True
            self._frame = self._latest = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Frames replaced before inference took them."""
        return self._dropped
