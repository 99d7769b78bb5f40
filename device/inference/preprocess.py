"""Preprocessing: camera frame or image file -> model input tensor.

Pure functions, one implementation shared by the device and by ``training`` (train/serve skew
is the classic failure of this kind of system). The order is chosen for speed on small CPUs:
crop first (views, no copy), resize, then convert colours on the small image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.inference.bundle import InputSpec, Normalization, TensorQuantization
from device.inference.frames import FrameFormat, Roi, crop_roi, to_gray

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


class ImageError(ValueError):
    """An image that cannot be read or has an unusable shape."""


#: libjpeg's DCT scaling: decoding at 1/k of the size does less work (IMREAD_REDUCED_*),
#: largest k first (see :func:`jpeg_scale`).
REDUCED_COLOR: dict[int, int] = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    1: cv2.IMREAD_COLOR,
}
_HEADER_BYTES = 1 << 18  # where a JPEG's frame header is looked for (after EXIF, ICC, ...)
# Start-of-frame markers (they hold the size); C4, C8 and CC share the range but are not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_scale(width: int, height: int, min_size: tuple[int, int] | None) -> int:
    """The largest k of 8, 4, 2 such that a ``width`` x ``height`` JPEG decoded at 1/k is still
    at least ``min_size`` (width, height); 1 when none is, or when no minimum is given."""
    if min_size is None:
        return 1
    min_width, min_height = min_size
    for k in REDUCED_COLOR:
        if width // k >= min_width and height // k >= min_height:
            return k
    return 1


def jpeg_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header without decoding it; None if not a JPEG."""
    buf = data.tobytes() if isinstance(data, np.ndarray) else data
    if not buf.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF_MARKERS:
            height, width = int.from_bytes(buf[i + 5 : i + 7]), int.from_bytes(buf[i + 7 : i + 9])
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(buf[i + 2 : i + 4])
    return None


