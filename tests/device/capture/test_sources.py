"""Frame sources and the capture thread, with OpenCV-written videos as the camera stand-in.

Each test frame is a uniform gray of level ``8 * index``: luminance survives MJPG and mp4v
compression to within a level or two, so a frame's index can be read back exactly.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from device.capture import sources
from device.capture.sources import (
    CaptureThread,
    Frame,
    LatestFrameSlot,
    MjpegFrames,
    NotJpegError,
    Picamera2Source,
    SourceError,
    SourceStatus,
    VideoFileSource,
    backoff_delay,
    i420_from_padded,
    jpeg_scale,
    make_frame,
    open_source,
    redact_url,
)
from device.config import BackoffConfig, CameraConfig
from device.inference.preprocess import fit_to_input, read_image

W, H = 64, 48
FAST = BackoffConfig(min_delay=0.02, max_delay=0.05)


def write_video(path: Path, frames: int = 30, fps: float = 30.0) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((H, W, 3), 8 * i, np.uint8))
    writer.release()
    return path


def index_of(image: np.ndarray) -> int:
    return round(float(image.mean()) / 8)


def camera(source: object, **kwargs: object) -> CameraConfig:
    return CameraConfig(name="cam", source=source, **kwargs)


def read_all(source, limit: int = 1000) -> list[Frame]:
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


class Collector:
    """on_status callback that records every reported status."""

    def __init__(self) -> None:
        self.statuses: list[SourceStatus] = []

    def __call__(self, name: str, status: SourceStatus) -> None:
        assert name == "cam"
        self.statuses.append(status)

    @property
    def states(self) -> list[str]:
        return [s.state for s in self.statuses]


def take(slot: LatestFrameSlot, count: int, timeout: float = 5.0) -> list[Frame]:
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        frame = slot.get(timeout=0.2)
        if frame is not None:
            frames.append(frame)
    return frames


# ---------------------------------------------------------------- video files


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


# ---------------------------------------------------------------- MJPEG decoded at a scale


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

    too_many = MjpegFrames(PacketCapture([broken] * sources.MAX_BAD_JPEGS), "cam", None)
    with pytest.raises(SourceError, match="corrupt JPEG frames in a row"):
        too_many.read()
    assert too_many.abandoned  # the source reopens with OpenCV's own decoding
    assert not frames.abandoned


def test_packets_that_are_not_jpeg_make_the_source_fall_back_to_opencv(
    tmp_path, photo_640, monkeypatch
):
    """A stream that says MJPG but whose packets are not JPEG fails once; reopened, the source
    lets OpenCV decode it (and never tries compressed mode again)."""
    frames = MjpegFrames(PacketCapture([b"\x00\x00\x01\x67 not a jpeg"]), "cam", None)
    with pytest.raises(NotJpegError):
        frames.read()
    assert frames.abandoned

    path = write_photo_video(tmp_path / "cam.avi", photo_640, frames=2)
    real_read = MjpegFrames.read

    def not_jpeg(self):
        self.abandoned = True
        raise NotJpegError("cam: not JPEG")

    monkeypatch.setattr(MjpegFrames, "read", not_jpeg)
    source = open_source(camera(str(path)), min_size=(224, 224))
    source.open()
    with pytest.raises(NotJpegError):
        source.read()
    source.close()
    monkeypatch.setattr(MjpegFrames, "read", real_read)
    source.open()
    try:
        frame = source.read()
    finally:
        source.close()
    assert frame.jpeg is None and frame.image.shape == (480, 640, 3)


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


# ---------------------------------------------------------------- image folders and demo


def test_image_folder_skips_corrupt_and_non_image_files(tmp_path, samples_dir, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((samples_dir / "coffee.jpg").read_bytes())
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated garbage")
    (folder / "c.png").write_bytes(cv2.imencode(".png", np.full((20, 30, 3), 7, np.uint8))[1])
    (folder / "notes.txt").write_text("not an image")
    source = open_source(camera(str(folder), loop=True))
    assert source.frame_interval == pytest.approx(0.5)  # 2 fps by default
    caplog.set_level(logging.WARNING, logger="device.capture.sources")
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
    repeat = round(sources.DEMO_SECONDS_PER_PHOTO * sources.DEMO_FPS)
    assert source.frame_interval == pytest.approx(1 / sources.DEMO_FPS)
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


def test_auto_falls_back_to_the_demo_without_a_camera(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as off the Pi
    monkeypatch.setattr(sources, "V4L2_DEFAULT", str(tmp_path / "video0"))
    caplog.set_level(logging.INFO, logger="device.capture.sources")
    source = open_source(camera("auto"))
    assert source.description.startswith("demo")
    assert any("auto -> demo" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- picamera2 (faked)


class FakeRequest:
    def __init__(self, camera: FakePicamera2) -> None:
        self.camera = camera
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        self.camera.calls.append(("make_array", name))
        if self.camera.fail_make_array:
            raise RuntimeError("buffer vanished")
        config = self.camera.camera_config[name]
        width, height = config["size"]
        if name == "main":
            return np.full((height, width, 3), (255, 0, 0), np.uint8)  # [B, G, R]: blue
        stride = config["stride"]
        return self.camera.yuv_padded(width, height, stride)

    def release(self) -> None:
        assert not self.released, "released twice"
        self.released = True
        self.camera.calls.append(("release",))


class FakePicamera2:
    """Records calls to the documented picamera2 API used by Picamera2Source."""

    instances: ClassVar[list[FakePicamera2]] = []
    cameras: ClassVar[list[dict]] = [{"Model": "imx708", "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    stride_padding = 64

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.requests: list[FakeRequest] = []
        self.fail_make_array = False
        self.camera_config: dict = {}
        self.picture = np.zeros((2, 2, 3), np.uint8)
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return FakePicamera2.cameras

    def create_video_configuration(self, main: dict, lores: dict) -> dict:
        self.calls.append(("create_video_configuration", main, lores))
        return {"main": dict(main), "lores": dict(lores)}

    def configure(self, config: dict) -> None:
        self.calls.append(("configure",))
        self.camera_config = config
        width = config["lores"]["size"][0]
        config["lores"]["stride"] = width + self.stride_padding

    def start(self) -> None:
        self.calls.append(("start",))

    def capture_request(self, wait: float | None = None) -> FakeRequest:
        assert wait is not None and 0 < wait <= 2, "a bounded wait keeps stop() prompt"
        request = FakeRequest(self)
        self.requests.append(request)
        return request

    def yuv_padded(self, width: int, height: int, stride: int) -> np.ndarray:
        """A real I420 picture laid out with picamera2's padded stride."""
        bgr = np.zeros((height, width, 3), np.uint8)
        bgr[:, : width // 2] = (0, 0, 255)  # red left half, green right half
        bgr[:, width // 2 :] = (0, 255, 0)
        self.picture = bgr
        return pad_i420(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), width, height, stride)

    def stop(self) -> None:
        self.calls.append(("stop",))

    def close(self) -> None:
        self.calls.append(("close",))


def pad_i420(packed: np.ndarray, width: int, height: int, stride: int) -> np.ndarray:
    out = np.full((height * 3 // 2, stride), 77, np.uint8)  # 77: padding garbage
    out[:height, :width] = packed[:height]
    chroma = packed[height:].reshape(height, width // 2)  # U rows then V rows
    view = out[height:].reshape(height, stride // 2)
    view[:, : width // 2] = chroma
    return out


@pytest.fixture
def fake_picamera2(monkeypatch):
    FakePicamera2.instances = []
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    return FakePicamera2


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


def test_auto_prefers_an_attached_pi_camera_but_not_a_usb_one(
    fake_picamera2, monkeypatch, tmp_path
):
    monkeypatch.setattr(sources, "V4L2_DEFAULT", str(tmp_path / "video0"))
    assert isinstance(open_source(camera("auto")), Picamera2Source)
    monkeypatch.setattr(
        FakePicamera2, "cameras", [{"Model": "uvcvideo", "Id": "/base/axi/usb@0/1-1.2:1.0"}]
    )
    assert open_source(camera("auto")).description.startswith("demo")


# ---------------------------------------------------------------- latest-frame slot


def test_slot_keeps_the_latest_frame_and_counts_drops():
    slot = LatestFrameSlot()
    frames = [make_frame(np.zeros((2, 2, 3), np.uint8), "BGR", i) for i in range(3)]
    for frame in frames:
        slot.put(frame)
    assert slot.dropped == 2
    assert slot.get(timeout=0) is frames[2]
    start = time.monotonic()
    assert slot.get(timeout=0.05) is None  # waits for a new frame, not the old one
    assert time.monotonic() - start >= 0.04
    assert slot.wait_taken(timeout=0)


def test_slot_close_wakes_a_waiting_consumer():
    slot = LatestFrameSlot()
    result: list[object] = []
    consumer = threading.Thread(target=lambda: result.append(slot.get(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    slot.close()
    consumer.join(1)
    assert result == [None] and not consumer.is_alive()
    slot.put(make_frame(np.zeros((2, 2, 3), np.uint8), "BGR", 1))
    assert slot.get(timeout=0) is None and slot.dropped == 0


# ---------------------------------------------------------------- capture thread


def test_capture_thread_paces_a_file_without_busy_waiting(tmp_path):
    path = write_video(tmp_path / "v.avi", frames=20)
    slot = LatestFrameSlot()
    thread = CaptureThread(camera(str(path), source_fps=50), slot)
    cpu0, start = time.process_time(), time.monotonic()
    thread.start()
    frames: list[Frame] = []
    try:
        deadline = start + 5
        while time.monotonic() < deadline and not (frames and index_of(frames[-1].image) == 19):
            frame = slot.get(timeout=0.2)
            if frame is not None:
                frames.append(frame)
        elapsed, cpu = time.monotonic() - start, time.process_time() - cpu0
    finally:
        thread.stop()
    indices = [index_of(f.image) for f in frames]
    # In order; on a loaded machine the consumer may miss one (latest frame wins, counted).
    assert indices == sorted(set(indices)) and indices[-1] == 19
    assert len(frames) + slot.dropped == 20
    assert elapsed >= 0.3  # 19 intervals of 20 ms
    span = frames[-1].monotonic - frames[0].monotonic
    assert span >= 0.75 * 0.02 * (indices[-1] - indices[0])
    assert cpu < 0.5 * elapsed, f"{cpu:.2f} s CPU in {elapsed:.2f} s"
    assert thread.status.frames == 20 and thread.status.state == "stopped"


def test_unpaced_file_waits_for_the_consumer_and_drops_nothing(tmp_path):
    path = write_video(tmp_path / "v.avi", frames=30)
    slot = LatestFrameSlot()
    thread = CaptureThread(camera(str(path), source_fps=float("inf"), reopen=FAST), slot)
    thread.start()
    try:
        frames = []
        for _ in range(30):
            time.sleep(0.002)  # a consumer slower than decoding
            frame = slot.get(timeout=2)
            assert frame is not None
            frames.append(frame)
    finally:
        thread.stop()
    assert [index_of(f.image) for f in frames] == list(range(30))
    assert slot.dropped == 0


def test_a_file_that_ends_is_reported_and_reopened(tmp_path):
    full = write_video(tmp_path / "full.avi", frames=30)
    truncated = tmp_path / "truncated.avi"
    data = full.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    statuses = Collector()
    slot = LatestFrameSlot()
    thread = CaptureThread(
        camera(str(truncated), source_fps=500, reopen=FAST), slot, on_status=statuses
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        ids = []
        while thread.status.reopens < 2 and time.monotonic() < deadline:
            frame = slot.get(timeout=0.1)
            if frame is not None:
                ids.append(frame.frame_id)
    finally:
        thread.stop()
    assert thread.status.reopens >= 2
    states = statuses.states
    assert states[:3] == ["starting", "streaming", "ended"]
    assert states.count("ended") >= 2 and states[-1] == "stopped"
    ended = next(s for s in statuses.statuses if s.state == "ended")
    assert "truncated.avi" in ended.reason and "end of stream" in ended.reason
    assert ids == sorted(set(ids))  # increasing across reopens


class FlakySource:
    """A live fake camera: frames, then a failure, on every open."""

    live = True
    description = "fake camera"

    def __init__(self, fail_after: int = 3, bad_shape_at: int | None = None) -> None:
        self.fail_after, self.bad_shape_at = fail_after, bad_shape_at
        self.opens = self.closes = self.reads = 0
        self.is_open = False

    def open(self) -> None:
        self.opens += 1
        self.reads = 0
        self.is_open = True

    def read(self) -> Frame | None:
        assert self.is_open
        self.reads += 1
        if self.reads == self.bad_shape_at:
            return make_frame(np.zeros((4, 4), np.uint8), "BGR", self.reads)
        if self.reads > self.fail_after:
            raise RuntimeError("cable pulled")
        time.sleep(0.002)
        return make_frame(np.zeros((4, 4, 3), np.uint8), "BGR", self.reads)  # restarts at 1

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self.closes += 1
        self.is_open = False


def run_flaky(fake: FlakySource, caplog, reopens: int = 3) -> tuple[CaptureThread, list[Frame]]:
    slot, statuses = LatestFrameSlot(), Collector()
    caplog.set_level(logging.INFO, logger="device.capture.sources")
    thread = CaptureThread(
        camera(0, reopen=FAST), slot, source_factory=lambda cam: fake, on_status=statuses
    )
    thread.start()
    frames = []
    deadline = time.monotonic() + 5
    try:
        while thread.status.reopens < reopens and time.monotonic() < deadline:
            frame = slot.get(timeout=0.05)
            if frame is not None:
                frames.append(frame)
    finally:
        thread.stop()
    thread.statuses = statuses  # type: ignore[attr-defined]
    return thread, frames


def test_a_source_that_raises_is_reopened_and_frame_ids_keep_increasing(caplog):
    fake = FlakySource(fail_after=3)
    thread, frames = run_flaky(fake, caplog)
    assert fake.opens >= 4 and fake.closes == fake.opens  # closed before each reopen
    ids = [f.frame_id for f in frames]
    assert len(ids) >= 4 and ids == sorted(set(ids))
    assert "reconnecting" in thread.statuses.states and thread.status.state == "stopped"
    reconnecting = next(s for s in thread.statuses.statuses if s.state == "reconnecting")
    assert "cable pulled" in reconnecting.reason and "fake camera" in reconnecting.reason
    tracebacks = [r for r in caplog.records if r.exc_info and "cable pulled" in r.getMessage()]
    assert len(tracebacks) == 1  # logged with its traceback once, not per failure
    changes = [r for r in caplog.records if "reconnecting" in r.getMessage()]
    assert len(changes) <= fake.opens  # once per change, never per frame


def test_a_frame_of_the_wrong_shape_makes_a_live_source_reopen(caplog):
    fake = FlakySource(fail_after=100, bad_shape_at=2)
    thread, _ = run_flaky(fake, caplog, reopens=1)
    reasons = [s.reason for s in thread.statuses.statuses if s.state == "reconnecting"]
    assert reasons and "shape (4, 4)" in reasons[0]


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    delays = [backoff_delay(a, 1.0, 30.0, rng=1.0) for a in range(7)]
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, 1.0, 30.0, rng=0.0) == 4.0  # jitter keeps at least half

    def never_opens(cam: CameraConfig):
        raise SourceError("no camera")

    waits: list[float] = []
    thread = CaptureThread(
        camera(0, reopen=BackoffConfig(min_delay=0.5, max_delay=2.0)),
        LatestFrameSlot(),
        source_factory=never_opens,
        sleep=lambda s: (waits.append(s), len(waits) >= 5 and thread.stop()),
        rng=lambda: 1.0,
    )
    thread.start()
    thread.join(2)
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert thread.status.state == "stopped"


def test_stop_is_prompt_even_during_a_long_backoff():
    def never_opens(cam: CameraConfig):
        raise SourceError("no camera")

    statuses = Collector()
    thread = CaptureThread(
        camera(0, reopen=BackoffConfig(min_delay=20, max_delay=60)),
        LatestFrameSlot(),
        source_factory=never_opens,
        on_status=statuses,
    )
    thread.start()
    deadline = time.monotonic() + 2
    while thread.status.state != "reconnecting" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread.status.reason == "no camera"
    start = time.monotonic()
    thread.stop(timeout=2.0)
    assert time.monotonic() - start < 2.0 and not thread.is_alive()
    assert statuses.states == ["starting", "reconnecting", "stopped"]


def test_snapshot_through_the_thread_is_none_for_opencv_sources(tmp_path):
    path = write_video(tmp_path / "v.avi", frames=3)
    slot = LatestFrameSlot()
    thread = CaptureThread(camera(str(path), source_fps=100), slot)
    assert thread.snapshot() is None  # no source yet
    thread.start()
    try:
        assert slot.get(timeout=2) is not None
        assert thread.snapshot() is None
        assert thread.status.source == f"video {path}"
    finally:
        thread.stop()


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
