"""Frame sources (cameras, streams, files, folders) and the capture thread that feeds inference.

The camera seam is one small interface, :class:`FrameSource` (``open`` / ``read`` /
``snapshot`` / ``close``), with these implementations:

* :class:`OpenCVSource`: a USB / V4L2 camera (index, ``/dev/video*``, ``/dev/v4l/by-id/...``)
  or a network stream (``rtsp://``, ``http(s)://``...) through ``cv2.VideoCapture``.
* :class:`VideoFileSource`: a video file, replayed at its own rate (or ``source_fps``),
  optionally looped. The camera stand-in of the tests.
* :class:`ImageFolderSource`: the images of a folder in name order; also the ``demo`` source
  (the sample photos shipped in ``models/samples``).
* :class:`Picamera2Source`: the Raspberry Pi camera; ``lores`` (YUV420) for inference and
  ``main`` (RGB888, i.e. BGR in memory) for snapshots.

:func:`open_source` turns a ``CameraConfig`` into one of them (``auto`` picks a Pi camera,
then ``/dev/video0``, then the demo).

Latest-frame design
-------------------
One :class:`CaptureThread` per camera reads frames as the source delivers them and hands each
to a :class:`LatestFrameSlot`, a one-frame mailbox: a new frame replaces one that inference
has not taken yet, and the replaced frame is counted as dropped. So a slow model never makes
a live camera's frames queue up (latency stays one frame, memory stays bounded), and a fast
model never waits longer than the next frame. The slot's counter is how the daemon reports
dropped frames.

Decoding a frame that is then dropped is wasted CPU, so the thread decodes no more than
it must:

* Live cameras deliver at their own pace; each frame is read once, as it arrives.
* Recorded sources (files, folders) are paced by the thread, not by the source: it decodes
  the next frame, then waits for its due time on an ``Event`` (no busy wait, and ``stop()``
  interrupts it), so it decodes exactly the frames it delivers. A file paced at its own rate
  has nothing to skip: if decoding falls behind, the schedule slips instead of bursting to
  catch up (like a camera would, minus the drops).
* ``source_fps: .inf`` replays a file as fast as inference takes the frames: the thread decodes
  one frame ahead and waits for the slot to be emptied before handing it over, so decoding
  overlaps inference and no frame is decoded for nothing (benchmarks, offline runs).

MJPEG: decode only the pixels inference needs
---------------------------------------------
USB webcams and many IP cameras send Motion-JPEG. For those (OpenCV's FFmpeg and V4L2
backends, when the stream's fourcc is MJPG) the source asks OpenCV for the compressed frames
and decodes them itself with libjpeg's DCT scaling, at 1/2, 1/4 or 1/8 of the camera's size
whenever the smaller picture still holds ``min_size`` (set by the daemon from the model's input
size and the region of interest): 640x480 for a 224-pixel model decodes at 320x240, which
costs less to decode and to preprocess. The camera's own JPEG travels with the frame
(``Frame.jpeg``), so a snapshot is the full-resolution original, never re-encoded. A stream
whose packets turn out not to be JPEG is reopened in OpenCV's normal mode for good; a corrupt
JPEG (a truncated USB transfer) is skipped and counted, and too many in a row fail the source,
which is then reopened in OpenCV's normal mode too.

Failures
--------
A source that fails (an exception, a live camera that delivers no frame, a frame of the wrong
shape) or ends (a file without ``loop``) is closed and reopened with exponential backoff and
jitter (``camera.reopen``). As the issue asks, a file without ``loop`` is therefore replayed
after the backoff delay: its status goes ``streaming -> ended -> streaming``. The thread never
dies because of its source; status changes (not frames) are logged and reported through
``on_status``. Frame ids are assigned by the thread, so they keep increasing across reopens.

Frames are read-only arrays (``flags.writeable`` is False): the capture and inference threads
and the snapshot writer share them, and a repeated image (the demo) is one array.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from device.config import CameraConfig
from device.inference.preprocess import FrameFormat, ImageError, fit_to_input, read_image
from device.paths import IMAGE_SUFFIXES, SAMPLES_DIR

log = logging.getLogger(__name__)

DEMO_DIR = SAMPLES_DIR
DEMO_SIZE = (640, 480)  # width, height
DEMO_FPS = 2.0
# Each demo photo is held this long, so the smoother sees a stable scene and publishes it.
DEMO_SECONDS_PER_PHOTO = 5.0
FOLDER_FPS = 2.0
DEFAULT_VIDEO_FPS = 25.0  # when a file does not say

STREAM_TIMEOUT_MS = 5000  # open and read timeouts of network streams
# Low-latency FFmpeg options for network streams (TCP: UDP loses packets on Wi-Fi and
# smears frames). Used only when the user has not set OPENCV_FFMPEG_CAPTURE_OPTIONS.
FFMPEG_STREAM_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000"

PICAMERA2_MAIN_SIZE = (1280, 960)  # default snapshot size when width/height are not set
PICAMERA2_LORES_WIDTH = 320
PICAMERA2_CAPTURE_TIMEOUT = 1.0  # s; a video configuration delivers ~30 frames in that time
SNAPSHOT_TIMEOUT = 1.0

V4L2_DEFAULT = "/dev/video0"  # what ``auto`` tries after the Pi camera

FPS_SMOOTHING = 0.1  # weight of the newest frame interval in the fps moving average
BACKPRESSURE_POLL = 0.2  # s; how often a waiting capture thread checks for stop()

#: libjpeg's DCT scaling: decoding at 1/k of the size does less work (IMREAD_REDUCED_*).
#: EXIF orientation is ignored, as OpenCV's own capture decoding does.
JPEG_SCALES: dict[int, int] = {
    k: flag | cv2.IMREAD_IGNORE_ORIENTATION
    for k, flag in (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
        (1, cv2.IMREAD_COLOR),
    )
}
MJPG_FOURCC = cv2.VideoWriter_fourcc(*"MJPG")
MAX_BAD_JPEGS = 10  # corrupt JPEG frames in a row before the source counts as failed

# One lock around every VideoCapture construction: the FFmpeg options travel in an
# environment variable that must not leak into another thread's open.
_OPEN_LOCK = threading.Lock()


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

    Optional attributes, read with defaults by :class:`CaptureThread`:

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
    image = frame.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        return f"frame is not a uint8 array ({getattr(image, 'dtype', type(image).__name__)})"
    if frame.format == "YUV420":
        ok = image.ndim == 2 and image.shape[0] % 3 == 0 and image.shape[0] > 0
        expected = "(H * 3 / 2, W)"
    elif frame.format == "GRAY":
        ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
        expected = "(H, W)"
    else:
        ok = image.ndim == 3 and image.shape[2] == 3
        expected = "(H, W, 3)"
    if not ok or 0 in image.shape:
        return f"frame of shape {image.shape} for format {frame.format}, expected {expected}"
    return None


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


# --------------------------------------------------------------------------- MJPEG


def jpeg_scale(width: int, height: int, min_size: tuple[int, int] | None) -> int:
    """The largest k of 8, 4, 2 such that a ``width`` x ``height`` JPEG decoded at 1/k is still
    at least ``min_size`` (width, height); 1 when none is, or when no minimum is given."""
    if min_size is None:
        return 1
    min_width, min_height = min_size
    for k in JPEG_SCALES:
        if width // k >= min_width and height // k >= min_height:
            return k
    return 1


class NotJpegError(SourceError):
    """An MJPEG capture's compressed frames are not JPEG: use OpenCV's own decoding."""


class MjpegFrames:
    """Turns a ``cv2.VideoCapture`` of a Motion-JPEG stream into frames decoded here.

    :meth:`enable` asks the capture for compressed frames (FFmpeg: ``CAP_PROP_FORMAT = -1``;
    V4L2: ``CAP_PROP_CONVERT_RGB = 0``), only when its fourcc is MJPG. :meth:`read` then
    decodes each JPEG at the scale :func:`jpeg_scale` picks from the first frame's size, and
    keeps the JPEG itself for snapshots.
    """

    def __init__(self, cap: cv2.VideoCapture, description: str, min_size: tuple[int, int] | None):
        self.cap = cap
        self.description = description
        self.min_size = min_size
        self.scale: int | None = None  # chosen at the first frame
        self.corrupt = 0  # JPEG frames that did not decode, since open
        # Set when decoding here failed (a packet that is not JPEG, or too many corrupt ones
        # in a row): the source then reopens with OpenCV's own decoding.
        self.abandoned = False

    @staticmethod
    def enable(cap: cv2.VideoCapture, backend: Literal["ffmpeg", "v4l2"]) -> bool:
        """Switch ``cap`` to compressed frames if it carries MJPEG; True if it did."""
        if int(cap.get(cv2.CAP_PROP_FOURCC)) != MJPG_FOURCC:
            return False
        if backend == "ffmpeg":
            return bool(cap.set(cv2.CAP_PROP_FORMAT, -1))
        return bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))

    def read(self) -> tuple[np.ndarray, bytes] | None:
        """The next decoded frame and its JPEG; None when the capture delivers nothing.

        Raises:
            SourceError: a packet that is not a JPEG at all (:class:`NotJpegError`), or
                :data:`MAX_BAD_JPEGS` corrupt ones in a row; either way :attr:`abandoned` is
                set and the source reopens with OpenCV's own decoding.
        """
        for _ in range(MAX_BAD_JPEGS):
            ok, packet = self.cap.read()
            if not ok or packet is None or packet.size == 0:
                return None
            jpeg = packet.tobytes()
            if not jpeg.startswith(b"\xff\xd8"):
                self.abandoned = True
                raise NotJpegError(f"{self.description}: the MJPEG stream's frames are not JPEG")
            if self.scale is None:  # the first frame: full size, to learn the camera's
                image = cv2.imdecode(packet, JPEG_SCALES[1])
                if image is not None:
                    self.scale = jpeg_scale(image.shape[1], image.shape[0], self.min_size)
                    if self.scale > 1:
                        image = cv2.imdecode(packet, JPEG_SCALES[self.scale])
            else:
                image = cv2.imdecode(packet, JPEG_SCALES[self.scale])
            if image is not None:
                return image, jpeg
            self.corrupt += 1
            level = logging.WARNING if self.corrupt == 1 else logging.DEBUG
            log.log(level, "%s: skipped a corrupt JPEG frame", self.description)
        self.abandoned = True
        raise SourceError(f"{self.description}: {MAX_BAD_JPEGS} corrupt JPEG frames in a row")


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


# --------------------------------------------------------------------------- OpenCV live


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
        if not cap.isOpened():
            cap.release()
            why = "unreachable, wrong URL or credentials" if self.is_stream else "busy or no video"
            raise SourceError(f"{self.description}: cannot open ({why})")
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        # A short driver queue: the capture thread reads continuously, so deeper queues only
        # add latency when it falls behind. Backends that cannot do it ignore the request.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1 if self.is_stream else 2)
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

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.description}: read before open")
        got = _read_capture(self._cap, self._mjpeg)
        if got is None:
            raise SourceError(f"{self.description}: no frame (camera unplugged or stream lost)")
        self._frame_id += 1
        return make_frame(got[0], "BGR", self._frame_id, got[1])


# --------------------------------------------------------------------------- recordings


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


class ImageFolderSource:
    """The images of a folder in name order, each delivered ``repeat`` times.

    The folder is listed again at every pass, so images added meanwhile are picked up. Files
    without an image suffix are ignored; an image that cannot be decoded is skipped with one
    warning (once per file, not per pass). With ``size``, images are letterboxed to it.
    """

    live = False

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float = FOLDER_FPS,
        loop: bool = True,
        size: tuple[int, int] | None = None,
        repeat: int = 1,
        description: str | None = None,
    ) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.path = Path(path)
        self.loop = loop
        self.size = size
        self.repeat = repeat
        self.description = description or f"image folder {self.path}"
        self.frame_interval = 0.0 if math.isinf(fps) else 1.0 / fps
        self._queue: list[Path] = []
        self._bad: set[Path] = set()
        self._delivered_this_pass = 0
        self._current: np.ndarray | None = None
        self._repeats_left = 0
        self._frame_id = 0

    def _list(self) -> list[Path]:
        try:
            entries = sorted(self.path.iterdir())
        except OSError as exc:
            raise SourceError(f"{self.description}: cannot list ({exc.strerror or exc})") from None
        return [
            p
            for p in entries
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ]

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"{self.description}: no such folder")
        self._queue = [p for p in self._list() if p not in self._bad]
        if not self._queue:
            raise SourceError(f"{self.description}: no images (expected {sorted(IMAGE_SUFFIXES)})")
        self._delivered_this_pass = 0
        self._current, self._repeats_left = None, 0

    def _decode(self, path: Path) -> np.ndarray | None:
        try:
            image = read_image(str(path))
        except (ImageError, OSError) as exc:
            self._bad.add(path)
            log.warning("%s: skipping %s", self.description, exc)
            return None
        if self.size is not None:
            width, height = self.size
            image = fit_to_input(image, height, width, fit="letterbox", interpolation="linear")
        return image

    def _next_image(self) -> np.ndarray | None:
        while True:
            while self._queue:
                image = self._decode(self._queue.pop(0))
                if image is not None:
                    self._delivered_this_pass += 1
                    return image
            if self._delivered_this_pass == 0:
                raise SourceError(f"{self.description}: no readable image")
            if not self.loop:
                return None
            self._queue = [p for p in self._list() if p not in self._bad]
            self._delivered_this_pass = 0

    def read(self) -> Frame | None:
        if self._repeats_left == 0:
            image = self._next_image()
            if image is None:
                return None
            image.flags.writeable = False
            self._current, self._repeats_left = image, self.repeat
        assert self._current is not None
        self._repeats_left -= 1
        self._frame_id += 1
        return make_frame(self._current, "BGR", self._frame_id)

    def snapshot(self) -> np.ndarray | None:
        return None

    def close(self) -> None:
        self._queue = []
        self._current, self._repeats_left = None, 0


def demo_source(camera: CameraConfig) -> ImageFolderSource:
    """The shipped sample photos, looping, each held ~DEMO_SECONDS_PER_PHOTO seconds."""
    fps = camera.source_fps if camera.source_fps and math.isfinite(camera.source_fps) else DEMO_FPS
    size = (camera.width or DEMO_SIZE[0], camera.height or DEMO_SIZE[1])
    return ImageFolderSource(
        DEMO_DIR,
        fps=fps,
        loop=True,
        size=size,
        repeat=max(1, round(DEMO_SECONDS_PER_PHOTO * fps)),
        description=f"demo (sample photos, {size[0]}x{size[1]})",
    )


# --------------------------------------------------------------------------- Pi camera


def i420_from_padded(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """picamera2's YUV420 array -> packed I420 ``(height * 3 / 2, width)``.

    picamera2 returns YUV420 as ``(height * 3 / 2, stride)``: ``height`` rows of Y, then the U
    and V planes whose rows are ``stride / 2`` bytes, two per array row. When the stride has
    padding, the plain ``[:, :width]`` crop would mix U and V rows, so each plane is cropped.
    """
    rows, stride = array.shape
    if rows != height * 3 // 2 or stride < width:
        raise SourceError(f"YUV420 array of shape {array.shape} for {width}x{height}")
    if stride == width:
        return array
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = array[:height, :width]
    chroma = array[height:].reshape(height, stride // 2)[:, : width // 2]  # U rows, V rows
    out[height:] = chroma.reshape(height // 2, width)
    return out


PICAMERA2_MISSING = (
    "picamera2 cannot be imported ({error}). On Raspberry Pi OS install it with "
    "`sudo apt install python3-picamera2`; a virtualenv sees it only when created with "
    "--system-site-packages."
)
NUMPY_TRAP = (
    " The numpy in the virtualenv does not match the one python3-picamera2 was built "
    "against: keep numpy < 2 there, or pip install simplejpeg into the virtualenv."
)


def _import_picamera2() -> type:
    try:
        from picamera2 import Picamera2  # Raspberry Pi OS only; imported when used
    except Exception as exc:  # ImportError, or ValueError from a numpy 1.x/2.x mismatch
        message = PICAMERA2_MISSING.format(error=f"{type(exc).__name__}: {exc}")
        if "numpy" in str(exc) or "dtype size changed" in str(exc):
            message += NUMPY_TRAP
        raise SourceError(message) from exc
    return Picamera2


class Picamera2Source:
    """The Raspberry Pi camera through picamera2 (libcamera).

    One video configuration with two streams from the ISP: ``lores`` (YUV420, 320 px wide,
    the aspect ratio of ``main``) for inference, and ``main`` (RGB888 at the requested size,
    or 1280x960) for snapshots. picamera2's "RGB888" is stored [B, G, R] per pixel (the
    picamera2 manual's format table: "RGB888 - 24 bits per pixel, ordered [B, G, R]"), so
    ``main`` is already OpenCV's BGR. Requests are always released (try/finally), or the
    camera runs out of buffers and stalls.

    ``snapshot()`` may be called from any thread: it asks the capture thread to copy
    ``main`` from the next request and waits up to ``SNAPSHOT_TIMEOUT`` for it, so every
    picamera2 call happens on the capture thread.
    """

    live = True
    frame_interval = None

    def __init__(
        self,
        width: int | None = None,
        height: int | None = None,
        lores_width: int = PICAMERA2_LORES_WIDTH,
    ) -> None:
        if width and height:
            self.main_size = (width, height)
        elif width:
            self.main_size = (width, round(width * PICAMERA2_MAIN_SIZE[1] / PICAMERA2_MAIN_SIZE[0]))
        elif height:
            self.main_size = (
                round(height * PICAMERA2_MAIN_SIZE[0] / PICAMERA2_MAIN_SIZE[1]),
                height,
            )
        else:
            self.main_size = PICAMERA2_MAIN_SIZE
        main_w, main_h = self.main_size
        lores_w = min(lores_width, main_w) // 2 * 2
        self.lores_size = (lores_w, max(2, round(lores_w * main_h / main_w / 2) * 2))
        self.description = f"picamera2 lores {self.lores_size[0]}x{self.lores_size[1]}"
        self._camera = None
        self._frame_id = 0
        self._want_main = threading.Event()
        self._main_ready = threading.Event()
        self._main: np.ndarray | None = None
        self._snapshot_lock = threading.Lock()

    def open(self) -> None:
        self.close()
        picamera2 = _import_picamera2()
        try:
            camera = picamera2()
        except Exception as exc:
            raise SourceError(
                f"{self.description}: no camera found or it is busy ({type(exc).__name__}: "
                f"{exc}); check the cable and `rpicam-hello --list-cameras`"
            ) from exc
        try:
            config = camera.create_video_configuration(
                main={"size": self.main_size, "format": "RGB888"},
                lores={"size": self.lores_size, "format": "YUV420"},
            )
            if hasattr(camera, "align_configuration"):
                camera.align_configuration(config)  # sizes the ISP can produce efficiently
            camera.configure(config)
            camera.start()
            actual = (getattr(camera, "camera_config", None) or {}).get("lores", {}).get("size")
            if actual:
                self.lores_size = (int(actual[0]), int(actual[1]))
        except Exception as exc:
            with contextlib.suppress(Exception):
                camera.close()
            raise SourceError(
                f"{self.description}: cannot start ({type(exc).__name__}: {exc})"
            ) from exc
        self._camera = camera

    def read(self) -> Frame | None:
        camera = self._camera
        if camera is None:
            raise SourceError(f"{self.description}: read before open")
        try:
            request = camera.capture_request(wait=PICAMERA2_CAPTURE_TIMEOUT)
        except TimeoutError as exc:
            # The pending job would take (and leak) a later request: cancel it.
            with contextlib.suppress(Exception):
                camera.cancel_all_and_flush()
            raise SourceError(
                f"{self.description}: no frame within {PICAMERA2_CAPTURE_TIMEOUT:g} s"
            ) from exc
        except Exception as exc:
            raise SourceError(
                f"{self.description}: capture failed ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            lores = request.make_array("lores")  # a copy: valid after release
            if self._want_main.is_set():
                self._main = request.make_array("main")
                self._want_main.clear()
                self._main_ready.set()
        except Exception as exc:
            raise SourceError(
                f"{self.description}: bad request ({type(exc).__name__}: {exc})"
            ) from exc
        finally:
            request.release()
        width, height = self.lores_size
        self._frame_id += 1
        return make_frame(i420_from_padded(lores, width, height), "YUV420", self._frame_id)

    def snapshot(self) -> np.ndarray | None:
        with self._snapshot_lock:
            if self._camera is None:
                return None
            self._main_ready.clear()
            self._want_main.set()
            if not self._main_ready.wait(SNAPSHOT_TIMEOUT):
                self._want_main.clear()
                return None
            image, self._main = self._main, None
            return image

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
        except Exception as exc:
            log.warning("%s: stop failed: %s", self.description, exc)
        try:
            camera.close()
        except Exception as exc:
            log.warning("%s: close failed: %s", self.description, exc)


# --------------------------------------------------------------------------- factory


def _pi_camera_attached() -> tuple[bool, str]:
    try:
        picamera2 = _import_picamera2()
    except SourceError as exc:
        cause = exc.__cause__
        return False, f"picamera2 not importable ({type(cause).__name__})"
    try:
        cameras = picamera2.global_camera_info()
    except Exception as exc:
        return False, f"picamera2 cannot list cameras ({type(exc).__name__}: {exc})"
    # libcamera lists USB webcams too; those are better served by V4L2.
    csi = [c for c in cameras if "/usb" not in str(c.get("Id", ""))]
    if csi:
        return True, f"Pi camera {csi[0].get('Model', '?')} attached"
    return False, "no Pi camera attached"


def _v4l2_opens(path: str) -> tuple[bool, str]:
    if not os.path.exists(path):
        return False, f"{path} does not exist"
    source = OpenCVSource(path)
    try:
        source.open()
        source.read()
    except SourceError as exc:
        return False, str(exc)
    finally:
        source.close()
    return True, f"{path} delivers frames"


def resolve_auto() -> tuple[str, str]:
    """The source ``auto`` stands for here, and why: a Pi camera, /dev/video0, or the demo."""
    pi, why_pi = _pi_camera_attached()
    if pi:
        return "picamera2", why_pi
    usb, why_usb = _v4l2_opens(V4L2_DEFAULT)
    if usb:
        return V4L2_DEFAULT, f"{why_pi}; {why_usb}"
    return "demo", f"{why_pi}; {why_usb}"


def open_source(camera: CameraConfig, min_size: tuple[int, int] | None = None) -> FrameSource:
    """The source a camera's ``source`` names (not opened yet).

    ``0`` / ``"0"``: OpenCV device index. ``/dev/...``: V4L2 device by path. ``scheme://...``:
    a network stream (FFmpeg). ``picamera2``. ``demo``. ``auto``. An existing folder: its
    images. Anything else is a video file (a missing one fails at ``open()``).
    ``min_size`` (width, height): the smallest frame inference can use; MJPEG sources decode
    at a fraction of the camera's size down to it (see the module docstring).
    """
    source = camera.source
    width, height = camera.width, camera.height
    if isinstance(source, int) or source.strip().isdigit():
        return OpenCVSource(int(source), width=width, height=height, min_size=min_size)
    text = source.strip()
    if text == "auto":
        chosen, why = resolve_auto()
        log.info("camera %s: source auto -> %s (%s)", camera.name, chosen, why)
        return open_source(camera.model_copy(update={"source": chosen}), min_size)
    if text == "demo":
        return demo_source(camera)
    if text == "picamera2":
        return Picamera2Source(width, height)
    if text.startswith("/dev/"):
        return OpenCVSource(text, width=width, height=height, min_size=min_size)
    if "://" in text and not text.startswith("file://"):
        return OpenCVSource(text, width=width, height=height, min_size=min_size)
    path = Path(text.removeprefix("file://")).expanduser()
    if path.is_dir():
        return ImageFolderSource(
            path,
            fps=camera.source_fps or FOLDER_FPS,
            loop=camera.loop,
            size=(width, height) if width and height else None,
        )
    return VideoFileSource(
        path,
        fps=camera.source_fps,
        loop=camera.loop,
        width=width,
        height=height,
        min_size=min_size,
    )


# --------------------------------------------------------------------------- hand-off


class LatestFrameSlot:
    """Latest-frame-wins hand-off between capture and inference (a one-frame mailbox)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._dropped = 0
        self._closed = False

    def put(self, frame: Frame) -> None:
        """Offer a frame; it replaces one not yet taken, which counts as dropped."""
        with self._cond:
            if self._closed:
                return
            if self._frame is not None:
                self._dropped += 1
            self._frame = frame
            self._cond.notify_all()

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
            self._frame = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dropped(self) -> int:
        """Frames replaced before inference took them."""
        return self._dropped


