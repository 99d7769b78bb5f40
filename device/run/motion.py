"""Motion gating: skip inference while the scene is static.

Each frame is reduced to a small, lightly blurred gray image (:func:`small_gray`); the
fraction of its pixels whose gray level moved by at least ``pixel_delta`` (:func:`motion_fraction`)
decides whether the frame is worth classifying.

The reference is the last frame that was *inferred*, not the previous frame: a slow change
(a slug crossing a trap, a door opening gently) moves few pixels between two consecutive frames
but accumulates against the last inferred one until it counts. Lighting drift accumulates the
same way and then costs one inference, after which the reference is the new light.

Cost per 640x480 frame (small_gray + motion_fraction, 2-core x86 dev machine, numpy 2 /
OpenCV 5, best of repeated runs): BGR 0.12-0.15 ms, YUV420 0.09 ms; up to ~0.3 ms for BGR
when the other core is busy. ``python bench/motion_cost.py`` measures it.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.config import MotionConfig
from device.inference.frames import FrameFormat, Roi, crop_roi, gray_plane, shape_problem, to_gray
from device.inference.preprocess import ImageError, resize

# 160x120 keeps a 4x4 box of a 640x480 frame per pixel: enough to see a hand or an insect
# in a trap, and 16x fewer pixels to compare.
MOTION_SIZE = (160, 120)


def small_gray(
    image: np.ndarray,
    frame_format: FrameFormat,
    size: tuple[int, int] = MOTION_SIZE,
    roi: Roi | None = None,
) -> np.ndarray:
    """A small gray version of a frame, for cheap comparison.

    YUV420 (planar I420, shape (h * 3 / 2, w)) uses its Y plane directly; BGR and RGB are
    converted to gray, then shrunk with a box filter. ``roi``
    (fractions of the frame) restricts motion to the region the model sees. A 3x3 Gaussian
    blur after the shrink takes away most of the remaining sensor noise. ``size`` is
    (width, height); images already smaller are not enlarged.
    """
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ImageError("motion: empty frame")
    problem = shape_problem(image, frame_format)
    if problem is not None:
        raise ImageError(f"motion: {problem}")
    plane = gray_plane(image, frame_format)  # YUV420 and GRAY: no conversion at all
    if plane is not None:
        image = crop_roi(plane, roi)
    else:
        # Gray first: converting the full frame then shrinking one channel measured ~2x
        # faster (0.12 ms) than shrinking three channels then converting (0.23 ms).
        image = to_gray(crop_roi(image, roi), frame_format)
    h, w = image.shape[:2]
    image = resize(image, min(size[0], w), min(size[1], h), "area")
    return cv2.GaussianBlur(image, (3, 3), 0)


def motion_fraction(previous: np.ndarray, current: np.ndarray, pixel_delta: int) -> float:
    """Fraction of pixels whose gray level changed by at least ``pixel_delta``."""
    if previous.shape != current.shape:
        raise ValueError(f"motion: frames differ in shape, {previous.shape} vs {current.shape}")
    diff = cv2.absdiff(previous, current)
    return float(np.count_nonzero(diff >= pixel_delta)) / diff.size


class MotionGate:
    """Decides per frame whether to run inference; see the module docstring.

    Infers on the first frame, whenever motion against the last inferred frame reaches
    ``min_area``, at least every ``force_interval`` seconds, and always when the gate is
    disabled (then nothing is computed). Times ``at`` are passed in (a monotonic clock).
    """

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self._reference: np.ndarray | None = None
        self._last_inferred_at: float | None = None
        self._skipped = 0
        self._last_fraction = 0.0

    @property
    def skipped(self) -> int:
        """Frames the gate has turned away."""
        return self._skipped

    @property
    def last_fraction(self) -> float:
        """Motion fraction of the last frame judged (1.0 for a first or reshaped frame)."""
        return self._last_fraction

    def reset(self) -> None:
        """Forget the reference frame (e.g. after the source was reopened)."""
        self._reference = None
        self._last_inferred_at = None

    def should_infer(
        self,
        image: np.ndarray,
        frame_format: FrameFormat,
        at: float,
        *,
        roi: Roi | None = None,
        force: bool = False,
    ) -> bool:
        """True when this frame should be classified; it then becomes the reference.

        ``force`` infers regardless (e.g. while the smoother has a transition pending) and
        still updates the reference, so the next comparison starts from this frame.
        """
        if not self.config.enabled:
            return True
        gray = small_gray(image, frame_format, roi=roi)
        reference = self._reference
        if reference is None or reference.shape != gray.shape:
            # First frame, or the source changed resolution: nothing to compare with.
            self._last_fraction = 1.0
        else:
            self._last_fraction = motion_fraction(reference, gray, self.config.pixel_delta)
        last = self._last_inferred_at
        due = (
            last is None
            or at < last  # the clock went back: do not wait for it to catch up
            or at - last >= self.config.force_interval
        )
        if force or due or self._last_fraction >= self.config.min_area:
            self._reference = gray
            self._last_inferred_at = at
            return True
        self._skipped += 1
        return False
