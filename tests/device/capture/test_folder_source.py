"""Image folders and the demo source (the shipped sample photos)."""

from __future__ import annotations

import logging

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


def test_demo_source_holds_each_sample_photo_at_640x480(samples_dir):
    source = open_source(camera("demo"))
    assert source.description.startswith("demo")
    repeat = round(folder.DEMO_SECONDS_PER_PHOTO * folder.DEMO_FPS)
    assert source.frame_interval == pytest.approx(1 / folder.DEMO_FPS)
    source.open()
    try:
        frames = [source.read() for _ in range(repeat + 1)]
    finally:
        source.close()
    assert all(f.image.shape == (480, 640, 3) and f.format == "BGR" for f in frames)
    photos = sorted(samples_dir.glob("*.jpg"))
    expected = fit_to_input(read_image(str(photos[0])), 480, 640, "letterbox", "linear")
    assert np.array_equal(frames[0].image, expected)
    assert all(f.image is frames[0].image for f in frames[:repeat])  # held, not re-decoded
    second = fit_to_input(read_image(str(photos[1])), 480, 640, "letterbox", "linear")
    assert np.array_equal(frames[repeat].image, second)
