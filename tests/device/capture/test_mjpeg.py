"""MJPEG frames decoded at the scale inference needs, with the camera's own JPEG kept."""

from __future__ import annotations

import logging
import re
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from capture_helpers import camera, read_all

from device.capture import (
    MjpegFrames,
    NotJpegError,
    SourceError,
    jpeg_scale,
    mjpeg,
    open_source,
)
from device.inference.preprocess import read_image


def write_photo_video(path: Path, photo: np.ndarray, frames: int = 6) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    height, width = photo.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.roll(photo, 8 * i, axis=1))  # each frame differs
    writer.release()
    return path


@pytest.fixture
def photo_640(samples_dir) -> np.ndarray:
    return cv2.resize(read_image(str(samples_dir / "cat-chelsea.jpg")), (640, 480))


@pytest.mark.parametrize(
    ("size", "min_size", "scale"),
    [
        ((640, 480), (224, 224), 2),  # 320x240 still holds a 224 crop
        ((640, 480), (240, 240), 2),
        ((640, 480), (224, 241), 1),
        ((1920, 1080), (224, 224), 4),
        ((2592, 1944), (224, 224), 8),
        ((640, 480), (448, 448), 1),  # a region of interest of half the frame
        ((640, 480), None, 1),
    ],
)
def test_jpeg_scale_keeps_what_inference_needs(size, min_size, scale):
    assert jpeg_scale(*size, min_size) == scale


