"""From a camera's configured ``source`` to a :class:`FrameSource`: one factory per source kind.

``auto`` picks a Pi camera, then ``/dev/video0``, then the demo; the probes that decide live here.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from device.capture.base import FrameSource, SourceError
from device.capture.folder import FOLDER_FPS, ImageFolderSource, demo_source
from device.capture.opencv import OpenCVSource, VideoFileSource
from device.capture.picamera2 import Picamera2Source, import_picamera2
from device.config import CameraConfig

log = logging.getLogger(__name__)

V4L2_DEFAULT = "/dev/video0"  # what ``auto`` tries after the Pi camera

SourceKind = Literal["index", "auto", "demo", "picamera2", "device", "stream", "folder", "file"]
NAMED_SOURCES = ("auto", "demo", "picamera2")
# Network protocols FFmpeg (OpenCV's stream backend) opens; anything else is a typo.
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "rtp", "udp", "tcp", "srt")
SOURCE_KINDS = (
    "a camera index (0, 1, ...), auto, demo, picamera2, a device (/dev/video0, "
    "/dev/v4l/by-id/...), a stream (" + ", ".join(f"{s}://" for s in STREAM_SCHEMES) + "), "
    "a video file or a folder of images"
)
MinSize = tuple[int, int] | None
SourceFactory = Callable[[CameraConfig, MinSize], FrameSource]


def source_kind(source: int | str) -> SourceKind:
    """Which kind of source a camera's ``source`` names (a key of :data:`SOURCE_FACTORIES`)."""
    if isinstance(source, int) or source.strip().isdigit():
        return "index"
    text = source.strip()
    if text in NAMED_SOURCES:
        return text  # type: ignore[return-value]
    if text.startswith("/dev/"):
        return "device"
    if "://" in text and not text.startswith("file://"):
        return "stream"
    return "folder" if _local_path(text).is_dir() else "file"


def source_problem(source: int | str) -> str | None:
    """Why a camera's ``source`` names nothing Kestrel can open (with the valid kinds and a
    "did you mean" hint), or None. Devices may be plugged in later, so only their form counts."""
    kind = source_kind(source)
    text = str(source).strip()
    if kind == "stream":
        scheme = text.split("://", 1)[0].lower()
        if scheme in STREAM_SCHEMES:
            return None
        return _with_hint(f"unknown scheme {scheme}://", scheme, STREAM_SCHEMES, "://...")
    if kind != "file" or _local_path(text).is_file():
        return None
    return _with_hint(f"{text!r}: no such file or folder", text, NAMED_SOURCES, "")


def _with_hint(problem: str, written: str, candidates: tuple[str, ...], tail: str) -> str:
    close = difflib.get_close_matches(written.lower(), candidates, n=len(candidates), cutoff=0.6)
    close.sort(key=lambda c: abs(len(c) - len(written)))  # rtps: rtsp (swapped) before rtsps
    hint = f"; did you mean {close[0]}{tail}?" if close else ""
    return f"{problem}{hint} (a source is {SOURCE_KINDS})"


def _local_path(text: str) -> Path:
    return Path(text.removeprefix("file://")).expanduser()


def _opencv_device(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    """A V4L2 device by path (``/dev/...``) or a network stream (``scheme://...``)."""
    target = str(camera.source).strip()
    return OpenCVSource(target, width=camera.width, height=camera.height, min_size=min_size)


def _opencv_index(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    target = int(camera.source)
    return OpenCVSource(target, width=camera.width, height=camera.height, min_size=min_size)


def _auto(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    chosen, why = resolve_auto()
    log.info("camera %s: source auto -> %s (%s)", camera.name, chosen, why)
    return open_source(camera.model_copy(update={"source": chosen}), min_size)


def _demo(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    return demo_source(camera)


def _picamera2(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    return Picamera2Source(camera.width, camera.height)


def _image_folder(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    width, height = camera.width, camera.height
    return ImageFolderSource(
        _local_path(str(camera.source).strip()),
        fps=camera.source_fps or FOLDER_FPS,
        loop=camera.loop,
        size=(width, height) if width and height else None,
        min_size=min_size,
    )


def _video_file(camera: CameraConfig, min_size: MinSize) -> FrameSource:
    return VideoFileSource(
        _local_path(str(camera.source).strip()),
        fps=camera.source_fps,
        loop=camera.loop,
        width=camera.width,
        height=camera.height,
        min_size=min_size,
    )


SOURCE_FACTORIES: dict[SourceKind, SourceFactory] = {
    "index": _opencv_index,
    "auto": _auto,
    "demo": _demo,
    "picamera2": _picamera2,
    "device": _opencv_device,
    "stream": _opencv_device,
    "folder": _image_folder,
    "file": _video_file,
}


def open_source(camera: CameraConfig, min_size: MinSize = None) -> FrameSource:
    """The source a camera's ``source`` names (not opened yet).

    ``0`` / ``"0"``: OpenCV device index. ``/dev/...``: V4L2 device by path. ``scheme://...``:
    a network stream (FFmpeg). ``picamera2``. ``demo``. ``auto``. An existing folder: its
    images. Anything else is a video file (a missing one fails at ``open()``).
    ``min_size`` (width, height): the smallest frame inference can use; MJPEG sources and
    image folders decode JPEGs at a fraction of their size down to it (libjpeg's scaling).
    """
    return SOURCE_FACTORIES[source_kind(camera.source)](camera, min_size)


def resolve_auto() -> tuple[str, str]:
    """The source ``auto`` stands for here, and why: a Pi camera, /dev/video0, or the demo."""
    pi, why_pi = _pi_camera_attached()
    if pi:
        return "picamera2", why_pi
    usb, why_usb = _v4l2_opens(V4L2_DEFAULT)
    if usb:
        return V4L2_DEFAULT, f"{why_pi}; {why_usb}"
    return "demo", f"{why_pi}; {why_usb}"


def _pi_camera_attached() -> tuple[bool, str]:
    try:
        picamera2 = import_picamera2()
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
