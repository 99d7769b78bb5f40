"""A camera's live MJPEG: the latest frame with the current label drawn on, at a capped rate.

Encoding happens in a thread of the stream's own, started by the first viewer and ended with
the last one: with nobody watching, nothing is encoded. It reads the newest frame from the
camera's latest-frame slot without taking it (``LatestFrameSlot.peek``), draws on a copy
(frames are read-only and shared), and every viewer of the camera gets the same JPEG: two
viewers cost one encoding. Inference never waits for it: the slot's lock is held for a read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from device.capture import Frame, LatestFrameSlot
from device.config import WebConfig
from device.inference.frames import to_bgr
from device.web.hub import Notifier

log = logging.getLogger(__name__)

BOUNDARY = "kestrelframe"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"


def state_caption(state: dict[str, Any] | None) -> str:
    """The text drawn on the picture: the labels and scores, or the hierarchy path."""
    if not state or not state.get("labels"):
        return "-"
    path = state.get("hierarchy") or []
    if path:
        leaf = path[-1]
        return " > ".join(x["label"] for x in path) + f" {leaf.get('score', 0.0):.2f}"
    return ", ".join(f"{x['label']} {x['score']:.2f}" for x in state["labels"])


def render_jpeg(frame: Frame, caption: str, max_width: int, quality: int) -> bytes:
    """The frame as BGR, scaled down to ``max_width`` if wider, caption drawn on, as JPEG."""
    image = to_bgr(frame.image, frame.format)
    height, width = image.shape[:2]
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    elif image is frame.image or not image.flags.writeable:
        image = np.array(image)  # the shared frame stays untouched
    scale = max(0.4, image.shape[1] / 640)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = round(6 * scale)
    cv2.rectangle(image, (0, 0), (text_w + 2 * pad, text_h + base + 2 * pad), (0, 0, 0), -1)
    origin = (pad, pad + text_h)
    cv2.putText(image, caption, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def multipart_part(jpeg: bytes) -> bytes:
    """One part of the multipart/x-mixed-replace body."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode("ascii") + jpeg + b"\r\n"


class CameraStream:
    """The MJPEG of one camera, shared by its viewers."""

    def __init__(
        self,
        camera: str,
        slot: LatestFrameSlot,
        caption: Callable[[], str],
        config: WebConfig,
    ) -> None:
        self.camera = camera
        self.slot = slot
        self.caption = caption
        self.config = config
        self.notifier = Notifier()  # wakes the viewers on each new JPEG
        self.encoded = 0  # JPEGs made so far (tests, the bench)
        self.encode_ms = 0.0  # moving average of one encoding
        self._lock = threading.Lock()
        self._viewers = 0
        self._latest: tuple[int, bytes] | None = None  # (number, JPEG)
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def viewers(self) -> int:
        with self._lock:
            return self._viewers

    def latest(self) -> tuple[int, bytes] | None:
        with self._lock:
            return self._latest

    def join(self) -> None:
        """A viewer arrives: the encoder runs from now on."""
        with self._lock:
            self._viewers += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._encode_loop, name=f"mjpeg-{self.camera}", daemon=True
                )
                self._thread.start()

    def leave(self) -> None:
        """A viewer is gone; the encoder stops with the last one (within a frame)."""
        with self._lock:
            self._viewers = max(0, self._viewers - 1)
            if self._viewers == 0:
                self._latest = None  # a later viewer must not get a stale picture first

    def close(self) -> None:
        """End the stream; its thread (a daemon thread) ends within one slot wait."""
        self._closed.set()
        self.notifier.notify()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _watched(self) -> bool:
        with self._lock:
            return self._viewers > 0 and not self._closed.is_set()

    def _encode_loop(self) -> None:
        period = 1.0 / self.config.stream_fps
        last_id: int | None = None
        next_due = time.monotonic()
        while self._watched():
            wait = next_due - time.monotonic()
            if wait > 0 and self._closed.wait(wait):
                break
            frame = self.slot.peek(newer_than=last_id, timeout=0.5)
            if frame is None:
                if self.slot.closed:
                    break
                continue
            last_id = frame.frame_id
            next_due = max(next_due + period, time.monotonic())
            self._encode(frame)
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None

    def _encode(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        try:
            jpeg = render_jpeg(
                frame, self.caption(), self.config.stream_width, self.config.jpeg_quality
            )
        except (ValueError, cv2.error) as exc:  # the viewer misses a frame, nothing else
            log.warning("%s: stream frame %d not encoded: %s", self.camera, frame.frame_id, exc)
            return
        ms = (time.perf_counter() - t0) * 1e3
        self.encode_ms = ms if not self.encoded else self.encode_ms + 0.1 * (ms - self.encode_ms)
        with self._lock:
            self.encoded += 1
            if self._viewers == 0:
                return  # the last viewer left meanwhile: no stale picture for the next one
            self._latest = (self.encoded, jpeg)
        self.notifier.notify()