def read_image(path: str, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as a BGR uint8 array; raise :class:`ImageError` saying why not.

    With ``min_size`` (width, height), a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    whenever that still holds ``min_size`` either way up (EXIF may turn it): a 10000x10000
    photo then costs 1250x1250 pixels, not 300 MB. Other formats are decoded whole.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    flag = cv2.IMREAD_COLOR
    size = jpeg_size(data[:_HEADER_BYTES]) if min_size is not None else None
    if size is not None:
        width, height = size
        scale = min(jpeg_scale(width, height, min_size), jpeg_scale(height, width, min_size))
        flag = REDUCED_COLOR[scale]
    image = cv2.imdecode(data, flag)
    if image is None:
        raise ImageError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    return image


def to_model_colors(frame: np.ndarray, frame_format: FrameFormat, spec: InputSpec) -> np.ndarray:
    """Convert a frame to the model's channel layout (RGB, BGR or one gray channel)."""
    if spec.channels == 1:
        # The Y plane of YUV420 and GRAY's channel are used as they are (views, no copy).
        return to_gray(frame, frame_format)
    target = spec.color_order
    codes = {
        "BGR": None if target == "BGR" else cv2.COLOR_BGR2RGB,
        "RGB": None if target == "RGB" else cv2.COLOR_RGB2BGR,
        "GRAY": cv2.COLOR_GRAY2RGB if target == "RGB" else cv2.COLOR_GRAY2BGR,
        "YUV420": cv2.COLOR_YUV2RGB_I420 if target == "RGB" else cv2.COLOR_YUV2BGR_I420,
    }
    code = codes[frame_format]
    return frame if code is None else cv2.cvtColor(frame, code)


def center_crop_to_aspect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Largest centred crop with the aspect ratio height:width (a view, no copy)."""
    h, w = image.shape[:2]
    if h * width > w * height:  # too tall
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return image[top : top + new_h]
    new_w = max(1, round(h * width / height))
    left = (w - new_w) // 2
    return image[:, left : left + new_w]


def resize(image: np.ndarray, width: int, height: int, interpolation: str = "area") -> np.ndarray:
    """Resize; "area" shrinks with a box filter, in two fast steps.

    OpenCV's area filter is ~15x slower for non-integer ratios (0.63 ms for 480->224 here)
    than for integer ones (0.04 ms for 448->224). So shrink by the largest integer factor k
    with the box filter (exact area averaging), then finish the remaining ratio (< 2) with
    bilinear interpolation, which does not alias at such ratios.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if interpolation == "area" and (height > h or width > w):
        # OpenCV's area filter enlarges by nearest neighbour (blocky pixels, which augmentation
        # then resamples unlike test images): enlarge bilinearly instead.
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if interpolation == "area":
        k = min(h // height, w // width)
        if k >= 2:
            trimmed = image[: h - h % k, : w - w % k]  # at most k - 1 pixels, a view
            image = cv2.resize(trimmed, (w // k, h // k), interpolation=cv2.INTER_AREA)
            if image.shape[:2] == (height, width):
                return image
        # The remaining ratio is below 2 (k = 1: 240 -> 224 costs 0.32 ms with the area
        # filter, 0.03 ms bilinear).
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=_INTERPOLATION[interpolation])


def fit_to_input(
    image: np.ndarray,
    height: int,
    width: int,
    fit: str = "center_crop",
    interpolation: str = "area",
) -> np.ndarray:
    """Fit an image to height x width: centre crop, letterbox (black bars) or stretch."""
    if image.ndim < 2 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"cannot resize an image of shape {image.shape}")
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {interpolation!r}")
    if fit == "center_crop":
        image = center_crop_to_aspect(image, height, width)
    elif fit == "letterbox":
        h, w = image.shape[:2]
        scale = min(height / h, width / w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        resized = resize(image, new_w, new_h, interpolation)
        out = np.zeros((height, width, *image.shape[2:]), dtype=image.dtype)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[top : top + new_h, left : left + new_w] = resized
        return out
    elif fit != "stretch":
        raise ValueError(f"unknown fit {fit!r}")
    return resize(image, width, height, interpolation)


def denoise(image: np.ndarray, method: str) -> np.ndarray:
    """Optional noise reduction for grainy night-time sensors."""
    if method == "none":
        return image
    if method == "gaussian":
        return cv2.GaussianBlur(image, (3, 3), 0)
    if method == "median":
        return cv2.medianBlur(image, 3)
    raise ValueError(f"unknown denoise method {method!r}")


@dataclass(frozen=True)
class InputQuantizer:
    """Turns uint8 pixels into the model's input dtype: normalize, then quantize.

    For uint8 pixels every such per-channel affine map is a 256-entry table, so it is
    precomputed once and applied with ``cv2.LUT``; when it is the identity (the usual int8
    model with normalization inside it) pixels go in untouched.
    """

    dtype: str
    table: np.ndarray | None  # (256, 1, C) lookup table, or None for the identity

    @classmethod
    def identity(cls) -> InputQuantizer:
        """Raw uint8 pixels, e.g. for data that the model's own converter will quantize."""
        return cls(dtype="uint8", table=None)

    @classmethod
    def build(
        cls,
        dtype: str,
        normalization: Normalization,
        quantization: TensorQuantization | None,
        channels: int = 3,
    ) -> InputQuantizer:
        pixels = np.arange(256, dtype=np.float64)[:, None]
        mean = np.asarray(normalization.mean[:channels], dtype=np.float64)[None, :]
        std = np.asarray(normalization.std[:channels], dtype=np.float64)[None, :]
        real = (pixels - mean) / std
        if dtype == "float32":
            table = real.astype(np.float32)
        else:
            if quantization is None:
                raise ValueError(f"a {dtype} input needs its quantization (scale, zero point)")
            info = np.iinfo(np.dtype(dtype))
            q = np.round(real / quantization.scale + quantization.zero_point)
            table = np.clip(q, info.min, info.max).astype(dtype)
        if dtype == "uint8" and np.array_equal(
            table, np.repeat(np.arange(256)[:, None], channels, 1)
        ):
            return cls(dtype=dtype, table=None)
        return cls(dtype=dtype, table=np.ascontiguousarray(table[:, None, :]))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Apply to (H, W) or (H, W, C) uint8 pixels; the shape is kept."""
        if pixels.dtype != np.uint8:
            raise ImageError(f"expected uint8 pixels, got {pixels.dtype}")
        if self.table is None:
            return pixels
        channels = pixels.shape[2] if pixels.ndim == 3 else 1
        if channels != self.table.shape[2]:
            raise ImageError(f"{channels}-channel pixels for a {self.table.shape[2]}-channel model")
        lut = self.table if channels > 1 else np.ascontiguousarray(self.table[:, :, 0])
        if lut.dtype == np.int8:
            # cv2.LUT has no int8 output: use the table's bytes and reinterpret the result.
            return cv2.LUT(pixels, lut.view(np.uint8)).view(np.int8).reshape(pixels.shape)
        return cv2.LUT(pixels, lut).reshape(pixels.shape)


def prepare(
    frame: np.ndarray,
    spec: InputSpec,
    quantizer: InputQuantizer,
    frame_format: FrameFormat = "BGR",
    roi: Roi | None = None,
) -> np.ndarray:
    """Frame -> input tensor of shape (H, W, C) in the model's dtype (no batch axis)."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.size == 0:
        raise ImageError("empty frame")
    if frame.dtype != np.uint8:
        raise ImageError(f"expected a uint8 frame, got {frame.dtype}")
    if frame_format == "YUV420":
        # Planar YUV cannot be cropped or resized as one array: convert it first.
        frame = to_model_colors(frame, "YUV420", spec)
        frame_format = "GRAY" if spec.channels == 1 else spec.color_order
    image = crop_roi(frame, roi)
    image = fit_to_input(image, spec.height, spec.width, spec.fit, spec.interpolation)
    image = to_model_colors(image, frame_format, spec)
    image = quantizer(denoise(image, spec.denoise))
    return image[:, :, None] if image.ndim == 2 else image
