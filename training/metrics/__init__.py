"""Evaluation figures, threshold calibration and classical baselines.

Pure functions over numpy arrays (no TensorFlow), shared by ``kestrel train`` and ``kestrel eval``.

Conventions, for every function here:

- ``task`` is one of ``binary``, ``multiclass``, ``multilabel``, ``hierarchical``.
- ``probs`` are probabilities in label order, as :func:`device.inference.decode.make_probabilities`
  gives them: (N, L) for multiclass / hierarchical (L leaves) / multilabel; for binary (N, 2)
  ``[negative, positive]``, (N, 1) or (N,) holding P(positive).
- ``targets`` are (N,) integer indices into ``labels`` (binary: 1 = the positive class, the
  second label), or for multilabel an (N, L) 0/1 matrix.

Decisions (the binary answer, "unknown", the active multilabel set, the hierarchical back-off)
are made by the device's own decoders in :mod:`device.inference.decode`, so the figures here are
the figures of the device, not of a re-implementation.

The modules: :mod:`.figures` (:func:`compute_metrics`), :mod:`.thresholds` (:func:`calibrate`),
:mod:`.hierarchy` (the taxonomy walk, back-off threshold and figures), :mod:`.baselines`,
and the building blocks :mod:`.checks`, :mod:`.search` and :mod:`.per_class`. The int8
accuracy gate is :mod:`training.gate`.
"""

from training.metrics.baselines import BASELINE_MAX_TRAIN, baselines
from training.metrics.figures import compute_metrics
from training.metrics.hierarchy import (
    MAX_HIERARCHY_THRESHOLD,
    MIN_HIERARCHY_THRESHOLD,
    greedy_paths,
    stop_depth,
)
from training.metrics.per_class import FULL_CONFUSION_MAX_LABELS
from training.metrics.search import MIN_VAL_IMAGES, MIN_VAL_POSITIVES
from training.metrics.thresholds import Calibration, calibrate

__all__ = [
    "BASELINE_MAX_TRAIN",
    "FULL_CONFUSION_MAX_LABELS",
    "MAX_HIERARCHY_THRESHOLD",
    "MIN_HIERARCHY_THRESHOLD",
    "MIN_VAL_IMAGES",
    "MIN_VAL_POSITIVES",
    "Calibration",
    "baselines",
    "calibrate",
    "compute_metrics",
    "greedy_paths",
    "stop_depth",
]
