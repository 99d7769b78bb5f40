"""The capture thread: pacing, backpressure, reopening with backoff, status."""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np
import pytest
from capture_helpers import FAST, Collector, camera, index_of, write_video

from device.capture import (
    CaptureThread,
    Frame,
    LatestFrameSlot,
    SourceError,
    backoff_delay,
    make_frame,
)
from device.config import BackoffConfig, CameraConfig


class VirtualTime:
    """An injected clock and sleep: time moves only when the capture thread waits, so its
    schedule can be checked exactly, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingSlot(LatestFrameSlot):
    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    def put(self, frame: Frame) -> None:
        self.frames.append(frame)
        super().put(frame)


def test_capture_thread_paces_a_file_with_one_wait_per_frame(tmp_path):
    """20 frames at 50 fps: each frame after the first waits exactly its 20 ms, in one wait
    (no polling, no busy loop), and is stamped on the schedule."""
    path = write_video(tmp_path / "v.avi", frames=20)
    slot, time_ = RecordingSlot(), VirtualTime()

    def stop_at_the_end(name: str, status) -> None:
        if status.state == "ended":
            thread.stop()

    thread = CaptureThread(
        camera(str(path), source_fps=50),
        slot,
        on_status=stop_at_the_end,
        clock=time_.clock,
        sleep=time_.sleep,
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert [index_of(f.image) for f in slot.frames] == list(range(20))
    assert time_.sleeps[:19] == pytest.approx([0.02] * 19)
    assert len(time_.sleeps) == 20  # the last: the reopen backoff after the end, then stop()
    stamps = [f.monotonic for f in slot.frames]
    assert [b - a for a, b in itertools.pairwise(stamps)] == pytest.approx([0.02] * 19)
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
    caplog.set_level(logging.INFO, logger="device.capture.thread")
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


def test_the_console_line_of_a_stopped_source_reads_as_a_sentence(tmp_path):
    import io

    from device.publish.payloads import status_payload
    from device.publish.sinks import ConsoleSink

    path = write_video(tmp_path / "v.avi", frames=5)
    collector = Collector()
    slot = LatestFrameSlot()
    thread = CaptureThread(camera(str(path), loop=True), slot, on_status=collector)
    thread.start()
    try:
        assert slot.get(timeout=5) is not None
    finally:
        thread.stop()
    assert collector.states[-1] == "stopped"
    stream = io.StringIO()
    console = ConsoleSink(stream)
    console.publish_status("cam", status_payload(collector.statuses[-1]))
    console.close(timeout=2)
    line = stream.getvalue()
    assert line.rstrip().endswith("cam: source stopped on request"), line
