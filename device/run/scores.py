"""What the smoother judges: a prediction's per-label scores, relative to the bundle's thresholds.

The bundle decides with calibrated thresholds (binary, per-label multilabel, the abstain
threshold of multiclass, the hierarchy threshold); the smoother's ``enter`` / ``exit`` levels
are relative to them: each score is scaled so that its threshold sits at :data:`NEUTRAL`.
"""

from __future__ import annotations

from device.inference.bundle import Manifest
from device.inference.decode import UNKNOWN, Prediction

NEUTRAL = 0.5  # the score level that a label's calibrated threshold is scaled to


def frame_scores(prediction: Prediction, *, positive_only_binary: bool = True) -> dict[str, float]:
    """Per-frame candidate scores of a decoded prediction, for :meth:`Smoother.update`.

    - binary: ``{positive: p}``. The negative label means "nothing", so it is left out and a
      negative frame lets the state decay to empty (``positive_only_binary=False`` keeps both,
      for two-sided models such as cat / dog).
    - multiclass: the answer with its score plus the other top-k labels (so the smoother sees
      competitors); ``{}`` when the answer is ``unknown`` (the model abstained).
    - hierarchical: the answer node (the deepest confident one) only -- every ancestor scores
      at least as high as its descendants and would always win; ``{}`` when ``unknown``.
    - multilabel: every label's probability, active or among the top-k scores.

    The smoother judges them relative to the bundle's calibrated decision thresholds (see
    the module docstring), so its state agrees with ``prediction.labels``.
    """
    task = prediction.task
    if task == "binary":
        # decode_binary reports (positive, negative) in that order.
        positive, negative = prediction.scores[0], prediction.scores[1]
        if positive_only_binary:
            return {positive.label: positive.score}
        return {positive.label: positive.score, negative.label: negative.score}
    if task == "multiclass":
        if prediction.label == UNKNOWN:
            return {}
        scores = {x.label: x.score for x in prediction.scores}
        answer = prediction.labels[0]
        scores[answer.label] = answer.score
        return scores
    if task == "hierarchical":
        answer = prediction.labels[0]
        return {} if answer.label == UNKNOWN else {answer.label: answer.score}
    if task == "multilabel":
        return {x.label: x.score for x in (*prediction.scores, *prediction.labels)}
    raise ValueError(
        f"prediction task {task!r}: expected binary, multiclass, multilabel or hierarchical"
    )


def decision_thresholds(manifest: Manifest) -> tuple[dict[str, float], float]:
    """(threshold per label, threshold of every other label) the bundle decides with."""
    thresholds = manifest.thresholds
    task = manifest.task
    if task == "binary":
        negative, positive = manifest.labels
        t = thresholds.binary
        return {positive: t, negative: 1.0 - t}, NEUTRAL
    if task == "multilabel":
        return dict(thresholds.per_label), NEUTRAL
    if task == "multiclass":
        return {}, thresholds.abstain if thresholds.abstain is not None else NEUTRAL
    return {}, thresholds.hierarchy


def scale_to_neutral(threshold: float) -> float:
    """The factor that puts ``threshold`` at :data:`NEUTRAL`."""
    # A threshold of 0 or 1 cannot be scaled to NEUTRAL: judge such a label on its own score.
    return NEUTRAL / threshold if 0.0 < threshold < 1.0 else 1.0
