"""Which frames a camera keeps for its dataset (``collect:``), decided per classified frame.

The worker asks :meth:`CollectPolicy.decide` after every stage ran on a frame; it costs a few
comparisons of floats, so inference never waits. A frame is kept for one reason, the first
that applies, in this order:

- ``transition``: a stage's debounced state changed on this frame (the frame that did it).
- ``uncertain``: a stage answered ``unknown``; or a score it is judged on lies within
  ``uncertain_margin`` of the bundle's calibrated threshold (binary: the positive score;
  multiclass: the top score against the abstain threshold; multilabel: every label against its
  own; hierarchical: the nodes of the answer's path and the top leaf against the hierarchy
  threshold -- a bundle without thresholds is judged against 0.5, as the smoother does); or the
  state is flip-flopping: where the smoother is heading (the candidate waiting out
  ``min_dwell``, else the published state) changed :data:`FLIP_CHANGES` times within
  :data:`FLIP_SECONDS` -- flicker the smoother swallowed, or transitions in quick succession.
- ``interval``: ``interval_minutes`` since the last interval frame, a candidate is offered at
  most every :data:`PROBE_SECONDS`; the collector's thread keeps it only when its colour
  histogram lies at least ``min_difference`` (Bhattacharyya distance) from each of the last
  :data:`RECENT_KEPT` kept frames -- Frigate's measure for picking distinct keyframes.

Each reason keeps at most ``max_per_minute`` frames in any 60 s, so a scene the model is
always unsure of cannot crowd out the transitions; ``uncertain`` frames are also spread out,
at least ``60 / max_per_minute`` s apart (a still, unsure scene gives an even sample, not a
burst of near-copies). A frame refused for these is counted in ``rate_limited``.
Times are the frames' ``monotonic`` stamps, passed in: tests need no clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from device.config.collect import CollectConfig, CollectReason
from device.inference.bundle import Manifest
from device.inference.decode import UNKNOWN, LabelScore, Prediction
from device.inference.frames import FrameFormat, Roi, crop_roi, to_bgr
from device.run.cascade import CascadeStage
from device.run.scores import decision_thresholds

FLIP_CHANGES = 3  # state changes (or abandoned candidates) ...
FLIP_SECONDS = 60.0  # ... within this many seconds: the state is flip-flopping
PROBE_SECONDS = 5.0  # interval: a due camera offers a frame at most this often
RECENT_KEPT = 20  # interval: kept frames a candidate must differ from (Frigate keeps 20)
RATE_WINDOW = 60.0  # max_per_minute counts the frames kept in this many seconds
HISTOGRAM_SIZE = (160, 120)  # frames are shrunk to this before their histogram is taken


@dataclass(frozen=True)
class Verdict:
    """Why a frame is kept: the reason (a config keyword) and what made it so, for people."""

    reason: CollectReason
    why: str


def judged_scores(prediction: Prediction) -> tuple[LabelScore, ...]:
    """The scores the bundle's decision rests on (see the module docstring)."""
    task = prediction.task
    if task in ("binary", "multiclass"):
        return prediction.scores[:1]  # binary: the positive label's score comes first
    if task == "hierarchical":
        return (*prediction.path, *prediction.scores[:1])
    return prediction.scores


def unsure_why(prediction: Prediction | None, manifest: Manifest, margin: float) -> str | None:
    """Why a prediction counts as unsure ("unknown", a score near its threshold), or None."""
    if prediction is None:
        return None
    if prediction.label == UNKNOWN:
        return "unknown"
    per_label, default = decision_thresholds(manifest)
    for x in judged_scores(prediction):
        threshold = per_label.get(x.label, default)
        if abs(x.score - threshold) <= margin:
            return f"{x.label} {x.score:.2f} near its threshold {threshold:.2f}"
    return None


def colour_histogram(image: np.ndarray, frame_format: FrameFormat, roi: Roi | None) -> np.ndarray:
    """The HSV 8x8x8 histogram of what the model sees (the region of interest), normalized."""
    picture = crop_roi(to_bgr(image, frame_format), roi)
    small = cv2.resize(picture, HISTOGRAM_SIZE, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 8, 8], [0, 180, 0, 256, 0, 256])
    return cv2.normalize(hist, hist).flatten()


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance: 0 for the same colours, 1 for nothing in common."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


