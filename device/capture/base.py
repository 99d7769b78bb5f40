"""The camera seam: the :class:`Frame` a source delivers and the :class:`FrameSource` interface.

Frames are read-only arrays (``flags.writeable`` is False): the capture and inference threads
and the snapshot writer share them, and a repeated image (the demo) is one array.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from device.inference import frames
from device.inference.frames import FrameFormat


class SourceError(RuntimeError):
    """A source cannot be opened or stopped delivering; the message says which and why."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is BGR uint8 ``(H, W, 3)``, or planar I420 ``(H * 3 / 2, W)`` when ``format`` is
    ``"YUV420"`` (picamera2's lores stream). It is read-only: copy it before drawing on it.
    """

    image: np.ndarray
    format: FrameFormat
    frame_id: int  # increasing per source, across reopens
    captured_at: float  # time.time() at capture (latency measurements, payload timestamps)
    monotonic: float  # time.monotonic() at capture
    jpeg: bytes | None = None  # the camera's own JPEG of this frame (MJPEG), full size

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        height, width = self.image.shape[:2]
        return (width, height * 2 // 3) if self.format == "YUV420" else (width, height)


def make_frame(
    image: np.ndarray, fmt: FrameFormat, frame_id: int, jpeg: bytes | None = None
) -> Frame:
    """Stamp an image as captured now; the array becomes read-only."""
    image.flags.writeable = False
    return Frame(image, fmt, frame_id, time.time(), time.monotonic(), jpeg)


@runtime_checkable
class FrameSource(Protocol):
    """The one small interface of the camera seam.

    Optional attributes, read with defaults by :class:`~device.capture.thread.CaptureThread`:

    * ``live: bool`` (default True): a camera or stream that delivers at its own pace; a
      ``None`` from ``read`` is then a failure, not an end.
    * ``frame_interval: float | None`` (default None): seconds between frames of a recorded
      source; the capture thread paces it. ``0`` means as fast as the consumer takes them.
    """

    description: str  # e.g. "USB camera 0"; never contains a password

    def open(self) -> None:
        """Open the device / file / stream; raise :class:`SourceError` saying why not."""

    def read(self) -> Frame | None:
        """The next frame (blocks at most ~a timeout); None at the end of a recording."""

    def snapshot(self) -> np.ndarray | None:
        """A full-resolution BGR frame when the source has a better one than its frames."""

    def close(self) -> None:
        """Release the device; safe to call twice and to ``open()`` again afterwards."""


def check_frame(frame: Frame) -> str | None:
    """What is wrong with a frame's array for its format, or None if it is usable."""
    return frames.shape_problem(frame.image, frame.format)


def redact_url(url: str) -> str:
    """A stream URL fit for logs: the password and the query (often a token) are masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))
