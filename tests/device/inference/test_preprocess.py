"""Preprocessing: pure functions on synthetic and real frames."""

import cv2
import numpy as np
import pytest

from device.inference.bundle import InputSpec, Normalization, TensorQuantization
from device.inference.preprocess import (
    ImageError,
    InputQuantizer,
    center_crop_to_aspect,
    fit_to_input,
    prepare,
    read_image,
    resize,
)


def spec(**overrides) -> InputSpec:
    fields = {"height": 8, "width": 8, "dtype": "uint8", "interpolation": "linear"}
    return InputSpec(**(fields | overrides))


def quadrant_frame(h: int = 40, w: int = 60) -> np.ndarray:
    """BGR frame: left half pure blue, right half pure red."""
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = (255, 0, 0)
    frame[:, w // 2 :] = (0, 0, 255)
    return frame


def test_bgr_frame_becomes_rgb_for_an_rgb_model():
    out = prepare(quadrant_frame(), spec(), InputQuantizer.identity(), "BGR")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert tuple(out[4, 0]) == (0, 0, 255)  # blue, now in RGB order
    assert tuple(out[4, 7]) == (255, 0, 0)  # red


def test_rgb_and_bgr_frames_give_the_same_tensor():
    bgr = quadrant_frame()
    rgb = bgr[:, :, ::-1].copy()
    q = InputQuantizer.identity()
    np.testing.assert_array_equal(prepare(bgr, spec(), q, "BGR"), prepare(rgb, spec(), q, "RGB"))


def test_yuv420_frame_as_picamera2_lores_gives_it():
    bgr = quadrant_frame(48, 64)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    assert yuv.shape == (72, 64)
    out = prepare(yuv, spec(), InputQuantizer.identity(), "YUV420")
    expected = prepare(bgr, spec(), InputQuantizer.identity(), "BGR")
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 12  # chroma subsampling


def test_gray_model_takes_the_luma():
    out = prepare(quadrant_frame(), spec(channels=1), InputQuantizer.identity(), "BGR")
    assert out.shape == (8, 8, 1)
    assert out[4, 0, 0] == 29 and out[4, 7, 0] == 76  # BT.601 luma of blue and red


def test_center_crop_keeps_the_middle_and_copies_nothing():
    frame = np.arange(4 * 8).reshape(4, 8).astype(np.uint8)
    crop = center_crop_to_aspect(frame, 1, 1)
    assert crop.shape == (4, 4)
    assert crop.base is frame or np.shares_memory(crop, frame)
    np.testing.assert_array_equal(crop, frame[:, 2:6])


def test_letterbox_pads_and_keeps_aspect():
    frame = np.full((10, 20, 3), 200, np.uint8)
    out = fit_to_input(frame, 10, 10, "letterbox", "linear")
    assert out.shape == (10, 10, 3)
    assert out[0, 5].tolist() == [0, 0, 0] and out[5, 5].tolist() == [200, 200, 200]
    assert (out[:, :, 0] > 0).sum() == 50  # a 5 x 10 band of image


def test_stretch_uses_the_whole_frame():
    frame = quadrant_frame(10, 40)
    out = fit_to_input(frame, 4, 4, "stretch", "area")
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 3]) == (0, 0, 255)


@pytest.mark.parametrize("method", ["gaussian", "median"])
def test_denoise_reduces_sensor_noise(method):
    rng = np.random.default_rng(0)
    noisy = np.clip(128 + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
    out = prepare(noisy, spec(height=64, width=64, denoise=method), InputQuantizer.identity())
    plain = prepare(noisy, spec(height=64, width=64), InputQuantizer.identity())
    assert (out.astype(float) - 128).std() < 0.7 * (plain.astype(float) - 128).std()


def test_identity_quantizer_passes_pixels_untouched():
    q = InputQuantizer.build("uint8", Normalization(), TensorQuantization(scale=1.0, zero_point=0))
    assert q.table is None
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert q(pixels) is pixels


@pytest.mark.parametrize(
    ("dtype", "quant"),
    [
        ("int8", TensorQuantization(scale=1 / 128, zero_point=-1)),
        ("uint8", TensorQuantization(scale=0.0078125, zero_point=127)),
        ("float32", None),
    ],
)
def test_quantizer_matches_the_formula(dtype, quant):
    norm = Normalization(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    q = InputQuantizer.build(dtype, norm, quant)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    real = (pixels - np.array(norm.mean)) / np.array(norm.std)
    out = q(pixels)
    assert out.dtype == np.dtype(dtype) and out.shape == pixels.shape
    if quant is None:
        np.testing.assert_allclose(out, real, rtol=1e-6)
    else:
        info = np.iinfo(np.dtype(dtype))
        expected = np.clip(np.round(real / quant.scale + quant.zero_point), info.min, info.max)
        np.testing.assert_array_equal(out.astype(int), expected.astype(int))


def test_quantized_input_without_parameters_is_refused():
    with pytest.raises(ValueError, match="quantization"):
        InputQuantizer.build("int8", Normalization(), None)


def test_bad_frames_are_refused_clearly():
    q = InputQuantizer.identity()
    with pytest.raises(ImageError, match="empty"):
        prepare(np.zeros((0, 0, 3), np.uint8), spec(), q)
    with pytest.raises(ImageError, match="uint8"):
        prepare(np.zeros((4, 4, 3), np.float32), spec(), q)


def test_read_image_names_the_broken_file(tmp_path, samples_dir):
    good = read_image(str(samples_dir / "coffee.jpg"))
    assert good.shape == (400, 600, 3)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((samples_dir / "coffee.jpg").read_bytes()[:200])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (truncated, text, empty):
        with pytest.raises(ImageError, match=path.name):
            read_image(str(path))


def test_area_enlarges_smoothly_not_in_blocks():
    small = np.zeros((4, 4, 3), np.uint8)
    small[:, 2:] = 200
    big = fit_to_input(small, 16, 16, "stretch", "area")
    # Bilinear enlargement gives intermediate values at the edge; nearest neighbour would not.
    assert len(np.unique(big[8, :, 0])) > 2


@pytest.mark.parametrize("size", [(300, 240), (640, 480)])
def test_area_shrink_stays_close_to_opencvs_area_filter(samples_dir, size):
    """The fast path (integer box filter, then bilinear for a ratio below 2) gives nearly the
    pixels of OpenCV's exact area filter on a real photo, at ratios below and above 2."""
    photo = cv2.resize(
        read_image(str(samples_dir / "cat-chelsea.jpg")), size, interpolation=cv2.INTER_AREA
    )
    fast = resize(photo, 280, 224).astype(int)
    exact = cv2.resize(photo, (280, 224), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(fast - exact).mean() < 1.5