class _StageWatch:
    """One stage's state across frames: its transitions, and where it is heading (the
    candidate waiting out ``min_dwell``, else the published state) for flip-flop: a clean
    transition changes the heading once, flicker on every frame."""

    def __init__(self) -> None:
        self.labels: frozenset[str] = frozenset()  # every state starts empty
        self.heading: frozenset[str] = frozenset()
        self.changes: deque[float] = deque()  # times the heading changed

    def observe(self, at: float, labels: tuple[str, ...], pending: tuple[str, ...] | None) -> bool:
        """Record this frame's state; True when it changed the published state."""
        published = frozenset(labels)
        heading = frozenset(pending) if pending is not None else published
        if heading != self.heading:
            self.changes.append(at)
        while self.changes and self.changes[0] < at - FLIP_SECONDS:
            self.changes.popleft()
        changed = published != self.labels
        self.labels, self.heading = published, heading
        return changed

    @property
    def flip_flopping(self) -> bool:
        return len(self.changes) >= FLIP_CHANGES


class CollectPolicy:
    """The per-frame decisions of one camera (see the module docstring).

    :meth:`decide` runs on the inference thread; :meth:`distinct`, :meth:`kept` and
    :meth:`release` on the collector's. The rate window is shared under a lock.
    """

    def __init__(self, config: CollectConfig) -> None:
        self.config = config
        self.reasons = frozenset(config.reasons)
        self.rate_limited = 0
        self._watches: dict[str, _StageWatch] = {}
        self._interval_s = config.interval_minutes * 60.0
        self._last_interval: float | None = None  # when the last interval frame was kept
        self._next_probe = float("-inf")
        self._recent: deque[np.ndarray] = deque(maxlen=RECENT_KEPT)
        # Per reason, the times of the frames admitted, oldest first.
        self._windows: dict[str, deque[float]] = {reason: deque() for reason in self.reasons}
        self._spacing = RATE_WINDOW / config.max_per_minute  # between uncertain frames
        self._lock = threading.Lock()

    def decide(self, at: float, stages: Sequence[CascadeStage]) -> Verdict | None:
        """The verdict on a frame every stage has seen (at monotonic time ``at``), or None."""
        verdict = self._verdict(at, stages)
        if verdict is None:
            return None
        if not self._admit(verdict.reason, at):
            self.rate_limited += 1
            return None
        if verdict.reason == "interval":
            self._next_probe = at + min(PROBE_SECONDS, self._interval_s)
        return verdict

    def _verdict(self, at: float, stages: Sequence[CascadeStage]) -> Verdict | None:
        changed: list[str] = []
        unsure: list[str] = []
        for stage in stages:
            watch = self._watches.setdefault(stage.name, _StageWatch())
            before = watch.labels
            if watch.observe(at, stage.labels, stage.smoother.pending):
                was = ", ".join(sorted(before)) or "-"
                changed.append(f"{stage.name}: {was} -> {', '.join(stage.labels) or '-'}")
            if "uncertain" not in self.reasons:
                continue
            why = unsure_why(stage.prediction, stage.manifest, self.config.uncertain_margin)
            if why is None and watch.flip_flopping:
                why = f"flip-flop ({len(watch.changes)} changes in {FLIP_SECONDS:g} s)"
            if why is not None:
                unsure.append(f"{stage.name}: {why}")
        if changed and "transition" in self.reasons:
            return Verdict("transition", "; ".join(changed))
        if unsure:
            return Verdict("uncertain", "; ".join(unsure))
        if "interval" in self.reasons and self._interval_due(at):
            return Verdict("interval", f"every {self.config.interval_minutes:g} min")
        return None

    def _interval_due(self, at: float) -> bool:
        if at < self._next_probe:
            return False
        return self._last_interval is None or at - self._last_interval >= self._interval_s

    def _admit(self, reason: CollectReason, at: float) -> bool:
        with self._lock:
            window = self._windows[reason]
            while window and window[0] <= at - RATE_WINDOW:
                window.popleft()
            if len(window) >= self.config.max_per_minute:
                return False
            if reason == "uncertain" and window and at - window[-1] < self._spacing:
                return False
            window.append(at)
            return True

    def release(self, verdict: Verdict, at: float) -> None:
        """A frame admitted at ``at`` was not kept after all: it frees its place."""
        with self._lock:
            window = self._windows[verdict.reason]
            if at in window:
                window.remove(at)

    def distinct(self, histogram: np.ndarray) -> bool:
        """Whether an interval candidate differs enough from each of the last kept frames."""
        return all(
            histogram_distance(histogram, kept) >= self.config.min_difference
            for kept in self._recent
        )

    def kept(self, verdict: Verdict, at: float, histogram: np.ndarray) -> None:
        """A frame was written: later interval candidates are compared with it."""
        self._recent.append(histogram)
        if verdict.reason == "interval":
            self._last_interval = at
