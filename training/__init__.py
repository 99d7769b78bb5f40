"""Kestrel training: turns labeled images into quantized model bundles (TensorFlow/Keras)."""
