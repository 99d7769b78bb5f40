"""open_source's ``auto``: a Pi camera, then /dev/video0, then the demo."""

from __future__ import annotations

import logging
import sys

from capture_helpers import camera
from pi_camera_fake import FakePicamera2

from device.capture import (
    Picamera2Source,
    open_source,
    registry,
)


def test_auto_falls_back_to_the_demo_without_a_camera(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off the Pi
    monkeypatch.setattr(registry, "V4L2_DEFAULT", str(tmp_path / "video0"))
    caplog.set_level(logging.INFO, logger="device.capture.registry")
    source = open_source(camera("auto"))
    assert source.description.startswith("demo")
    assert any("auto -> demo" in r.getMessage() for r in caplog.records)


def test_auto_prefers_an_attached_pi_camera_but_not_a_usb_one(
    fake_picamera2, monkeypatch, tmp_path
):
    monkeypatch.setattr(registry, "V4L2_DEFAULT", str(tmp_path / "video0"))
    assert isinstance(open_source(camera("auto")), Picamera2Source)
    monkeypatch.setattr(
        FakePicamera2, "cameras", [{"Model": "uvcvideo", "Id": "/base/axi/usb@0/1-1.2:1.0"}]
    )
    assert open_source(camera("auto")).description.startswith("demo")
