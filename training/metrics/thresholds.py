"""Fitting the decision thresholds of a bundle on validation data (:func:`calibrate`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from device.inference.bundle import Thresholds
from training.metrics.checks import check_arrays, check_task, require_taxonomy
from training.metrics.hierarchy import hierarchy_threshold
from training.metrics.search import MIN_VAL_IMAGES, MIN_VAL_POSITIVES, best_threshold

log = logging.getLogger(__name__)

# The default abstain rule's limit on validation images answered "unknown" (the promise is
# at most 5 % on new in-distribution images; validation is smaller, so a margin).
ABSTAIN_MAX_UNKNOWN = 0.04


@dataclass
class Calibration:
    """Thresholds (a dict valid as :class:`device.inference.bundle.Thresholds`) and notes saying
    how each was chosen, or why a default was kept; the notes belong in the report."""

    thresholds: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def calibrate(
    task: str,
    val_probs: np.ndarray,
    val_targets: np.ndarray,
    labels: list[str],
    taxonomy: Mapping[str, str | None] | None = None,
    *,
    abstain_target_precision: float = 0.95,
    hierarchy_target_accuracy: float = 0.95,
    abstain_min_coverage: float = 0.5,
    abstain_max_unknown: float | None = ABSTAIN_MAX_UNKNOWN,
) -> Calibration:
    """Decision thresholds chosen on validation data, with notes saying what was chosen and
    why. ``thresholds`` is a dict valid as :class:`device.inference.bundle.Thresholds` (every
    field present; fields of other tasks keep their defaults).

    - **binary**: the threshold on P(positive) that maximises the positive class's F1 (the
      watched-for class; F1 ignores the many easy negatives a camera sees). Candidates lie
      halfway between consecutive validation scores; ties go to the one closest to 0.5.
    - **multilabel**: the same, per label.
    - **multiclass** (default, ``abstain_max_unknown`` set): ``abstain`` is the max-softmax
      threshold that answers "unknown" for at most ``abstain_max_unknown`` of the validation
      images (4 %: a margin under the 5 % promised on new in-distribution images) and, within
      that, gives the answered ones the highest accuracy; ``None`` when no such threshold
      raises their accuracy. With ``abstain_max_unknown=None``, the older rule:
      ``abstain`` is the smallest max-softmax threshold whose accepted
      predictions reach ``abstain_target_precision`` on validation (the baseline of Hendrycks &
      Gimpel 2017), placed halfway to the next lower score. ``None`` (never abstain) when the
      model already reaches the target without abstaining, or when reaching it would reject
      more than ``1 - abstain_min_coverage`` of the validation images.
    - **hierarchical**: the smallest ``hierarchy`` threshold in [0.5, 0.99] at which the
      reported node (the back-off answer of :func:`device.inference.decode.decode_hierarchical`)
      is correct — the true leaf or one of its ancestors; "unknown", the root, always is — for
      ``hierarchy_target_accuracy`` of the validation images ("hedging your bets", Deng et al.
      2012: the most specific answers that are still that accurate). Never below 0.5, so the
      reported node holds the majority of the probability.

    Degenerate validation data keeps the defaults (binary and per-label 0.5, no abstain,
    hierarchy 0.5): fewer than 10 images, or fewer than 2 positive or negative images for the
    binary class or a multilabel label (e.g. a label absent from validation).
    """
    task = check_task(task)
    probs, targets = check_arrays(task, val_probs, val_targets, labels)
    out: dict[str, Any] = Thresholds().model_dump()
    notes: list[str] = []
    if task == "binary":
        out["binary"] = _binary_threshold(probs, targets, labels, notes)
    elif task == "multilabel":
        out["per_label"] = _multilabel_thresholds(probs, targets, labels, notes)
    elif task == "multiclass" and abstain_max_unknown is not None:
        out["abstain"], note = bounded_abstain(probs, targets, abstain_max_unknown)
        notes.append(note)
    elif task == "multiclass":
        out["abstain"], note = _abstain_threshold(
            probs, targets, abstain_target_precision, abstain_min_coverage
        )
        notes.append(note)
    else:
        out["hierarchy"], note = hierarchy_threshold(
            probs, targets, labels, require_taxonomy(labels, taxonomy), hierarchy_target_accuracy
        )
        notes.append(note)

    Thresholds.model_validate(out)  # the contract: a bad value fails here, not on the device
    for note in notes:
        log.info("%s", note)
    return Calibration(thresholds=out, notes=notes)


def _binary_threshold(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], notes: list[str]
) -> float:
    """The positive class's F1-maximising threshold, or the default on too little data."""
    default = Thresholds().binary
    n = len(probs)
    positives = (targets == 1).astype(np.float64)
    n_pos, n_neg = int(positives.sum()), int(n - positives.sum())
    if n < MIN_VAL_IMAGES or min(n_pos, n_neg) < MIN_VAL_POSITIVES:
        notes.append(
            f"binary threshold: kept the default {default} (validation has {n_pos} "
            f"{labels[1]!r} and {n_neg} {labels[0]!r} images; need >= {MIN_VAL_POSITIVES} "
            f"of each and >= {MIN_VAL_IMAGES} in all)"
        )
        return default
    threshold, f1 = best_threshold(probs.astype(np.float64), positives)
    notes.append(
        f"binary threshold {threshold:.4g}: maximises the F1 of {labels[1]!r} on "
        f"{n} validation images (F1 {f1:.3f})"
    )
    return threshold


