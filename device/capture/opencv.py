"""OpenCV-backed sources: USB / V4L2 cameras, network streams and video files.

* :class:`OpenCVSource`: a USB / V4L2 camera (index, ``/dev/video*``, ``/dev/v4l/by-id/...``)
  or a network stream (``rtsp://``, ``http(s)://``...) through ``cv2.VideoCapture``.
* :class:`VideoFileSource`: a video file, replayed at its own rate (or ``source_fps``),
  optionally looped. The camera stand-in of the tests.

Both read Motion-JPEG compressed and decode it themselves when they can (see
:mod:`device.capture.mjpeg`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from device.capture.base import Frame, SourceError, make_frame, redact_url
from device.capture.mjpeg import MjpegFrames

log = logging.getLogger(__name__)

DEFAULT_VIDEO_FPS = 25.0  # when a file does not say

STREAM_TIMEOUT_MS = 5000  # open and read timeouts of network streams
# Low-latency FFmpeg options for network streams (TCP: UDP loses packets on Wi-Fi and
# smears frames). Used only when the user has not set OPENCV_FFMPEG_CAPTURE_OPTIONS.
FFMPEG_STREAM_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000"

# One lock around every VideoCapture construction: the FFmpeg options travel in an
# environment variable that must not leak into another thread's open.
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _ffmpeg_options(options: str | None) -> Iterator[None]:
    """Open captures under the module lock, with FFmpeg options when given (and not the
    user's own OPENCV_FFMPEG_CAPTURE_OPTIONS)."""
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    with _OPEN_LOCK:
        if options is None or key in os.environ:
            yield
            return
        os.environ[key] = options
        try:
            yield
        finally:
            os.environ.pop(key, None)


def _resize(image: np.ndarray, width: int | None, height: int | None) -> np.ndarray:
    """Resize to the requested size when one is set (a recorded source cannot be asked)."""
    if width is None and height is None:
        return image
    h, w = image.shape[:2]
    if width is None:
        width = round(w * height / h)  # type: ignore[operator]
    if height is None:
        height = round(h * width / w)
    if (w, h) == (width, height):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _read_capture(
    cap: cv2.VideoCapture, mjpeg: MjpegFrames | None
) -> tuple[np.ndarray, bytes | None] | None:
    """The next frame of ``cap`` (and its JPEG when ``mjpeg`` decodes it); None if none."""
    if mjpeg is not None:
        return mjpeg.read()
    ok, image = cap.read()
    return (image, None) if ok and image is not None else None


class _OpenCVCapture:
    """What the OpenCV-backed sources share: the capture, its MJPEG reader, and closing."""

    _cap: cv2.VideoCapture | None = None
    _mjpeg: MjpegFrames | None = None
    _mjpeg_allowed = True  # False once its packets proved not to be JPEG

    def snapshot(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        if self._mjpeg is not None and self._mjpeg.abandoned:
            self._mjpeg_allowed = False  # reopen with OpenCV's own decoding
        self._mjpeg = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class OpenCVSource(_OpenCVCapture):
    """A USB / V4L2 camera (index or device path) or a network stream, through OpenCV.

    A read that returns no frame is a failure (unplugged camera, dropped stream): it raises
    :class:`SourceError` and the capture thread reopens the source.
    """

    live = True
    frame_interval = None

    def __init__(
        self,
        target: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        description: str | None = None,
        min_size: tuple[int, int] | None = None,
    ) -> None:
        self.target = target
        self.width, self.height = width, height
        self.min_size = min_size  # what inference needs; MJPEG is decoded no smaller
        self.is_stream = isinstance(target, str) and "://" in target
        if description is None:
            if self.is_stream:
                description = f"stream {redact_url(str(target))}"
            elif isinstance(target, int):
                description = f"USB camera {target}"
            else:
                description = f"camera {target}"
        self.description = description
        self._frame_id = 0

    def _device_path(self) -> str | None:
        if isinstance(self.target, int):
            return f"/dev/video{self.target}" if sys.platform.startswith("linux") else None
        return None if self.is_stream else self.target

    def open(self) -> None:
        self.close()
        path = self._device_path()
        if path is not None and not os.path.exists(path):
            raise SourceError(f"{self.description}: {path} does not exist (camera not attached?)")
        cap = self._construct_capture()
        if not cap.isOpened():
            cap.release()
            why = "unreachable, wrong URL or credentials" if self.is_stream else "busy or no video"
            raise SourceError(f"{self.description}: cannot open ({why})")
        self._configure(cap)
        self._cap = cap
        backend: Literal["ffmpeg", "v4l2"] = "ffmpeg" if self.is_stream else "v4l2"
        if self._mjpeg_allowed and (self.is_stream or sys.platform.startswith("linux")):
            if MjpegFrames.enable(cap, backend):
                self._mjpeg = MjpegFrames(cap, self.description, self.min_size)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if self.width and self.height and size != (self.width, self.height):
            log.info(
                "%s: asked for %dx%d, the device delivers %dx%d",
                self.description,
                self.width,
                self.height,
                *size,
            )

    def _construct_capture(self) -> cv2.VideoCapture:
        if self.is_stream:
            # Open/read timeouts bound how long a dead stream can block the capture thread.
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]
            with _ffmpeg_options(FFMPEG_STREAM_OPTIONS):
                cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        else:
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            with _ffmpeg_options(None):
                cap = cv2.VideoCapture(self.target, api)
        return cap

    def _configure(self, cap: cv2.VideoCapture) -> None:
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        # A short driver queue: the capture thread reads continuously, so deeper queues only
        # add latency when it falls behind. Backends that cannot do it ignore the request.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1 if self.is_stream else 2)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.description}: read before open")
        got = _read_capture(self._cap, self._mjpeg)
        if got is None:
            raise SourceError(f"{self.description}: no frame (camera unplugged or stream lost)")
        self._frame_id += 1
        return make_frame(got[0], "BGR", self._frame_id, got[1])


class VideoFileSource(_OpenCVCapture):
    """A video file, paced by the capture thread at ``fps`` (default: the file's own rate).

    At the end: starts over when ``loop``, else returns None (end of stream). A file that
    opens but yields no frame at all raises :class:`SourceError`.
    """

    live = False

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float | None = None,
        loop: bool = False,
        width: int | None = None,
        height: int | None = None,
        min_size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = fps
        self.loop = loop
        self.width, self.height = width, height
        # A size asked for is produced by resizing the decoded frame: decode it whole then.
        self.min_size = min_size if width is None and height is None else None
        self.description = f"video {self.path}"
        self.frame_interval: float | None = None
        self._frame_id = 0
        self._frames_this_pass = 0

    def _open_capture(self) -> cv2.VideoCapture:
        self._mjpeg = None
        with _ffmpeg_options(None):
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
            if cap.isOpened():
                if self._mjpeg_allowed and MjpegFrames.enable(cap, "ffmpeg"):
                    self._mjpeg = MjpegFrames(cap, self.description, self.min_size)
            else:
                cap.release()
                cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.description}: not a readable video (corrupt or unknown)")
        return cap

    def open(self) -> None:
        self.close()
        if not self.path.exists():
            raise SourceError(f"{self.description}: no such file or device")
        if not self.path.is_file():
            raise SourceError(f"{self.description}: not a regular file")
        self._cap = self._open_capture()
        self._frames_this_pass = 0
        fps = self.fps
        if fps is None:
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            if not (math.isfinite(fps) and 0 < fps <= 1000):
                fps = DEFAULT_VIDEO_FPS
        self.frame_interval = 0.0 if math.isinf(fps) else 1.0 / fps

    def _next_image(self) -> tuple[np.ndarray, bytes | None] | None:
        assert self._cap is not None
        got = _read_capture(self._cap, self._mjpeg)
        if got is not None:
            return got
        if self._frames_this_pass == 0:
            raise SourceError(f"{self.description}: contains no readable frame")
        if not self.loop:
            return None
        # Start over: a seek is cheap, reopening is the fallback for files that cannot seek.
        self._frames_this_pass = 0
        if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self._cap.release()
            self._cap = self._open_capture()
        got = _read_capture(self._cap, self._mjpeg)
        if got is None:
            raise SourceError(f"{self.description}: cannot restart at the beginning")
        return got

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.description}: read before open")
        got = self._next_image()
        if got is None:
            return None
        self._frames_this_pass += 1
        self._frame_id += 1
        image, jpeg = got
        return make_frame(_resize(image, self.width, self.height), "BGR", self._frame_id, jpeg)