# --------------------------------------------------------------------------- capture thread

SourceState = Literal["starting", "streaming", "reconnecting", "ended", "stopped"]


@dataclass
class SourceStatus:
    """What a camera's capture is doing; published by the daemon on changes and in stats."""

    state: SourceState
    reason: str
    frames: int = 0
    dropped: int = 0
    reopens: int = 0  # successful opens after the first
    fps: float = 0.0  # moving average of the delivered frame rate
    source: str = ""  # the source's description (never a password)
    since: float = field(default_factory=time.time)  # time.time() of the last state change


def backoff_delay(attempt: int, min_delay: float, max_delay: float, rng: float) -> float:
    """Exponential backoff with "equal jitter": in [d/2, d] for d = min * 2**attempt <= max."""
    delay = min(max_delay, min_delay * 2 ** min(attempt, 60))
    return delay * (0.5 + 0.5 * rng)


class CaptureThread(threading.Thread):
    """Reads one camera into a :class:`LatestFrameSlot`, reopening it on failure forever.

    ``sleep``, ``clock`` and ``rng`` exist for tests. By default the waits (backoff, pacing)
    are ``Event.wait`` calls that :meth:`stop` interrupts.
    """

    def __init__(
        self,
        camera: CameraConfig,
        slot: LatestFrameSlot,
        *,
        source_factory: Callable[[CameraConfig], FrameSource] = open_source,
        on_status: Callable[[str, SourceStatus], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(name=f"capture-{camera.name}", daemon=True)
        self.camera = camera
        self.slot = slot
        self._factory = source_factory
        self._on_status = on_status
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._status = SourceStatus("starting", "opening the source", source=str(camera.source))
        self._source: FrameSource | None = None
        self._opened_once = False
        self._frame_id = 0
        self._logged_errors: set[str] = set()

    # -- public

    @property
    def status(self) -> SourceStatus:
        """A copy of the current status (``dropped`` read from the slot)."""
        with self._lock:
            return replace(self._status, dropped=self.slot.dropped)

    @property
    def source(self) -> FrameSource | None:
        return self._source

    def snapshot(self) -> np.ndarray | None:
        """The source's full-resolution frame when it has one (see ``FrameSource``)."""
        source = self._source
        if source is None:
            return None
        try:
            return source.snapshot()
        except Exception as exc:
            log.warning("camera %s: snapshot failed: %s", self.camera.name, exc)
            return None

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing and wait up to ``timeout`` s for the thread to end.

        A read blocked inside a driver (bounded by the source's read timeout) can outlast
        ``timeout``; the thread is a daemon thread and then finishes on its own.
        """
        self._stop_event.set()
        if threading.current_thread() is self or not self.is_alive():
            return
        self.join(timeout)
        if self.is_alive():
            log.warning("camera %s: capture still busy after %.1f s", self.camera.name, timeout)

    # -- internals

    def _wait(self, seconds: float) -> bool:
        """Sleep (interruptibly); True when stop() was called."""
        if self._sleep is None:
            return self._stop_event.wait(max(0.0, seconds))
        self._sleep(max(0.0, seconds))
        return self._stop_event.is_set()

    def _set_state(self, state: SourceState, reason: str, *, force: bool = False) -> None:
        with self._lock:
            if not force and (state, reason) == (self._status.state, self._status.reason):
                return
            self._status.state, self._status.reason = state, reason
            self._status.since = time.time()
            if state != "streaming":
                self._status.fps = 0.0
            snapshot = replace(self._status, dropped=self.slot.dropped)
        level = logging.WARNING if state in ("reconnecting", "ended") else logging.INFO
        log.log(level, "camera %s: %s (%s)", self.camera.name, state, reason)
        if self._on_status is not None:
            try:
                self._on_status(self.camera.name, snapshot)
            except Exception as exc:
                self._log_once(f"on_status callback failed: {exc!r}", exc)

    def _log_once(self, message: str, exc: BaseException) -> None:
        """Traceback for an unexpected exception, once per distinct message."""
        if message in self._logged_errors:
            return
        if len(self._logged_errors) < 100:
            self._logged_errors.add(message)
        log.error("camera %s: %s", self.camera.name, message, exc_info=exc)

    def _reason(self, what: str, exc: BaseException, source: FrameSource | None) -> str:
        if isinstance(exc, SourceError):
            return str(exc)
        name = source.description if source is not None else f"source {self.camera.source}"
        reason = f"{name}: {what}: {type(exc).__name__}: {exc}"
        self._log_once(reason, exc)
        return reason

    def run(self) -> None:
        self._set_state("starting", "opening the source", force=True)
        attempt = 0
        while not self._stop_event.is_set():
            state: SourceState
            try:
                state, reason, delivered = self._session()
            except Exception as exc:  # a bug of ours: never let it end capture
                state, delivered = "reconnecting", False
                reason = self._reason("capture error", exc, self._source)
            if self._stop_event.is_set():
                break
            if delivered:
                attempt = 0  # the source worked: the next failure starts from min_delay
            self._set_state(state, reason)
            backoff = self.camera.reopen
            delay = backoff_delay(attempt, backoff.min_delay, backoff.max_delay, self._rng())
            attempt += 1
            if self._wait(delay):
                break
        self._set_state("stopped", "stopped")

    def _session(self) -> tuple[SourceState, str, bool]:
        """Open the source and stream until it fails, ends or stop(); (state, reason, any)."""
        if self._source is None:
            try:
                self._source = self._factory(self.camera)
            except Exception as exc:
                return "reconnecting", self._reason("cannot create", exc, None), False
            with self._lock:
                self._status.source = self._source.description
        source = self._source
        try:
            source.open()
        except Exception as exc:
            with contextlib.suppress(Exception):
                source.close()
            return "reconnecting", self._reason("cannot open", exc, source), False
        try:
            if self._opened_once:
                with self._lock:
                    self._status.reopens += 1
            self._opened_once = True
            return self._stream(source)
        finally:
            try:
                source.close()
            except Exception as exc:
                self._reason("close failed", exc, source)

    def _stream(self, source: FrameSource) -> tuple[SourceState, str, bool]:
        live = bool(getattr(source, "live", True))
        interval = getattr(source, "frame_interval", None)
        pace = interval is not None and interval > 0
        backpressure = not live and interval == 0
        delivered = False
        due: float | None = None
        last: float | None = None
        mean_interval: float | None = None
        live_shape: tuple[int, ...] | None = None
        while not self._stop_event.is_set():
            try:
                frame = source.read()
            except Exception as exc:
                return "reconnecting", self._reason("read failed", exc, source), delivered
            if frame is None:
                if live:
                    return "reconnecting", f"{source.description}: delivered no frame", delivered
                return "ended", f"{source.description}: end of stream", delivered
            problem = check_frame(frame)
            if problem is None and live:
                # A live camera that changes resolution mid-stream is renegotiated.
                if live_shape is None:
                    live_shape = frame.image.shape
                elif frame.image.shape != live_shape:
                    problem = f"frame shape changed from {live_shape} to {frame.image.shape}"
            if problem is not None:
                return "reconnecting", f"{source.description}: {problem}", delivered
            if pace:
                now = self._clock()
                due = now if due is None else due + interval  # type: ignore[operator]
                if due > now:
                    if self._wait(due - now):
                        break
                elif now - due > interval:  # type: ignore[operator]
                    due = now  # fell behind (slow decode): slip, do not burst
            if backpressure:
                while not self.slot.wait_taken(BACKPRESSURE_POLL):
                    if self._stop_event.is_set():
                        return "stopped", "stopped", delivered
            now = self._clock()
            self._frame_id += 1
            stamps: dict[str, float] = {}
            if pace or backpressure:
                # Delivered now: that is the moment a camera would have captured it.
                stamps = {"captured_at": time.time(), "monotonic": now}
            self.slot.put(replace(frame, frame_id=self._frame_id, **stamps))
            if last is not None and now > last:
                dt = now - last
                mean_interval = dt if mean_interval is None else mean_interval
                mean_interval += FPS_SMOOTHING * (dt - mean_interval)
            last = now
            with self._lock:
                self._status.frames += 1
                if mean_interval:
                    self._status.fps = 1.0 / mean_interval
            if not delivered:
                delivered = True
                self._set_state("streaming", source.description)
        return "stopped", "stopped", delivered
