"""Image folders and the demo source (the shipped sample photos)."""

from __future__ import annotations

import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
from capture_helpers import camera, read_all

from device.capture import (
    SourceError,
    folder,
    open_source,
)
from device.inference.preprocess import fit_to_input, read_image


def test_image_folder_skips_corrupt_and_non_image_files(tmp_path, samples_dir, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((samples_dir / "coffee.jpg").read_bytes())
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    (folder / "c.png").write_bytes(cv2.imencode(".png", np.full((20, 30, 3), 7, np.uint8))[1])
    (folder / "notes.txt").write_text("not an image")
    source = open_source(camera(str(folder), loop=True))
    assert source.frame_interval == pytest.approx(0.5)  # 2 fps by default
    caplog.set_level(logging.WARNING, logger="device.capture.folder")
    source.open()
    try:
        shapes = [source.read().image.shape for _ in range(6)]
    finally:
        source.close()
    assert shapes == [(400, 600, 3), (20, 30, 3)] * 3
    warnings = [r.getMessage() for r in caplog.records if "b.jpg" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per file, not once per pass
    assert not any("notes.txt" in r.getMessage() for r in caplog.records)


def test_image_folder_without_loop_ends_and_unreadable_folder_fails(tmp_path, samples_dir):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "x.jpg").write_bytes((samples_dir / "rocket.jpg").read_bytes())
    source = open_source(camera(str(folder)))
    source.open()
    assert len(read_all(source)) == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    source = open_source(camera(str(bad), loop=True))
    source.open()
    with pytest.raises(SourceError, match="no readable image"):
        source.read()


def test_demo_source_holds_each_sample_photo_as_it_is(samples_dir):
    source = open_source(camera("demo"))
    assert source.description.startswith("demo")
    repeat = round(folder.DEMO_SECONDS_PER_PHOTO * folder.DEMO_FPS)
    assert source.frame_interval == pytest.approx(1 / folder.DEMO_FPS)
    source.open()
    try:
        frames = [source.read() for _ in range(repeat + 1)]
    finally:
        source.close()
    assert all(f.format == "BGR" for f in frames)
    photos = sorted(samples_dir.glob("*.jpg"))
    # What kestrel classify decodes, pixel for pixel (no letterbox: the daemon agrees with it).
    assert np.array_equal(frames[0].image, read_image(str(photos[0])))
    assert all(f.image is frames[0].image for f in frames[:repeat])  # held, not re-decoded
    assert np.array_equal(frames[repeat].image, read_image(str(photos[1])))


def test_demo_source_letterboxes_to_a_configured_size(samples_dir):
    source = open_source(camera("demo", width=640, height=480))
    assert source.description.endswith("640x480)")
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    photo = sorted(samples_dir.glob("*.jpg"))[0]
    expected = fit_to_input(read_image(str(photo)), 480, 640, "letterbox", "linear")
    assert np.array_equal(frame.image, expected)


# A subprocess each: peak RSS (ru_maxrss) is per process, and pytest's own would hide it.
HUGE_JPEG = """
import sys, cv2, numpy as np
side = 10000
ramp = np.linspace(0, 255, side, dtype=np.float32).astype(np.uint8)
gray = (ramp[None, :] // 2 + ramp[:, None] // 2).astype(np.uint8)  # a smooth 10000x10000
cv2.imwrite(sys.argv[1], gray, [cv2.IMWRITE_JPEG_QUALITY, 90])
"""
FOLDER_PEAK_RSS = """
import os, sys
from device.capture import open_source
from device.resources import process_rss_mb
from device.config import CameraConfig
camera = CameraConfig(name="cam", source=sys.argv[1], source_fps=float("inf"))
source = open_source(camera, min_size=(224, 224))  # what the daemon passes for a 224 model
source.open()
frame = source.read()
# VmHWM, not ru_maxrss: Linux keeps the parent's peak (pytest with TensorFlow imported,
# 600+ MB) in a child's ru_maxrss across fork and exec.
print(int(process_rss_mb(os.getpid(), 'VmHWM')), *frame.image.shape)
"""


def run_python(code: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_huge_jpeg_in_a_folder_is_decoded_reduced_to_what_inference_needs(tmp_path):
    """A 10000x10000 photo decoded whole costs 300 MB of pixels (675 MB peak in the daemon):
    decoded at 1/8 it stays small, and still holds the 224x224 the model needs."""
    photos = tmp_path / "photos"
    photos.mkdir()
    run_python(HUGE_JPEG, str(photos / "huge.jpg"))
    peak_mb, height, width, _ = map(int, run_python(FOLDER_PEAK_RSS, str(photos)).split())
    assert peak_mb < 300, f"peak RSS {peak_mb} MB"
    assert (width, height) == (1250, 1250)
