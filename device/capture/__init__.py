"""Frame sources (cameras, streams, files, folders) and the capture thread that feeds inference.

The camera seam is one small interface, :class:`FrameSource` (``open`` / ``read`` /
``snapshot`` / ``close``, in :mod:`~device.capture.base`), with one module per kind of source:

* :mod:`~device.capture.opencv`: :class:`OpenCVSource` (USB / V4L2 cameras, network streams)
  and :class:`VideoFileSource` (video files, the camera stand-in of the tests).
* :mod:`~device.capture.mjpeg`: Motion-JPEG decoded at the scale inference needs.
* :mod:`~device.capture.folder`: :class:`ImageFolderSource` and the ``demo`` source.
* :mod:`~device.capture.picamera2`: :class:`Picamera2Source`, the Raspberry Pi camera.

:func:`open_source` (:mod:`~device.capture.registry`) turns a ``CameraConfig`` into one of them
(``auto`` picks a Pi camera, then ``/dev/video0``, then the demo). One :class:`CaptureThread`
per camera (:mod:`~device.capture.thread`) reads it into a :class:`LatestFrameSlot`
(:mod:`~device.capture.handoff`) and reopens it when it fails.
"""

from device.capture.base import Frame, FrameSource, SourceError, check_frame, make_frame, redact_url
from device.capture.folder import ImageFolderSource, demo_source
from device.capture.handoff import LatestFrameSlot
from device.capture.mjpeg import MjpegFrames, NotJpegError, jpeg_scale
from device.capture.opencv import OpenCVSource, VideoFileSource
from device.capture.picamera2 import Picamera2Source, i420_from_padded
from device.capture.registry import open_source, resolve_auto
from device.capture.thread import CaptureThread, SourceState, SourceStatus, backoff_delay

__all__ = [
    "CaptureThread",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LatestFrameSlot",
    "MjpegFrames",
    "NotJpegError",
    "OpenCVSource",
    "Picamera2Source",
    "SourceError",
    "SourceState",
    "SourceStatus",
    "VideoFileSource",
    "backoff_delay",
    "check_frame",
    "demo_source",
    "i420_from_padded",
    "jpeg_scale",
    "make_frame",
    "open_source",
    "redact_url",
    "resolve_auto",
]
