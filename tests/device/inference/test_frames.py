"""Frame formats and regions of interest: each function on synthetic arrays."""

import numpy as np
import pytest

from device.inference.frames import crop_roi, gray_plane, shape_problem, to_bgr, to_gray


def quadrant_frame(h: int = 40, w: int = 60) -> np.ndarray:
    """BGR frame: left half pure blue, right half pure red."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = (255, 0, 0)
    frame[:, w // 2 :] = (0, 0, 255)
    return frame


def i420_frame(h: int = 4, w: int = 6, y: int = 200) -> np.ndarray:
    """Planar I420: a constant Y plane of (h, w), then neutral U and V planes."""
    frame = np.full((h * 3 // 2, w), 128, np.uint8)
    frame[:h] = y
    return frame


def test_roi_crops_fractions_of_the_frame():
    frame = quadrant_frame(40, 60)
    right = crop_roi(frame, (0.5, 0.0, 0.5, 1.0))
    assert right.shape == (40, 30, 3) and (right == (0, 0, 255)).all()
    with pytest.raises(ValueError, match="roi"):
        crop_roi(frame, (0.5, 0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="roi"):
        crop_roi(frame, (1.2, 0.0, 0.5, 0.5))


def test_crop_roi_is_a_view_and_none_keeps_the_frame():
    frame = quadrant_frame(40, 60)
    assert crop_roi(frame, None) is frame
    top_left = crop_roi(frame, (0.0, 0.0, 0.25, 0.5))
    assert top_left.shape == (20, 15, 3) and np.shares_memory(top_left, frame)


def test_crop_roi_refuses_a_region_that_rounds_to_nothing():
    with pytest.raises(ValueError, match="empty on a 4x4 frame"):
        crop_roi(np.zeros((4, 4), np.uint8), (0.0, 0.0, 0.01, 0.01))


@pytest.mark.parametrize(
    ("shape", "frame_format"),
    [
        ((4, 6, 3), "BGR"),
        ((4, 6, 3), "RGB"),
        ((4, 6), "GRAY"),
        ((4, 6, 1), "GRAY"),
        ((6, 6), "YUV420"),
    ],
)
def test_usable_frames_have_no_shape_problem(shape, frame_format):
    assert shape_problem(np.zeros(shape, np.uint8), frame_format) is None


@pytest.mark.parametrize(
    ("image", "frame_format", "message"),
    [
        (np.zeros((4, 6, 3), np.float32), "BGR", "not a uint8 array (float32)"),
        ([[0, 1]], "BGR", "not a uint8 array (list)"),
        (np.zeros((4, 6, 3), np.uint8), "HSV", "unknown frame format 'HSV'"),
        (np.zeros((4, 6), np.uint8), "BGR", "expected (H, W, 3)"),
        (np.zeros((4, 6, 3), np.uint8), "GRAY", "expected (H, W)"),
        (np.zeros((5, 6), np.uint8), "YUV420", "expected (H * 3 / 2, W)"),
        (np.zeros((0, 6, 3), np.uint8), "RGB", "frame of shape (0, 6, 3)"),
    ],
)
def test_shape_problem_says_what_is_wrong(image, frame_format, message):
    problem = shape_problem(image, frame_format)
    assert problem is not None and message in problem


def test_gray_plane_is_a_view_of_gray_and_yuv_frames_only():
    yuv = i420_frame(4, 6, y=200)
    plane = gray_plane(yuv, "YUV420")
    assert plane.shape == (4, 6) and (plane == 200).all() and np.shares_memory(plane, yuv)
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert gray_plane(gray, "GRAY") is gray
    single = gray[..., None]
    assert gray_plane(single, "GRAY").shape == (4, 6)
    assert np.array_equal(gray_plane(single, "GRAY"), gray)
    assert gray_plane(quadrant_frame(), "BGR") is None
    assert gray_plane(quadrant_frame(), "RGB") is None


def test_to_gray_weighs_the_channels_in_their_order():
    blue_bgr = np.zeros((2, 2, 3), np.uint8)
    blue_bgr[..., 0] = 255
    blue_rgb = blue_bgr[..., ::-1].copy()
    # Blue carries the smallest luma weight (0.114): about 29 of 255.
    assert (to_gray(blue_bgr, "BGR") == 29).all()
    assert (to_gray(blue_rgb, "RGB") == 29).all()
    assert to_gray(blue_bgr, "BGR").shape == (2, 2)
    assert (to_gray(i420_frame(4, 6, y=90), "YUV420") == 90).all()


def test_to_bgr_from_every_format():
    bgr = quadrant_frame(4, 6)
    assert to_bgr(bgr, "BGR") is bgr
    assert np.array_equal(to_bgr(bgr[..., ::-1].copy(), "RGB"), bgr)
    gray = np.full((4, 6), 77, np.uint8)
    assert (to_bgr(gray, "GRAY") == 77).all() and to_bgr(gray, "GRAY").shape == (4, 6, 3)
    assert (to_bgr(gray[..., None], "GRAY") == 77).all()
    # Neutral chroma: every channel equals the luma.
    from_yuv = to_bgr(i420_frame(4, 6, y=120), "YUV420")
    assert from_yuv.shape == (4, 6, 3) and (np.abs(from_yuv.astype(int) - 120) <= 1).all()
