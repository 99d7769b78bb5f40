"""Keras model -> TFLite bytes, in the formats Kestrel ships.

Export formats are data (one table), not branches. The conversion path is
``TFLiteConverter.from_keras_model``: with Keras 3, ``tf.saved_model.save`` and
``from_concrete_functions`` convert without error but give models that output NaN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import keras

RepresentativeData = Callable[[], Iterable[list[np.ndarray]]]
# The format every export is checked against by the gate.
REFERENCE_FORMAT = "float32"


@dataclass(frozen=True)
class ExportFormat:
    name: str
    description: str
    optimize: bool  # optimizations=[DEFAULT]
    needs_representative_data: bool
    integer_only: bool  # supported_ops=[TFLITE_BUILTINS_INT8], uint8 in and out
    float16: bool = False


EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "int8", "full integer, uint8 input and output (CPU, Edge TPU)", True, True, True
        ),
        ExportFormat("float16", "float16 weights, float32 compute", True, False, False, True),
        ExportFormat("dynamic", "int8 weights, float activations", True, False, False),
        ExportFormat("float32", "no quantization (reference)", False, False, False),
    )
}


def convert(
    model: tf.keras.Model,
    format_name: str,
    representative_data: RepresentativeData | None = None,
) -> bytes:
    """Convert a Keras model; ``representative_data`` yields [batch] lists of float32 inputs
    drawn from real images (a few hundred; random noise calibrates badly)."""
    try:
        fmt = EXPORT_FORMATS[format_name]
    except KeyError:
        raise ValueError(
            f"unknown export format {format_name!r}; choose from {', '.join(EXPORT_FORMATS)}"
        ) from None
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fmt.optimize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt.needs_representative_data:
        if representative_data is None:
            raise ValueError(f"{format_name} export needs representative data (real images)")
        converter.representative_dataset = representative_data
    if fmt.integer_only:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Camera pixels go in directly; rescaling lives inside the model.
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    if fmt.float16:
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def batches_of(images: np.ndarray) -> RepresentativeData:
    """Representative-data callable over (N, H, W, C) uint8 pixels, one image per batch."""

    def generate() -> Iterable[list[np.ndarray]]:
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def io_quantization(model_bytes: bytes) -> dict[str, dict[str, float] | None]:
    """The input and output tensors' (scale, zero_point), read back with the device runtime."""
    from training.runtime import workstation_runtime

    interpreter = workstation_runtime().interpreter_class(model_content=model_bytes)
    out: dict[str, dict[str, float] | None] = {}
    for name, details in (
        ("input", interpreter.get_input_details()),
        ("output", interpreter.get_output_details()),
    ):
        scale, zero_point = details[0]["quantization"]
        out[name] = {"scale": float(scale), "zero_point": int(zero_point)} if scale else None
    return out


def representative_pixels(
    train_pixels: np.ndarray,
    count: int,
    augmenter: keras.Sequential | None,
    seed: int,
) -> np.ndarray:
    """``count`` real training images as int8 representative data; a training set smaller
    than that is topped up with augmented copies of its own images (still real pictures)."""
    rng = np.random.default_rng(seed)
    n = len(train_pixels)
    chosen = train_pixels[rng.permutation(n)[: min(n, count)]]
    if n >= count or augmenter is None:
        return chosen
    extra = []
    while n + sum(map(len, extra)) < count:
        batch = train_pixels[rng.permutation(n)[: count - n - sum(map(len, extra))]]
        extra.append(augmented_pixels(augmenter, batch))
    return np.concatenate([chosen, *extra])


def augmented_pixels(augmenter: keras.Sequential, pixels: np.ndarray) -> np.ndarray:
    """An augmented copy of uint8 ``pixels``, back in uint8 as a camera would give them."""
    augmented = np.asarray(augmenter(pixels.astype(np.float32), training=True))
    return np.clip(np.round(augmented), 0, 255).astype(np.uint8)


def convert_with_reference(
    model: tf.keras.Model,
    format_name: str,
    representative_images: np.ndarray,
    *,
    progress: bool = True,
) -> tuple[bytes, bytes]:
    """The model in ``format_name`` and in :data:`REFERENCE_FORMAT` (the same bytes when the
    two are one format); ``representative_images`` are uint8 pixels for int8 quantization."""
    representative = _with_progress(
        batches_of(representative_images), len(representative_images), progress
    )
    with _quiet_conversion():
        candidate = convert(model, format_name, representative)
        if format_name == REFERENCE_FORMAT:
            return candidate, candidate
        return candidate, convert(model, REFERENCE_FORMAT)


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """The converter prints every resource tensor of the temporary SavedModel (hundreds of
    lines on stdout) and warns about input statistics that a uint8 input does not need."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield


def _with_progress(data: RepresentativeData, total: int, enabled: bool) -> RepresentativeData:
    def generate() -> Iterator[list[np.ndarray]]:
        yield from tqdm(
            data(), total=total, desc="int8 calibration", unit="img", disable=not enabled
        )

    return generate


@dataclass(frozen=True)
class Exported:
    """The converted models of one trained model: the chosen format and the float32
    reference (None until :func:`with_reference`), and how many images int8 quantization was
    calibrated on."""

    format_name: str
    model: bytes
    reference: bytes | None
    representative_images: int


def export_model(
    model: tf.keras.Model,
    train_pixels: np.ndarray,
    format_name: str,
    calibration_images: int,
    augmenter: keras.Sequential | None,
    seed: int,
    *,
    reference: bool = True,
    progress: bool = True,
) -> Exported:
    """Convert ``model`` to ``format_name`` (calibrated on real training images) and, with
    ``reference``, to float32 as well (the search scores candidates without it: their float
    figures come from TensorFlow, the same numbers)."""
    images = representative_pixels(train_pixels, calibration_images, augmenter, seed)
    if reference:
        model_bytes, ref = convert_with_reference(model, format_name, images, progress=progress)
        return Exported(format_name, model_bytes, ref, len(images))
    representative = _with_progress(batches_of(images), len(images), progress)
    with _quiet_conversion():
        model_bytes = convert(model, format_name, representative)
    ref = model_bytes if format_name == REFERENCE_FORMAT else None
    return Exported(format_name, model_bytes, ref, len(images))


def with_reference(exported: Exported, model: tf.keras.Model) -> Exported:
    """``exported`` with its float32 reference converted (once, for the model shipped)."""
    if exported.reference is not None:
        return exported
    with _quiet_conversion():
        reference = convert(model, REFERENCE_FORMAT)
    return dataclasses.replace(exported, reference=reference)
