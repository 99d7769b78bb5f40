"""Keras model -> TFLite bytes, in the formats Kestrel ships.

Export formats are data (one table), not branches. The conversion path is
``TFLiteConverter.from_keras_model``: with Keras 3, ``tf.saved_model.save`` and
``from_concrete_functions`` convert without error but give models that output NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

RepresentativeData = Callable[[], Iterable[list[np.ndarray]]]


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
    from device.inference.runtime import find_runtime

    interpreter = find_runtime().interpreter_class(model_content=model_bytes)
    out: dict[str, dict[str, float] | None] = {}
    for name, details in (
        ("input", interpreter.get_input_details()),
        ("output", interpreter.get_output_details()),
    ):
        scale, zero_point = details[0]["quantization"]
        out[name] = {"scale": float(scale), "zero_point": int(zero_point)} if scale else None
    return out
