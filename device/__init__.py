"""Kestrel device runtime: runs model bundles on edge devices.

Light dependencies only (numpy, opencv-python-headless, a LiteRT runtime, pydantic,
PyYAML, paho-mqtt). Never imports TensorFlow or ``training``.
"""

__version__ = "0.1.0"
