"""OpenCV sources: video files (the camera stand-in), devices and streams."""

from __future__ import annotations

import pytest
from capture_helpers import H, W, camera, index_of, read_all, write_video

from device.capture import (
    SourceError,
    VideoFileSource,
    open_source,
    redact_url,
)


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_file_is_read_in_order_and_ends(tmp_path, suffix):
    path = write_video(tmp_path / f"v{suffix}")
    source = open_source(camera(str(path)))
    assert isinstance(source, VideoFileSource) and source.description == f"video {path}"
    source.open()
    try:
        assert source.frame_interval == pytest.approx(1 / 30)  # the file's own rate
        frames = read_all(source)
        assert source.read() is None  # stays ended
    finally:
        source.close()
    assert [index_of(f.image) for f in frames] == list(range(30))
    assert [f.frame_id for f in frames] == list(range(1, 31))
    first = frames[0]
    assert first.format == "BGR" and first.image.shape == (H, W, 3) and first.size == (W, H)
    assert not first.image.flags.writeable


def test_looping_video_restarts_at_the_beginning(tmp_path):
    source = open_source(camera(str(write_video(tmp_path / "v.avi", frames=10)), loop=True))
    source.open()
    try:
        indices = [index_of(source.read().image) for _ in range(25)]
    finally:
        source.close()
    assert indices == list(range(10)) * 2 + list(range(5))


def test_requested_size_is_applied_to_a_file(tmp_path):
    path = write_video(tmp_path / "v.avi", frames=2)
    source = open_source(camera(str(path), width=32, height=24))
    source.open()
    try:
        assert source.read().image.shape == (24, 32, 3)
    finally:
        source.close()


@pytest.mark.parametrize("name", ["missing.mp4", "/dev/video9", 7])
def test_opening_a_missing_path_or_device_names_it(tmp_path, name):
    target = str(tmp_path / name) if name == "missing.mp4" else name
    source = open_source(camera(target))
    with pytest.raises(SourceError) as err:
        source.open()
    shown = "/dev/video7" if name == 7 else str(target)
    assert shown in str(err.value)


def test_a_file_that_is_not_a_video_is_refused(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        open_source(camera(str(junk))).open()


def test_stream_description_hides_the_password_and_open_failure_too():
    url = "rtsp://admin:s3cret@127.0.0.1:9/stream1?token=abc"
    source = open_source(camera(url))
    assert source.description == "stream rtsp://admin:***@127.0.0.1:9/stream1?***"
    with pytest.raises(SourceError) as err:  # nothing listens on port 9: refused at once
        source.open()
    assert "s3cret" not in str(err.value) and "abc" not in str(err.value)
    assert redact_url("http://cam.local/mjpeg") == "http://cam.local/mjpeg"
    assert redact_url("rtsp://viewer@cam/s") == "rtsp://viewer@cam/s"
