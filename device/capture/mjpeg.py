"""MJPEG: decode only the pixels inference needs.

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
"""

from __future__ import annotations

import logging
from typing import Literal

import cv2
import numpy as np

from device.capture.base import SourceError
from device.inference.preprocess import REDUCED_COLOR, jpeg_scale

__all__ = ["JPEG_SCALES", "MAX_BAD_JPEGS", "MjpegFrames", "NotJpegError", "jpeg_scale"]

log = logging.getLogger(__name__)

#: libjpeg's DCT scaling (see device.inference.preprocess.jpeg_scale). EXIF orientation is
#: ignored, as OpenCV's own capture decoding does.
JPEG_SCALES: dict[int, int] = {
    k: flag | cv2.IMREAD_IGNORE_ORIENTATION for k, flag in REDUCED_COLOR.items()
}
MJPG_FOURCC = cv2.VideoWriter_fourcc(*"MJPG")
MAX_BAD_JPEGS = 10  # corrupt JPEG frames in a row before the source counts as failed


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
            image = self._decode(packet)
            if image is not None:
                return image, jpeg
            self.corrupt += 1
            level = logging.WARNING if self.corrupt == 1 else logging.DEBUG
            log.log(level, "%s: skipped a corrupt JPEG frame", self.description)
        self.abandoned = True
        raise SourceError(f"{self.description}: {MAX_BAD_JPEGS} corrupt JPEG frames in a row")

    def _decode(self, packet: np.ndarray) -> np.ndarray | None:
        """One JPEG at the chosen scale; None when it is corrupt."""
        if self.scale is not None:
            return cv2.imdecode(packet, JPEG_SCALES[self.scale])
        # The first frame is decoded at full size, to learn the camera's.
        image = cv2.imdecode(packet, JPEG_SCALES[1])
        if image is not None:
            self.scale = jpeg_scale(image.shape[1], image.shape[0], self.min_size)
            if self.scale > 1:
                image = cv2.imdecode(packet, JPEG_SCALES[self.scale])
        return image
