"""The capture thread: one per camera, reading its source into a :class:`LatestFrameSlot`.

Latest-frame design
-------------------
One :class:`CaptureThread` per camera reads frames as the source delivers them and hands each
to a :class:`LatestFrameSlot`, a one-frame mailbox: a new frame replaces one that inference
has not taken yet, and the replaced frame is counted as dropped. So a slow model never makes
a live camera's frames queue up (latency stays one frame, memory stays bounded), and a fast
model never waits longer than the next frame. The slot's counter is how the daemon reports
dropped frames.

Decoding a frame that is then dropped is wasted CPU, so the thread decodes no more than
it must:

* Live cameras deliver at their own pace; each frame is read once, as it arrives.
* Recorded sources (files, folders) are paced by the thread, not by the source: it decodes
  the next frame, then waits for its due time on an ``Event`` (no busy wait, and ``stop()``
  interrupts it), so it decodes exactly the frames it delivers. A file paced at its own rate
  has nothing to skip: if decoding falls behind, the schedule slips instead of bursting to
  catch up (like a camera would, minus the drops).
* ``source_fps: .inf`` replays a file as fast as inference takes the frames: the thread decodes
  one frame ahead and waits for the slot to be emptied before handing it over, so decoding
  overlaps inference and no frame is decoded for nothing (benchmarks, offline runs).

Failures
--------
A source that fails (an exception, a live camera that delivers no frame, a frame of the wrong
shape) or ends (a file without ``loop``) is closed and reopened with exponential backoff and
jitter (``camera.reopen``). A file without ``loop`` is therefore replayed after the backoff
delay: its status goes ``streaming -> ended -> streaming``. The thread never dies because of
its source; status changes (not frames) are logged and reported through ``on_status``. Frame
ids are assigned by the thread, so they keep increasing across reopens.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from device.capture.base import Frame, FrameSource, SourceError, check_frame
from device.capture.handoff import LatestFrameSlot
from device.capture.registry import open_source
from device.config import CameraConfig

log = logging.getLogger(__name__)

FPS_SMOOTHING = 0.1  # weight of the newest frame interval in the fps moving average
BACKPRESSURE_POLL = 0.2  # s; how often a waiting capture thread checks for stop()

SourceState = Literal["starting", "streaming", "reconnecting", "ended", "stopped"]
STOPPED_REASON = "on request"  # the console reads "<camera>: source stopped on request"
# What one session with an opened source ended in: (state, reason, delivered any frame).
SessionEnd = tuple[SourceState, str, bool]


@dataclass
class SourceStatus:
    """What a camera's capture is doing; published by the daemon on changes and in stats."""

    state: SourceState
    reason: str
    frames: int = 0
    dropped: int = 0
    reopens: int = 0  # successful opens after the first
    fps: float = 0.0  # moving average of the delivered frame rate
    source: str = ""  # the source's description (never a password)
    since: float = field(default_factory=time.time)  # time.time() of the last state change


def backoff_delay(attempt: int, min_delay: float, max_delay: float, rng: float) -> float:
    """Exponential backoff with "equal jitter": in [d/2, d] for d = min * 2**attempt <= max."""
    delay = min(max_delay, min_delay * 2 ** min(attempt, 60))
    return delay * (0.5 + 0.5 * rng)


