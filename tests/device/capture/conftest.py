"""Fixtures of the capture tests."""

from __future__ import annotations

import sys
import types

import pytest
from pi_camera_fake import FakePicamera2


@pytest.fixture
def fake_picamera2(monkeypatch):
    FakePicamera2.instances = []
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2
