"""Cascade stages: the models a camera's frames go through.

The camera's main model is the first stage (``MAIN_STAGE``, named in the payloads); each
``cascade`` entry of its config adds one that runs only while the main state holds one of its
``when`` labels. Every stage debounces its own predictions with its own
:class:`~device.run.smoothing.Smoother`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from device.config import SmoothingConfig
from device.inference.bundle import Manifest
from device.inference.decode import Prediction
from device.inference.engine import Classifier, StageTimes
from device.inference.frames import FrameFormat, Roi
from device.inference.taxonomy import ancestor_sets
from device.run.scores import decision_thresholds, frame_scores
from device.run.smoothing import Smoother, Transition


@dataclass
class CascadeStage:
    """One model applied to a camera's frames: the main one, or a cascade stage.

    For hierarchical models, cascade triggers (and the smoother's ``include`` / ``exclude``)
    match a label or any of its ancestors: ``when: [insect]`` fires on "bee".
    """

    name: str
    classifier: Classifier
    smoother: Smoother
    when: frozenset[str] = frozenset()  # cascade: main labels that trigger it
    ancestors: Mapping[str, frozenset[str]] = field(default_factory=dict)
    prediction: Prediction | None = None  # the latest one; None while the stage is idle
    # An interpreter is not thread-safe, and cameras on the same bundle share one: this lock
    # (one per classifier) serializes their classify() calls and the timings read after it.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        name: str,
        classifier: Classifier,
        smoothing: SmoothingConfig,
        when: Sequence[str] = (),
        lock: threading.Lock | None = None,
    ) -> CascadeStage:
        manifest = classifier.bundle.manifest
        ancestors = ancestor_sets(manifest.taxonomy)
        smoother = Smoother(
            smoothing,
            multi_label=manifest.task == "multilabel",
            thresholds=decision_thresholds(manifest),
            ancestors=ancestors,
        )
        return cls(
            name, classifier, smoother, frozenset(when), ancestors, lock=lock or threading.Lock()
        )

    @property
    def manifest(self) -> Manifest:
        return self.classifier.bundle.manifest

    @property
    def labels(self) -> tuple[str, ...]:
        """The published (debounced) labels."""
        return self.smoother.state

    @property
    def smoothed(self) -> dict[str, float]:
        return self.smoother.smoothed

    def with_ancestors(self, labels: Iterable[str]) -> set[str]:
        """The labels and every ancestor of each (just the labels for a flat model)."""
        found: set[str] = set()
        for label in labels:
            found |= self.ancestors.get(label, {label})
        return found

    def triggered_by(self, main_labels: set[str]) -> bool:
        """Whether this stage runs on a frame whose main state (with ancestors) is these."""
        return not self.when or bool(self.when & main_labels)

    def classify(self, image: np.ndarray, frame_format: FrameFormat, roi: Roi | None) -> StageTimes:
        """Classify one frame into :attr:`prediction`; returns the time each step took."""
        with self.lock:
            self.prediction = self.classifier.classify(image, frame_format, roi)
            return self.classifier.timings

    def smooth(self, at: float) -> Transition | None:
        """Feed the latest prediction to the smoother."""
        assert self.prediction is not None
        return self.smoother.update(at, frame_scores(self.prediction))

    def idle(self, at: float) -> Transition | None:
        """Feed "nothing", so the stage's state ends when its trigger label goes."""
        transition = self.smoother.update(at, {})
        self.prediction = None
        return transition