def _multilabel_thresholds(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], notes: list[str]
) -> dict[str, float]:
    """Each label's F1-maximising threshold; 0.5 for a label with too few examples."""
    n = len(probs)
    per_label: dict[str, float] = {}
    defaulted = []
    for j, label in enumerate(labels):
        positives = targets[:, j].astype(np.float64)
        n_pos = int(positives.sum())
        if min(n_pos, n - n_pos) < MIN_VAL_POSITIVES:
            per_label[label] = 0.5
            defaulted.append(f"{label} ({n_pos}/{n} positive)")
        else:
            per_label[label], _ = best_threshold(probs[:, j].astype(np.float64), positives)
    notes.append(
        f"multilabel thresholds: each label's F1-maximising threshold on {n} validation images"
    )
    if defaulted:
        notes.append(
            f"kept the default 0.5 for labels with fewer than {MIN_VAL_POSITIVES} positive "
            f"or negative validation images: {', '.join(defaulted)}"
        )
    return per_label


class _Ranked(NamedTuple):
    """Validation images by falling top score: what both abstain rules cut."""

    n: int
    accuracy: float  # without abstaining
    conf_sorted: np.ndarray  # top scores, highest first
    precision: np.ndarray  # accuracy of the first k+1 answered
    cut_ok: np.ndarray  # a threshold can accept exactly the first k+1 (distinct scores)


def _ranked(probs: np.ndarray, targets: np.ndarray) -> _Ranked:
    n = len(probs)
    confidence = probs.max(axis=1).astype(np.float64)
    correct = probs.argmax(axis=1) == targets
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    precision = np.cumsum(correct[order]) / np.arange(1, n + 1)
    cut_ok = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
    return _Ranked(n, float(correct.mean()), conf_sorted, precision, cut_ok)


def _too_few(n: int) -> str | None:
    if n >= MIN_VAL_IMAGES:
        return None
    return f"abstain: none (only {n} validation images; need >= {MIN_VAL_IMAGES} to calibrate)"


def _abstain_threshold(
    probs: np.ndarray, targets: np.ndarray, target_precision: float, min_coverage: float
) -> tuple[float | None, str]:
    """The smallest top-score threshold reaching ``target_precision``, or None, with a note."""
    if note := _too_few(len(probs)):
        return None, note
    n, accuracy, conf_sorted, precision, cut_ok = _ranked(probs, targets)
    if accuracy >= target_precision:
        return None, (
            f"abstain: none needed (validation accuracy {accuracy:.3f} already reaches the "
            f"target precision {target_precision})"
        )
    reaching = np.flatnonzero((precision >= target_precision) & cut_ok)
    if reaching.size == 0:
        return None, (
            f"abstain: none (no confidence threshold reaches precision {target_precision} on "
            f"validation; accuracy without abstaining is {accuracy:.3f})"
        )
    k = int(reaching.max())  # most images accepted = the smallest threshold
    coverage = (k + 1) / n
    if coverage < min_coverage:
        return None, (
            f"abstain: none (reaching precision {target_precision} would answer only "
            f"{coverage:.0%} of validation images, under the {min_coverage:.0%} minimum; "
            f"accuracy without abstaining is {accuracy:.3f})"
        )
    lowest = conf_sorted[k]
    below = conf_sorted[k + 1] if k + 1 < n else 0.0
    threshold = round(float((lowest + below) / 2), 6)
    return threshold, (
        f"abstain {threshold:.4g}: smallest top-score threshold with precision >= "
        f"{target_precision} on validation ({precision[k]:.3f} on {coverage:.0%} of "
        f"{n} images answered; accuracy without abstaining {accuracy:.3f})"
    )


def bounded_abstain(
    probs: np.ndarray, targets: np.ndarray, max_unknown: float
) -> tuple[float | None, str]:
    """The top-score threshold leaving at most ``max_unknown`` of the images unknown that
    maximises the accuracy of the answered ones (ties: fewer unknown), or None when none
    raises it; with a note."""
    if note := _too_few(len(probs)):
        return None, note
    n, accuracy, conf_sorted, precision, cut_ok = _ranked(probs, targets)
    smallest_k = max(int(np.ceil((1 - max_unknown) * n)) - 1, 0)
    allowed = np.flatnonzero(cut_ok & (np.arange(n) >= smallest_k))
    best = allowed[np.argmax(precision[allowed] - 1e-12 * (n - allowed))]  # ties: most answered
    if precision[best] <= accuracy + 1e-12 or best == n - 1:
        return None, (
            f"abstain: none (no threshold answering at least {1 - max_unknown:.0%} of the "
            f"{n} validation images raises their accuracy {accuracy:.3f})"
        )
    below = conf_sorted[best + 1]
    threshold = round(float((conf_sorted[best] + below) / 2), 6)
    unknown = 1 - (best + 1) / n
    return threshold, (
        f"abstain {threshold:.4g}: answers {1 - unknown:.1%} of {n} validation images "
        f"(at most {max_unknown:.0%} unknown) with accuracy {precision[best]:.3f}, up from "
        f"{accuracy:.3f} when every image is answered"
    )


def coverage_curve(probs: np.ndarray, targets: np.ndarray, points: int = 41) -> list[list[float]]:
    """[coverage, accuracy on the answered, threshold] as the abstain threshold rises, from
    every image answered down to half of them (for the report's plot)."""
    if len(probs) == 0:
        return []
    n, _, conf_sorted, precision, _ = _ranked(probs, targets)
    curve = []
    for coverage in np.linspace(1.0, 0.5, points):
        k = max(int(coverage * n + 0.5), 1)
        curve.append([round(k / n, 4), round(float(precision[k - 1]), 4),
                      round(float(conf_sorted[k - 1]), 6)])  # fmt: skip
    return curve
