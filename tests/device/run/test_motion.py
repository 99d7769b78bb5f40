"""Motion gating on a real photo with synthetic sensor noise and a synthetic moving object."""

from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.config import MotionConfig
from device.inference.preprocess import ImageError, read_image
from device.run.motion import MotionGate, motion_fraction, small_gray

NOISE_SIGMA = 3.0


@pytest.fixture(scope="module")
def scene(samples_dir: Path) -> np.ndarray:
    """A real 640x480 BGR scene: the shipped rocket photo."""
    image = read_image(str(samples_dir / "rocket.jpg"))
    return cv2.resize(image, (640, 480), interpolation=cv2.INTER_AREA)


def noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same scene as a sensor sees it again: Gaussian noise, sigma 3 gray levels."""
    noise = rng.normal(0.0, NOISE_SIGMA, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def with_square(image: np.ndarray, x: int, y: int, side: int = 80) -> np.ndarray:
    out = image.copy()
    cv2.rectangle(out, (x, y), (x + side, y + side), (20, 200, 240), thickness=-1)
    return out


def yuv(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


def gate(**overrides) -> MotionGate:
    return MotionGate(MotionConfig(**{"enabled": True, **overrides}))


def test_small_gray_shapes_for_every_format(scene):
    assert small_gray(scene, "BGR").shape == (120, 160)
    assert small_gray(scene[..., ::-1], "RGB").shape == (120, 160)
    assert small_gray(yuv(scene), "YUV420").shape == (120, 160)
    gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    assert small_gray(gray, "GRAY").shape == (120, 160)
    # The Y plane of I420 is the same luminance (in video range, 16..235).
    luma = small_gray(yuv(scene), "YUV420").astype(np.float32)
    gray = small_gray(scene, "BGR").astype(np.float32)
    assert np.corrcoef(luma.ravel(), gray.ravel())[0, 1] > 0.999
    # A small region is not enlarged.
    assert small_gray(scene, "BGR", roi=(0.5, 0.5, 0.2, 0.2)).shape == (96, 128)


def test_small_gray_rejects_bad_frames(scene):
    with pytest.raises(ImageError, match="uint8"):
        small_gray(scene.astype(np.float32), "BGR")
    with pytest.raises(ImageError, match="YUV420"):
        small_gray(scene[..., 0][:479], "YUV420")
    with pytest.raises(ImageError, match="empty"):
        small_gray(np.zeros((0, 0, 3), np.uint8), "BGR")
    with pytest.raises(ValueError, match="shape"):
        motion_fraction(np.zeros((2, 2), np.uint8), np.zeros((3, 3), np.uint8), 25)


def test_sensor_noise_is_not_motion(scene):
    rng = np.random.default_rng(0)
    motion = gate()
    assert motion.should_infer(noisy(scene, rng), "BGR", 0.0)  # the first frame always
    decisions = [motion.should_infer(noisy(scene, rng), "BGR", 0.1 * i) for i in range(1, 30)]
    assert not any(decisions)
    assert motion.skipped == 29
    assert motion.last_fraction < 0.001


def test_a_moving_square_is_motion(scene):
    rng = np.random.default_rng(1)
    motion = gate()
    assert motion.should_infer(noisy(with_square(scene, 100, 100), rng), "BGR", 0.0)
    assert motion.should_infer(noisy(with_square(scene, 200, 150), rng), "BGR", 0.1)
    assert motion.last_fraction > 0.02
    # It stopped: the scene is static again.
    assert not motion.should_infer(noisy(with_square(scene, 200, 150), rng), "BGR", 0.2)
    assert motion.skipped == 1


def test_slow_motion_accumulates_against_the_last_inferred_frame(scene):
    """A square creeping 2 px per frame never moves enough between two frames, but does
    against the last inferred one."""
    rng = np.random.default_rng(2)
    frames = [noisy(with_square(scene, 100 + 2 * i, 200), rng) for i in range(60)]
    grays = [small_gray(f, "BGR") for f in frames]
    consecutive = [motion_fraction(a, b, 25) for a, b in pairwise(grays)]
    assert max(consecutive) < 0.01  # a previous-frame gate would never fire
    motion = gate(min_area=0.01)
    fired = [i for i, f in enumerate(frames) if motion.should_infer(f, "BGR", 0.1 * i)]
    assert fired[0] == 0 and len(fired) >= 3  # the first frame, then every few frames


def test_force_interval_infers_on_a_static_scene(scene):
    rng = np.random.default_rng(3)
    motion = gate(force_interval=2.0)
    times = [0.5 * i for i in range(13)]  # 0 .. 6 s
    fired = [t for t in times if motion.should_infer(noisy(scene, rng), "BGR", t)]
    assert fired == [0.0, 2.0, 4.0, 6.0]
    assert motion.skipped == len(times) - len(fired)
    # A clock that jumps back does not stall inference until it catches up.
    assert motion.should_infer(noisy(scene, rng), "BGR", 1.0)


def test_force_argument_and_reset(scene):
    rng = np.random.default_rng(4)
    motion = gate()
    assert motion.should_infer(noisy(scene, rng), "BGR", 0.0)
    assert motion.should_infer(noisy(scene, rng), "BGR", 0.1, force=True)
    assert not motion.should_infer(noisy(scene, rng), "BGR", 0.2)
    motion.reset()
    assert motion.should_infer(noisy(scene, rng), "BGR", 0.3)
    # Another resolution of the same scene shrinks to the same small image: no motion...
    half = cv2.resize(scene, (320, 240), interpolation=cv2.INTER_AREA)
    assert not motion.should_infer(half, "BGR", 0.4)
    # ...but a frame under 160x120 is not enlarged, cannot be compared, and is inferred.
    tiny = cv2.resize(scene, (128, 96), interpolation=cv2.INTER_AREA)
    assert motion.should_infer(tiny, "BGR", 0.5)
    assert motion.last_fraction == 1.0


def test_yuv420_frames(scene):
    rng = np.random.default_rng(5)
    motion = gate()
    assert motion.should_infer(yuv(noisy(scene, rng)), "YUV420", 0.0)
    assert not motion.should_infer(yuv(noisy(scene, rng)), "YUV420", 0.1)
    assert motion.should_infer(yuv(noisy(with_square(scene, 300, 200), rng)), "YUV420", 0.2)


def test_motion_outside_the_roi_is_ignored(scene):
    rng = np.random.default_rng(6)
    roi = (0.0, 0.0, 0.5, 0.5)  # top-left quarter
    motion = gate()
    assert motion.should_infer(noisy(scene, rng), "BGR", 0.0, roi=roi)
    outside = with_square(scene, 450, 350, side=120)
    assert not motion.should_infer(noisy(outside, rng), "BGR", 0.1, roi=roi)
    inside = with_square(outside, 60, 60, side=80)
    assert motion.should_infer(noisy(inside, rng), "BGR", 0.2, roi=roi)


def test_disabled_gate_always_infers(scene):
    motion = MotionGate(MotionConfig(enabled=False))
    assert all(motion.should_infer(scene, "BGR", 0.1 * i) for i in range(5))
    assert motion.skipped == 0