def test_mjpeg_file_decodes_at_the_scale_inference_needs_and_keeps_its_jpeg(tmp_path, photo_640):
    path = write_photo_video(tmp_path / "cam.avi", photo_640)
    source = open_source(camera(str(path)), min_size=(224, 224))
    source.open()
    try:
        frames = read_all(source)
    finally:
        source.close()
    assert len(frames) == 6
    for frame in frames:
        assert frame.image.shape == (240, 320, 3) and frame.size == (320, 240)
        # The camera's own JPEG travels with the frame: full size, and the frame is exactly
        # its decoding at half scale.
        assert frame.jpeg is not None and frame.jpeg.startswith(b"\xff\xd8")
        packet = np.frombuffer(frame.jpeg, np.uint8)
        assert cv2.imdecode(packet, cv2.IMREAD_COLOR).shape == (480, 640, 3)
        assert np.array_equal(cv2.imdecode(packet, cv2.IMREAD_REDUCED_COLOR_2), frame.image)
    # Half-scale decoding is a proper downscale of the full frame, not a subsampling.
    full = cv2.imdecode(np.frombuffer(frames[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    area = cv2.resize(full, (320, 240), interpolation=cv2.INTER_AREA)
    assert np.abs(area.astype(int) - frames[0].image.astype(int)).mean() < 2.0


def test_mjpeg_file_without_a_minimum_or_with_a_requested_size_decodes_whole(tmp_path, photo_640):
    path = write_photo_video(tmp_path / "cam.avi", photo_640, frames=2)
    for kwargs, min_size, shape in [
        ({}, None, (480, 640, 3)),
        ({"width": 400, "height": 300}, (224, 224), (300, 400, 3)),  # resized, from full size
    ]:
        source = open_source(camera(str(path), **kwargs), min_size=min_size)
        source.open()
        try:
            frame = source.read()
        finally:
            source.close()
        assert frame.image.shape == shape and frame.jpeg is not None


def test_looping_mjpeg_file_restarts_in_compressed_mode(tmp_path, photo_640):
    path = write_photo_video(tmp_path / "cam.avi", photo_640, frames=3)
    source = open_source(camera(str(path), loop=True), min_size=(224, 224))
    source.open()
    try:
        frames = [source.read() for _ in range(7)]
    finally:
        source.close()
    assert all(f.jpeg is not None and f.image.shape == (240, 320, 3) for f in frames)
    assert frames[3].jpeg == frames[0].jpeg and frames[6].jpeg == frames[0].jpeg


def test_other_codecs_are_decoded_by_opencv_at_full_size(tmp_path, photo_640):
    path = write_photo_video(tmp_path / "cam.mp4", photo_640, frames=2)
    source = open_source(camera(str(path)), min_size=(224, 224))
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame.image.shape == (480, 640, 3) and frame.jpeg is None


class PacketCapture:
    """A stand-in for cv2.VideoCapture in compressed mode: hands out the given packets."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = list(packets)

    def read(self):
        if not self.packets:
            return False, None
        return True, np.frombuffer(self.packets.pop(0), np.uint8).reshape(1, -1)


def test_corrupt_jpeg_frames_are_skipped_then_fail_the_source(photo_640, caplog):
    good = cv2.imencode(".jpg", photo_640)[1].tobytes()
    broken = good[:2] + b"\x00" * 200 + good[202:]  # headers wiped: does not decode
    frames = MjpegFrames(PacketCapture([broken, good, broken, good]), "cam", (224, 224))
    with caplog.at_level(logging.WARNING):
        image, jpeg = frames.read()
        assert image.shape == (240, 320, 3) and jpeg == good
        assert frames.read()[1] == good
    assert frames.corrupt == 2
    assert "skipped a corrupt JPEG frame" in caplog.text
    assert frames.read() is None  # the capture has nothing more

    too_many = MjpegFrames(PacketCapture([broken] * mjpeg.MAX_BAD_JPEGS), "cam", None)
    with pytest.raises(SourceError, match="corrupt JPEG frames in a row"):
        too_many.read()
    assert too_many.abandoned  # the source reopens with OpenCV's own decoding
    assert not frames.abandoned


def without_start_of_image(path: Path) -> Path:
    """The MJPG AVI with every frame's first two bytes (the JPEG SOI marker) zeroed: its
    fourcc still says MJPG but its packets are not JPEG, which FFmpeg's own decoder reads
    anyway (it scans to the next marker)."""
    data = bytearray(path.read_bytes())
    starts = [m.start() + 8 for m in re.finditer(rb"00dc....\xff\xd8", bytes(data), re.DOTALL)]
    assert starts, "no MJPEG frame chunk found"
    for start in starts:
        data[start : start + 2] = b"\x00\x00"
    path.write_bytes(bytes(data))
    return path


def test_packets_that_are_not_jpeg_make_the_source_fall_back_to_opencv(tmp_path, photo_640):
    """A stream that says MJPG but whose packets are not JPEG fails once; reopened, the source
    lets OpenCV decode it (and never tries compressed mode again)."""
    frames = MjpegFrames(PacketCapture([b"\x00\x00\x01\x67 not a jpeg"]), "cam", None)
    with pytest.raises(NotJpegError):
        frames.read()
    assert frames.abandoned

    path = without_start_of_image(write_photo_video(tmp_path / "cam.avi", photo_640, frames=2))
    source = open_source(camera(str(path)), min_size=(224, 224))
    source.open()
    with pytest.raises(NotJpegError):
        source.read()
    source.close()
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    # OpenCV's decoding: full size, no JPEG kept, and the photo's content.
    assert frame.jpeg is None and frame.image.shape == (480, 640, 3)
    assert abs(float(frame.image.mean()) - float(photo_640.mean())) < 5


def test_inference_min_size_keeps_every_models_input_inside_the_roi():
    from device.run.daemon import inference_min_size

    def level(width: int, height: int) -> types.SimpleNamespace:
        spec = types.SimpleNamespace(width=width, height=height)
        manifest = types.SimpleNamespace(input=spec)
        return types.SimpleNamespace(
            classifier=types.SimpleNamespace(bundle=types.SimpleNamespace(manifest=manifest))
        )

    whole = camera("cam.avi")
    assert inference_min_size(whole, [level(224, 224)]) == (224, 224)
    assert inference_min_size(whole, [level(224, 224), level(300, 240)]) == (300, 300)
    quarter = camera("cam.avi", roi=(0.5, 0.5, 0.5, 0.25))
    assert inference_min_size(quarter, [level(224, 224)]) == (448, 896)
    # 640x480 with that region of interest: no reduction at all.
    assert jpeg_scale(640, 480, inference_min_size(quarter, [level(224, 224)])) == 1
