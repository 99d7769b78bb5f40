"""Camera frame formats and regions of interest: the one place that knows their layouts.

A frame is a uint8 array in one of four layouts. Capture checks them, preprocessing, the motion
gate and snapshots convert them; all of them go through these functions.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

# BGR / RGB: (H, W, 3); GRAY: (H, W) or (H, W, 1); YUV420: planar I420 of shape (H * 3 / 2, W),
# what picamera2's lores stream gives on a Pi 4.
FrameFormat = Literal["BGR", "RGB", "YUV420", "GRAY"]
# Region of interest as fractions of the frame: (x, y, width, height), each in [0, 1].
Roi = tuple[float, float, float, float]

_EXPECTED_SHAPE = {
    "BGR": "(H, W, 3)",
    "RGB": "(H, W, 3)",
    "GRAY": "(H, W)",
    "YUV420": "(H * 3 / 2, W)",
}
_TO_BGR = {"RGB": cv2.COLOR_RGB2BGR, "GRAY": cv2.COLOR_GRAY2BGR, "YUV420": cv2.COLOR_YUV2BGR_I420}
_TO_GRAY = {"BGR": cv2.COLOR_BGR2GRAY, "RGB": cv2.COLOR_RGB2GRAY}


def shape_problem(image: object, frame_format: str) -> str | None:
    """What is wrong with an array for its frame format, or None if it is usable."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        return f"frame is not a uint8 array ({getattr(image, 'dtype', type(image).__name__)})"
    if frame_format not in _EXPECTED_SHAPE:
        return f"unknown frame format {frame_format!r} (expected one of {sorted(_EXPECTED_SHAPE)})"
    if frame_format == "YUV420":
        ok = image.ndim == 2 and image.shape[0] % 3 == 0 and image.shape[0] > 0
    elif frame_format == "GRAY":
        ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
    else:
        ok = image.ndim == 3 and image.shape[2] == 3
    if not ok or 0 in image.shape:
        expected = _EXPECTED_SHAPE[frame_format]
        return f"frame of shape {image.shape} for format {frame_format}, expected {expected}"
    return None


def gray_plane(image: np.ndarray, frame_format: FrameFormat) -> np.ndarray | None:
    """The gray image without any conversion when the format holds one (a view), else None:
    the Y plane of YUV420, the single channel of GRAY."""
    if frame_format == "YUV420":
        return image[: image.shape[0] * 2 // 3]
    if frame_format == "GRAY":
        return image if image.ndim == 2 else image[..., 0]
    return None


def to_gray(image: np.ndarray, frame_format: FrameFormat) -> np.ndarray:
    """One gray channel, (H, W)."""
    plane = gray_plane(image, frame_format)
    return plane if plane is not None else cv2.cvtColor(image, _TO_GRAY[frame_format])


def to_bgr(image: np.ndarray, frame_format: FrameFormat) -> np.ndarray:
    """Three channels in OpenCV's BGR order (the array itself when it already is)."""
    if frame_format == "BGR":
        return image
    if frame_format == "GRAY" and image.ndim == 3:
        image = image[..., 0]
    return cv2.cvtColor(image, _TO_BGR[frame_format])


def crop_roi(frame: np.ndarray, roi: Roi | None) -> np.ndarray:
    """Crop a region given as fractions of the frame (a view, no copy)."""
    if roi is None:
        return frame
    x, y, w, h = roi
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
        raise ValueError(f"roi {roi}: x, y must be in [0, 1) and width, height in (0, 1]")
    height, width = frame.shape[:2]
    x0, y0 = round(x * width), round(y * height)
    x1, y1 = min(width, round((x + w) * width)), min(height, round((y + h) * height))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"roi {roi} is empty on a {width}x{height} frame")
    return frame[y0:y1, x0:x1]
