"""The TFLite runtime on a workstation: the device's own runtime, else TensorFlow's interpreter.

The device never imports TensorFlow (:mod:`device.inference.runtime` knows only ai-edge-litert
and tflite-runtime). Training, evaluation and export run where TensorFlow is installed anyway,
so they may fall back to ``tf.lite`` when no device runtime is there; they pass the result to
:class:`device.inference.engine.Classifier` as its ``runtime``.
"""

from __future__ import annotations

from device.inference.runtime import Runtime, RuntimeMissing, find_runtime


def workstation_runtime() -> Runtime:
    """The runtime the device would use when it imports, else ``tensorflow.lite``."""
    try:
        return find_runtime()
    except RuntimeMissing as device_missing:
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise RuntimeMissing(f"{device_missing}; tensorflow: {exc}") from exc
    return Runtime.checked(
        "tensorflow.lite", tf.lite.Interpreter, tf.lite.experimental.load_delegate
    )
