"""The Pi camera source, against a fake picamera2 module."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest
from capture_helpers import camera
from pi_camera_fake import pad_i420

from device.capture import (
    Picamera2Source,
    SourceError,
    i420_from_padded,
    open_source,
)


def test_i420_padding_is_removed_plane_by_plane():
    bgr = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    packed = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    assert np.array_equal(i420_from_padded(pad_i420(packed, 64, 48, 128), 64, 48), packed)
    assert i420_from_padded(packed, 64, 48) is packed  # no padding: no copy


def test_picamera2_streams_lores_yuv_and_snapshots_main(fake_picamera2):
    source = open_source(camera("picamera2", width=640, height=480))
    assert isinstance(source, Picamera2Source)
    source.open()
    cam = fake_picamera2.instances[0]
    _, main, lores = cam.calls[0]
    assert main == {"size": (640, 480), "format": "RGB888"}
    assert lores == {"size": (320, 240), "format": "YUV420"}
    frame = source.read()
    assert frame.format == "YUV420" and frame.image.shape == (360, 320) and frame.size == (320, 240)
    bgr = cv2.cvtColor(frame.image, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(bgr.astype(int) - cam.picture).max() <= 8  # padding removed correctly

    got: list[np.ndarray | None] = []
    waiter = threading.Thread(target=lambda: got.append(source.snapshot()))
    waiter.start()
    deadline = time.monotonic() + 2
    while not source._want_main.is_set() and time.monotonic() < deadline:
        time.sleep(0.005)
    source.read()  # the capture thread's next read serves the snapshot
    waiter.join(2)
    assert got[0].shape == (480, 640, 3) and tuple(got[0][0, 0]) == (255, 0, 0)
    assert ("make_array", "main") in cam.calls
    assert all(r.released for r in cam.requests)
    source.close()
    assert cam.calls[-2:] == [("stop",), ("close",)]


def test_picamera2_request_is_released_even_when_make_array_fails(fake_picamera2):
    source = Picamera2Source()
    source.open()
    cam = fake_picamera2.instances[0]
    cam.fail_make_array = True
    for _ in range(3):
        with pytest.raises(SourceError, match="buffer vanished"):
            source.read()
    assert len(cam.requests) == 3 and all(r.released for r in cam.requests)
    source.close()


def test_picamera2_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError) as err:
        open_source(camera("picamera2")).open()
    assert "apt install python3-picamera2" in str(err.value)
    assert "--system-site-packages" in str(err.value)
