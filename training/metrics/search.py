"""Searching a decision threshold on validation scores.

The device decides ``score >= t``; these helpers find the t that maximises F1, and say how
much validation data a fitted threshold needs before it means anything.
"""

from __future__ import annotations

import numpy as np

# Calibration falls back to the documented defaults (Thresholds' own: 0.5, no abstain) below
# these sizes: a threshold fitted to a handful of images is noise.
MIN_VAL_IMAGES = 10  # binary / multiclass / hierarchical
MIN_VAL_POSITIVES = 2  # binary and each multilabel label: positives and negatives each


def f1_curve(scores: np.ndarray, positives: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """F1 of the rule ``score >= t`` for every candidate t, in O((N + T) log N)."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # suffix[i] = positives among sorted_scores[i:]
    suffix = np.concatenate([np.cumsum(positives[order][::-1])[::-1], [0.0]])
    first = np.searchsorted(sorted_scores, candidates, side="left")
    predicted = len(scores) - first
    tp = suffix[first]
    total = positives.sum()
    denominator = predicted + total
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1e-12), 0.0)


def candidates(scores: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """Thresholds halfway between consecutive distinct scores, plus 0.5 and the ends.

    With the device's rule ``score >= t`` every threshold in (previous score, score] makes
    the same decisions, so the midpoints (and the ends) cover every possible outcome; they leave
    the same margin on both sides of the boundary, which generalises better than a threshold
    that touches a validation score.
    """
    distinct = np.unique(scores.astype(np.float64))
    middles = (distinct[:-1] + distinct[1:]) / 2
    points = np.concatenate([middles, [0.5, low, high]])
    return np.unique(np.clip(points, low, high))


def best_threshold(scores: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """The F1-maximising threshold and its F1; among ties, the one closest to 0.5 (the
    uncalibrated default), so separable data gets a threshold in the middle of the gap."""
    points = candidates(scores)
    f1 = f1_curve(scores, positives, points)
    best = f1.max()
    tied = points[f1 >= best - 1e-9]
    threshold = float(tied[np.argmin(np.abs(tied - 0.5))])
    return round(threshold, 6), float(best)