class _Pacer:
    """The schedule of a recorded source: one frame every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: float | None = None

    def wait_time(self, now: float) -> float:
        """Seconds until the next frame is due (0: now). A schedule that fell behind (slow
        decoding) slips to ``now`` instead of bursting to catch up."""
        self._due = now if self._due is None else self._due + self.interval
        if self._due > now:
            return self._due - now
        if now - self._due > self.interval:
            self._due = now
        return 0.0


class _FrameRate:
    """Moving average of the delivered frame rate."""

    def __init__(self) -> None:
        self._last: float | None = None
        self._mean_interval: float | None = None

    def tick(self, now: float) -> float | None:
        """Count a frame delivered at ``now``; the frames per second so far, None before two."""
        if self._last is not None and now > self._last:
            interval = now - self._last
            mean = interval if self._mean_interval is None else self._mean_interval
            self._mean_interval = mean + FPS_SMOOTHING * (interval - mean)
        self._last = now
        return 1.0 / self._mean_interval if self._mean_interval else None


class CaptureThread(threading.Thread):
    """Reads one camera into a :class:`LatestFrameSlot`, reopening it on failure forever.

    ``sleep``, ``clock`` and ``rng`` exist for tests. By default the waits (backoff, pacing)
    are ``Event.wait`` calls that :meth:`stop` interrupts.
    """

    def __init__(
        self,
        camera: CameraConfig,
        slot: LatestFrameSlot,
        *,
        source_factory: Callable[[CameraConfig], FrameSource] = open_source,
        on_status: Callable[[str, SourceStatus], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(name=f"capture-{camera.name}", daemon=True)
        self.camera = camera
        self.slot = slot
        self._factory = source_factory
        self._on_status = on_status
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._status = SourceStatus("starting", "opening the source", source=str(camera.source))
        self._source: FrameSource | None = None
        self._opened_once = False
        self._frame_id = 0
        self._logged_errors: set[str] = set()

    # -- public

    @property
    def status(self) -> SourceStatus:
        """A copy of the current status (``dropped`` read from the slot)."""
        with self._lock:
            return replace(self._status, dropped=self.slot.dropped)

    @property
    def source(self) -> FrameSource | None:
        return self._source

    def snapshot(self) -> np.ndarray | None:
        """The source's full-resolution frame when it has one (see ``FrameSource``)."""
        source = self._source
        if source is None:
            return None
        try:
            return source.snapshot()
        except Exception as exc:
            log.warning("camera %s: snapshot failed: %s", self.camera.name, exc)
            return None

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing and wait up to ``timeout`` s for the thread to end.

        A read blocked inside a driver (bounded by the source's read timeout) can outlast
        ``timeout``; the thread is a daemon thread and then finishes on its own.
        """
        self._stop_event.set()
        if threading.current_thread() is self or not self.is_alive():
            return
        self.join(timeout)
        if self.is_alive():
            log.warning("camera %s: capture still busy after %.1f s", self.camera.name, timeout)

    def run(self) -> None:
        self._set_state("starting", "opening the source", force=True)
        attempt = 0
        while not self._stop_event.is_set():
            state: SourceState
            try:
                state, reason, delivered = self._session()
            except Exception as exc:  # a bug of ours: never let it end capture
                state, delivered = "reconnecting", False
                reason = self._reason("capture error", exc, self._source)
            if self._stop_event.is_set():
                break
            if delivered:
                attempt = 0  # the source worked: the next failure starts from min_delay
            self._set_state(state, reason)
            backoff = self.camera.reopen
            delay = backoff_delay(attempt, backoff.min_delay, backoff.max_delay, self._rng())
            attempt += 1
            if self._wait(delay):
                break
        self._set_state("stopped", STOPPED_REASON)

    # -- status and logging

    def _set_state(self, state: SourceState, reason: str, *, force: bool = False) -> None:
        with self._lock:
            if not force and (state, reason) == (self._status.state, self._status.reason):
                return
            self._status.state, self._status.reason = state, reason
            self._status.since = time.time()
            if state != "streaming":
                self._status.fps = 0.0
            snapshot = replace(self._status, dropped=self.slot.dropped)
        level = logging.WARNING if state in ("reconnecting", "ended") else logging.INFO
        log.log(level, "camera %s: %s (%s)", self.camera.name, state, reason)
        if self._on_status is not None:
            try:
                self._on_status(self.camera.name, snapshot)
            except Exception as exc:
                self._log_once(f"on_status callback failed: {exc!r}", exc)

    def _log_once(self, message: str, exc: BaseException) -> None:
        """Traceback for an unexpected exception, once per distinct message."""
        if message in self._logged_errors:
            return
        if len(self._logged_errors) < 100:
            self._logged_errors.add(message)
        log.error("camera %s: %s", self.camera.name, message, exc_info=exc)

    def _reason(self, what: str, exc: BaseException, source: FrameSource | None) -> str:
        """The status reason for a failure; an unexpected exception is logged (once)."""
        if isinstance(exc, SourceError):
            return str(exc)
        name = source.description if source is not None else f"source {self.camera.source}"
        reason = f"{name}: {what}: {type(exc).__name__}: {exc}"
        self._log_once(reason, exc)
        return reason

    # -- one session: open, stream, close

    def _wait(self, seconds: float) -> bool:
        """Sleep (interruptibly); True when stop() was called."""
        if self._sleep is None:
            return self._stop_event.wait(max(0.0, seconds))
        self._sleep(max(0.0, seconds))
        return self._stop_event.is_set()

    def _session(self) -> SessionEnd:
        """Open the source and stream until it fails, ends or stop()."""
        if self._source is None:
            try:
                self._source = self._factory(self.camera)
            except Exception as exc:
                return "reconnecting", self._reason("cannot create", exc, None), False
            with self._lock:
                self._status.source = self._source.description
        source = self._source
        try:
            source.open()
        except Exception as exc:
            with contextlib.suppress(Exception):
                source.close()
            return "reconnecting", self._reason("cannot open", exc, source), False
        try:
            if self._opened_once:
                with self._lock:
                    self._status.reopens += 1
            self._opened_once = True
            return self._stream(source)
        finally:
            try:
                source.close()
            except Exception as exc:
                self._reason("close failed", exc, source)

    def _stream(self, source: FrameSource) -> SessionEnd:
        live = bool(getattr(source, "live", True))
        interval = getattr(source, "frame_interval", None)
        pacer = _Pacer(interval) if interval is not None and interval > 0 else None
        backpressure = not live and interval == 0
        rate = _FrameRate()
        delivered = False
        live_shape: tuple[int, ...] | None = None
        while not self._stop_event.is_set():
            try:
                frame = source.read()
            except Exception as exc:
                return "reconnecting", self._reason("read failed", exc, source), delivered
            if frame is None:
                if live:
                    return "reconnecting", f"{source.description}: delivered no frame", delivered
                return "ended", f"{source.description}: end of stream", delivered
            if live and live_shape is None:
                live_shape = frame.image.shape
            problem = self._frame_problem(frame, live_shape)
            if problem is not None:
                return "reconnecting", f"{source.description}: {problem}", delivered
            if pacer is not None:
                delay = pacer.wait_time(self._clock())
                if delay > 0 and self._wait(delay):
                    break
            if backpressure and not self._wait_for_consumer():
                return "stopped", STOPPED_REASON, delivered
            self._deliver(frame, rate, restamp=pacer is not None or backpressure)
            if not delivered:
                delivered = True
                self._set_state("streaming", source.description)
        return "stopped", STOPPED_REASON, delivered

    @staticmethod
    def _frame_problem(frame: Frame, live_shape: tuple[int, ...] | None) -> str | None:
        """What makes a frame unusable; a live camera that changes resolution mid-stream is
        renegotiated (``live_shape`` is its first frame's shape, None for recordings)."""
        problem = check_frame(frame)
        if problem is None and live_shape is not None and frame.image.shape != live_shape:
            problem = f"frame shape changed from {live_shape} to {frame.image.shape}"
        return problem

    def _wait_for_consumer(self) -> bool:
        """Wait until inference took the previous frame; False when stop() came first."""
        while not self.slot.wait_taken(BACKPRESSURE_POLL):
            if self._stop_event.is_set():
                return False
        return True

    def _deliver(self, frame: Frame, rate: _FrameRate, *, restamp: bool) -> None:
        """Hand a frame to the slot under the thread's frame id and count it."""
        now = self._clock()
        self._frame_id += 1
        stamps: dict[str, float] = {}
        if restamp:
            # Delivered now: that is the moment a camera would have captured it.
            stamps = {"captured_at": time.time(), "monotonic": now}
        self.slot.put(replace(frame, frame_id=self._frame_id, **stamps))
        fps = rate.tick(now)
        with self._lock:
            self._status.frames += 1
            if fps:
                self._status.fps = fps
