"""Evaluation figures, threshold calibration, the int8 accuracy gate and classical baselines.

Pure functions over numpy arrays (no TensorFlow), shared by ``kestrel train`` and ``kestrel eval``.

Conventions, for every function here:

- ``task`` is one of ``binary``, ``multiclass``, ``multilabel``, ``hierarchical``.
- ``probs`` are probabilities in label order, as :func:`device.inference.decode.make_probabilities` gives
  them: (N, L) for multiclass / hierarchical (L leaves) / multilabel; for binary (N, 2)
  ``[negative, positive]``, (N, 1) or (N,) holding P(positive).
- ``targets`` are (N,) integer indices into ``labels`` (binary: 1 = the positive class, the
  second label), or for multilabel an (N, L) 0/1 matrix.

Decisions (the binary answer, "unknown", the active multilabel set, the hierarchical back-off)
are made by the device's own decoders in :mod:`device.inference.decode`, so the figures here are the
figures of the device, not of a re-implementation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.inference.bundle import TaskType, Thresholds
from device.inference.decode import (
    UNKNOWN,
    Hierarchy,
    decode_binary,
    decode_hierarchical,
    decode_multiclass,
    decode_multilabel,
)

log = logging.getLogger(__name__)

TASKS = ("binary", "multiclass", "multilabel", "hierarchical")

# Calibration falls back to the documented defaults (Thresholds' own: 0.5, no abstain) below
# these sizes: a threshold fitted to a handful of images is noise.
MIN_VAL_IMAGES = 10  # binary / multiclass / hierarchical
MIN_VAL_POSITIVES = 2  # binary and each multilabel label: positives and negatives each
# A hierarchical threshold never goes below 0.5: a reported node then always holds the majority
# of the probability, so no sibling can be as likely as the answer.
MIN_HIERARCHY_THRESHOLD = 0.5
MAX_HIERARCHY_THRESHOLD = 0.99
# Past this many labels the confusion matrix keeps only the labels that occur (in targets or
# predictions): a 1000x1000 matrix of zeros helps nobody.
FULL_CONFUSION_MAX_LABELS = 100


# --------------------------------------------------------------------------------------------
# Input checks


def _check_task(task: str) -> TaskType:
    if task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    return task  # type: ignore[return-value]


def _positive_scores(probs: np.ndarray) -> np.ndarray:
    """P(positive) from (N,), (N, 1) or (N, 2) binary probabilities."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 1:
        return probs
    if probs.ndim == 2 and probs.shape[1] in (1, 2):
        return probs[:, -1]
    raise ValueError(f"binary probs: expected shape (N,), (N, 1) or (N, 2), got {probs.shape}")


def _check_arrays(
    task: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes; return float32 probs and int64 (or 0/1 float32 multilabel) targets."""
    probs = np.asarray(probs, dtype=np.float32)
    targets = np.asarray(targets)
    n = probs.shape[0] if probs.ndim else 0
    if task == "binary":
        if len(labels) != 2:
            raise ValueError(f"binary labels: expected [negative, positive], got {list(labels)}")
        probs = _positive_scores(probs)
    elif probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(
            f"{task} probs: expected shape (N, {len(labels)}) for {len(labels)} labels, "
            f"got {probs.shape}"
        )
    if task == "multilabel":
        if targets.shape != probs.shape:
            raise ValueError(
                f"multilabel targets: expected shape {probs.shape} (a 0/1 matrix), "
                f"got {targets.shape}"
            )
        if not np.isin(targets, (0, 1)).all():
            raise ValueError("multilabel targets: expected only 0 and 1")
        return probs, targets.astype(np.float32)
    if targets.shape != (n,):
        raise ValueError(
            f"{task} targets: expected shape ({n},) of label indices, got {targets.shape}"
        )
    if n and (targets.min() < 0 or targets.max() >= len(labels)):
        raise ValueError(
            f"{task} targets: label indices must lie in [0, {len(labels) - 1}], "
            f"got {targets.min()}..{targets.max()}"
        )
    return probs, targets.astype(np.int64)


def _taxonomy_for(
    labels: Sequence[str], taxonomy: Mapping[str, str | None] | None
) -> Mapping[str, str | None]:
    if not taxonomy:
        raise ValueError("hierarchical task: a taxonomy (node -> parent) is required")
    missing = [label for label in labels if label not in taxonomy]
    if missing:
        raise ValueError(f"taxonomy: labels without a parent entry: {missing[:5]}")
    return taxonomy


def _ancestry(node: str, taxonomy: Mapping[str, str | None]) -> list[str]:
    """Path from the top level down to ``node`` (inclusive)."""
    path = [node]
    parent = taxonomy[node]
    while parent is not None:
        path.append(parent)
        parent = taxonomy[parent]
    return path[::-1]


# --------------------------------------------------------------------------------------------
# Threshold search


def _f1_curve(scores: np.ndarray, positives: np.ndarray, candidates: np.ndarray) -> np.ndarray:
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


def _candidates(scores: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
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


def _best_threshold(scores: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """The F1-maximising threshold; among ties, the one closest to 0.5 (the uncalibrated
    default), so separable data gets a threshold in the middle of the gap."""
    candidates = _candidates(scores)
    f1 = _f1_curve(scores, positives, candidates)
    best = f1.max()
    tied = candidates[f1 >= best - 1e-9]
    threshold = float(tied[np.argmin(np.abs(tied - 0.5))])
    return round(threshold, 6), float(best)


@dataclass
class Calibration:
    """Thresholds (a dict valid as :class:`device.inference.bundle.Thresholds`) and notes saying how each
    was chosen, or why a default was kept; the notes belong in the report."""

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
) -> Calibration:
    """Choose the decision thresholds on validation data; see :func:`calibrate_thresholds`."""
    task = _check_task(task)
    probs, targets = _check_arrays(task, val_probs, val_targets, labels)
    defaults = Thresholds()
    out: dict[str, Any] = defaults.model_dump()
    notes: list[str] = []
    n = len(probs)

    if task == "binary":
        positives = (targets == 1).astype(np.float64)
        n_pos, n_neg = int(positives.sum()), int(n - positives.sum())
        if n < MIN_VAL_IMAGES or min(n_pos, n_neg) < MIN_VAL_POSITIVES:
            notes.append(
                f"binary threshold: kept the default {defaults.binary} (validation has {n_pos} "
                f"{labels[1]!r} and {n_neg} {labels[0]!r} images; need >= {MIN_VAL_POSITIVES} "
                f"of each and >= {MIN_VAL_IMAGES} in all)"
            )
        else:
            threshold, f1 = _best_threshold(probs.astype(np.float64), positives)
            out["binary"] = threshold
            notes.append(
                f"binary threshold {threshold:.4g}: maximises the F1 of {labels[1]!r} on "
                f"{n} validation images (F1 {f1:.3f})"
            )

    elif task == "multilabel":
        per_label: dict[str, float] = {}
        defaulted = []
        for j, label in enumerate(labels):
            positives = targets[:, j].astype(np.float64)
            n_pos = int(positives.sum())
            if min(n_pos, n - n_pos) < MIN_VAL_POSITIVES:
                per_label[label] = 0.5
                defaulted.append(f"{label} ({n_pos}/{n} positive)")
            else:
                per_label[label], _ = _best_threshold(probs[:, j].astype(np.float64), positives)
        out["per_label"] = per_label
        notes.append(
            f"multilabel thresholds: each label's F1-maximising threshold on {n} validation images"
        )
        if defaulted:
            notes.append(
                f"kept the default 0.5 for labels with fewer than {MIN_VAL_POSITIVES} positive "
                f"or negative validation images: {', '.join(defaulted)}"
            )

    elif task == "multiclass":
        out["abstain"], note = _abstain_threshold(
            probs, targets, abstain_target_precision, abstain_min_coverage
        )
        notes.append(note)

    else:
        out["hierarchy"], note = _hierarchy_threshold(
            probs, targets, labels, _taxonomy_for(labels, taxonomy), hierarchy_target_accuracy
        )
        notes.append(note)

    Thresholds.model_validate(out)  # the contract: a bad value fails here, not on the device
    for note in notes:
        log.info("%s", note)
    return Calibration(thresholds=out, notes=notes)


def calibrate_thresholds(
    task: str,
    val_probs: np.ndarray,
    val_targets: np.ndarray,
    labels: list[str],
    taxonomy: dict[str, str | None] | None = None,
    *,
    abstain_target_precision: float = 0.95,
    hierarchy_target_accuracy: float = 0.95,
    abstain_min_coverage: float = 0.5,
) -> dict[str, Any]:
    """Decision thresholds chosen on validation data, as a dict valid as
    :class:`device.inference.bundle.Thresholds` (every field present; fields of other tasks keep their
    defaults).

    - **binary**: the threshold on P(positive) that maximises the positive class's F1 (the
      watched-for class; F1 ignores the many easy negatives a camera sees). Candidates lie
      halfway between consecutive validation scores; ties go to the one closest to 0.5.
    - **multilabel**: the same, per label.
    - **multiclass**: ``abstain`` is the smallest max-softmax threshold whose accepted
      predictions reach ``abstain_target_precision`` on validation (the baseline of Hendrycks &
      Gimpel 2017), placed halfway to the next lower score. ``None`` (never abstain) when the
      model already reaches the target without abstaining, or when reaching it would reject
      more than ``1 - abstain_min_coverage`` of the validation images.
    - **hierarchical**: the smallest ``hierarchy`` threshold in [0.5, 0.99] at which the
      reported node (the back-off answer of :func:`device.inference.decode.decode_hierarchical`) is
      correct — the true leaf or one of its ancestors; "unknown", the root, always is — for
      ``hierarchy_target_accuracy`` of the validation images ("hedging your bets", Deng et al.
      2012: the most specific answers that are still that accurate). Never below 0.5, so the
      reported node holds the majority of the probability.

    Degenerate validation data keeps the defaults (binary and per-label 0.5, no abstain,
    hierarchy 0.5): fewer than 10 images, or fewer than 2 positive or negative images for the
    binary class or a multilabel label (e.g. a label absent from validation). Use
    :func:`calibrate` to also get notes saying what was chosen and why.
    """
    return calibrate(
        task,
        val_probs,
        val_targets,
        labels,
        taxonomy,
        abstain_target_precision=abstain_target_precision,
        hierarchy_target_accuracy=hierarchy_target_accuracy,
        abstain_min_coverage=abstain_min_coverage,
    ).thresholds


def _abstain_threshold(
    probs: np.ndarray, targets: np.ndarray, target_precision: float, min_coverage: float
) -> tuple[float | None, str]:
    n = len(probs)
    if n < MIN_VAL_IMAGES:
        return None, (
            f"abstain: none (only {n} validation images; need >= {MIN_VAL_IMAGES} to calibrate)"
        )
    confidence = probs.max(axis=1).astype(np.float64)
    correct = probs.argmax(axis=1) == targets
    accuracy = float(correct.mean())
    if accuracy >= target_precision:
        return None, (
            f"abstain: none needed (validation accuracy {accuracy:.3f} already reaches the "
            f"target precision {target_precision})"
        )
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    precision = np.cumsum(correct[order]) / np.arange(1, n + 1)
    # Accepting the first k (by confidence) is only possible at a cut between distinct scores.
    cut_ok = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
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


def greedy_paths(
    probs: np.ndarray, hierarchy: Hierarchy
) -> tuple[list[list[str]], list[np.ndarray]]:
    """Each image's full path down the taxonomy as the device walks it (the most probable
    child at each level) and the node probabilities along it.

    Any threshold only decides where on this path :func:`decode_hierarchical` stops, so one
    decode at threshold 0 per image gives the answer at every threshold.
    """
    names: list[list[str]] = []
    scores: list[np.ndarray] = []
    for row in probs:
        path = decode_hierarchical(row, hierarchy, 0.0, k=1).path
        names.append([x.label for x in path])
        # Running minimum: the decoder stops at the first node under the threshold, so a node
        # is reported at t iff every node above it reaches t. (Sums of non-negative leaves never
        # grow down the path, so this changes nothing but makes it exact by construction.)
        values = np.array([x.score for x in path], dtype=np.float64)
        scores.append(np.minimum.accumulate(values))
    return names, scores


def _stop_depth(path_scores: np.ndarray, threshold: float) -> int:
    """How many nodes of a greedy path :func:`decode_hierarchical` reports at ``threshold``."""
    below = np.flatnonzero(path_scores < threshold)
    return int(below[0]) if below.size else len(path_scores)


def _correct_depth(path: list[str], true_path: list[str]) -> int:
    """How many leading nodes of a predicted path agree with the true path."""
    depth = 0
    for predicted, true in zip(path, true_path, strict=False):
        if predicted != true:
            break
        depth += 1
    return depth


def _hierarchy_threshold(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    taxonomy: Mapping[str, str | None],
    target_accuracy: float,
) -> tuple[float, str]:
    n = len(probs)
    default = Thresholds().hierarchy
    if n < MIN_VAL_IMAGES:
        return default, (
            f"hierarchy threshold: kept the default {default} (only {n} validation images; "
            f"need >= {MIN_VAL_IMAGES})"
        )
    hierarchy = Hierarchy.build(labels, taxonomy)
    paths, scores = greedy_paths(probs, hierarchy)
    true_paths = [_ancestry(labels[t], taxonomy) for t in targets]
    # At threshold t the device reports the path's nodes whose (running-minimum) score reaches
    # t. The answer is wrong iff it includes the first wrong node of the path, i.e. iff t is at
    # most that node's score; a path that is right to the leaf is never wrong.
    first_wrong = np.array(
        [
            s[d] if d < len(s) else -np.inf
            for p, q, s in zip(paths, true_paths, scores, strict=True)
            for d in [_correct_depth(p, q)]
        ]
    )
    first_wrong.sort()
    all_scores = np.sort(np.concatenate(scores))
    candidates = _candidates(all_scores, MIN_HIERARCHY_THRESHOLD, MAX_HIERARCHY_THRESHOLD)
    wrong = n - np.searchsorted(first_wrong, candidates, side="left")
    accuracy = 1.0 - wrong / n
    depth = (len(all_scores) - np.searchsorted(all_scores, candidates, side="left")) / n
    # Accuracy never falls as the threshold rises (backing off to an ancestor of a correct node
    # stays correct), so the first candidate that reaches the target is the most specific one.
    reaching = np.flatnonzero(accuracy >= target_accuracy)
    if reaching.size:
        i = int(reaching[0])
        threshold = float(candidates[i])
        return round(threshold, 6), (
            f"hierarchy threshold {threshold:.4g}: smallest (>= {MIN_HIERARCHY_THRESHOLD}) "
            f"whose reported node is correct for {accuracy[i]:.3f} >= {target_accuracy} of "
            f"{n} validation images (mean depth {depth[i]:.2f})"
        )
    threshold = float(candidates[-1])
    return round(threshold, 6), (
        f"hierarchy threshold {threshold:.4g}: target accuracy {target_accuracy} not reachable "
        f"at or below {MAX_HIERARCHY_THRESHOLD}; reported nodes correct for {accuracy[-1]:.3f} "
        f"of {n} validation images (mean depth {depth[-1]:.2f})"
    )


# --------------------------------------------------------------------------------------------
# Metrics


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _per_class(
    labels: Sequence[str], tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, support: np.ndarray
) -> list[dict[str, Any]]:
    """Precision / recall / F1 per class; a ratio with a zero denominator is 0 (sklearn's
    ``zero_division=0``), so a never-predicted class scores 0 precision, not NaN."""
    rows = []
    for i, label in enumerate(labels):
        precision = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
        recall = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "label": label,
                "precision": _r(precision),
                "recall": _r(recall),
                "f1": _r(f1),
                "support": int(support[i]),
            }
        )
    return rows


def _single_label_metrics(
    labels: Sequence[str], targets: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """Accuracy, per-class P/R/F1, macro F1 and the confusion matrix of one-label predictions."""
    n_labels = len(labels)
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    per_class = _per_class(labels, tp, matrix.sum(axis=0) - tp, support - tp, support)
    present = support > 0
    f1 = np.array([row["f1"] for row in per_class], dtype=np.float64)
    shown = np.arange(n_labels)
    if n_labels > FULL_CONFUSION_MAX_LABELS:
        shown = np.flatnonzero(present | (matrix.sum(axis=0) > 0))
    return {
        "accuracy": _r(tp.sum() / max(len(targets), 1)),
        # Macro F1 over the classes present in the targets: an absent class has no recall.
        "macro_f1": _r(f1[present].mean() if present.any() else 0.0),
        "per_class": per_class,
        "confusion_labels": [labels[i] for i in shown],
        "confusion_matrix": matrix[np.ix_(shown, shown)].tolist(),
    }


def compute_metrics(
    task: str,
    probs: np.ndarray,
    targets: np.ndarray,
    labels: list[str],
    thresholds: Mapping[str, Any] | Thresholds | None,
    taxonomy: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Every evaluation figure of one model on one labeled set, as a JSON-able dict.

    All tasks: ``n``, ``accuracy``, ``per_class`` (label, precision, recall, f1, support),
    ``macro_f1`` (over classes present in the targets) and, except multilabel, the
    ``confusion_matrix`` (rows: true, columns: predicted) over ``confusion_labels`` (all labels
    up to 100, else the labels that occur). ``thresholds`` echoes the thresholds used.

    - binary: decisions at the binary threshold; also ``roc_auc`` and ``average_precision``
      of the positive class (threshold-free).
    - multiclass: ``accuracy`` is top-1 (every image answered). With an abstain threshold,
      ``abstain``: coverage (share answered), accuracy on the answered images and the
      unknown rate.
    - multilabel: ``accuracy`` is exact-match (the active set equals the true set);
      ``per_class`` adds each label's ``ap`` (average precision; None when the label has no
      positives); ``map`` (mean over labels with positives), ``micro_f1``, ``macro_f1``,
      ``hamming_accuracy``.
    - hierarchical: ``accuracy`` and the confusion matrix use the leaf the device's path ends
      in (the most probable child at each level, i.e. the answer at threshold 0 — it can
      differ from the arg-max leaf, reported as ``argmax_leaf_accuracy``). ``levels``: accuracy
      per taxonomy level (level 1: the top-level node of the true leaf vs of the predicted
      leaf; a path shorter than the level counts with its last node). ``backoff``: the
      device's answer at the hierarchy threshold — ``accuracy`` (answer is the true leaf or an
      ancestor; "unknown", the root, counts as correct as in Deng et al. 2012), ``leaf_rate``,
      ``unknown_rate``, ``mean_depth`` (specificity; unknown = 0) and ``max_depth``.
    """
    task = _check_task(task)
    probs, targets = _check_arrays(task, probs, targets, labels)
    limits = (
        thresholds
        if isinstance(thresholds, Thresholds)
        else Thresholds.model_validate(dict(thresholds or {}))
    )
    metrics: dict[str, Any] = {"task": task, "n": len(probs)}

    if task == "binary":
        predicted = np.array(
            [decode_binary(np.array([p]), labels, limits.binary).label == labels[1] for p in probs],
            dtype=np.int64,
        )
        metrics.update(_single_label_metrics(labels, targets, predicted))
        metrics["thresholds"] = {"binary": limits.binary}
        metrics.update(_ranking_figures(probs, targets == 1))

    elif task == "multiclass":
        decoded = [decode_multiclass(row, labels, 1, 0.0, limits.abstain) for row in probs]
        index = {label: i for i, label in enumerate(labels)}
        top1 = np.array([index[p.scores[0].label] for p in decoded], dtype=np.int64)
        metrics.update(_single_label_metrics(labels, targets, top1))
        metrics["thresholds"] = {"abstain": limits.abstain}
        if limits.abstain is not None:
            answered = np.array([p.label != UNKNOWN for p in decoded])
            correct = top1 == targets
            metrics["abstain"] = {
                "threshold": limits.abstain,
                "coverage": _r(answered.mean()) if len(answered) else None,
                "unknown_rate": _r(1 - answered.mean()) if len(answered) else None,
                "accuracy_on_answered": _r(correct[answered].mean()) if answered.any() else None,
            }

    elif task == "multilabel":
        per_label = {label: limits.per_label.get(label, 0.5) for label in labels}
        predicted = np.zeros_like(targets)
        index = {label: i for i, label in enumerate(labels)}
        for row, p in enumerate(probs):
            for active in decode_multilabel(p, labels, per_label, k=1).labels:
                predicted[row, index[active.label]] = 1
        metrics.update(_multilabel_metrics(labels, probs, targets, predicted))
        metrics["thresholds"] = {"per_label": per_label}

    else:
        tax = _taxonomy_for(labels, taxonomy)
        metrics.update(_hierarchical_metrics(labels, probs, targets, tax, limits.hierarchy))
    return metrics


def _ranking_figures(scores: np.ndarray, positives: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if positives.all() or not positives.any():
        return {"roc_auc": None, "average_precision": None}
    return {
        "roc_auc": _r(roc_auc_score(positives, scores)),
        "average_precision": _r(average_precision_score(positives, scores)),
    }


def _multilabel_metrics(
    labels: Sequence[str], probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    truth = targets.astype(bool)
    guess = predicted.astype(bool)
    tp = (truth & guess).sum(axis=0)
    fp = (~truth & guess).sum(axis=0)
    fn = (truth & ~guess).sum(axis=0)
    support = truth.sum(axis=0)
    per_class = _per_class(labels, tp, fp, fn, support)
    aps = []
    for j, row in enumerate(per_class):
        ap = average_precision_score(truth[:, j], probs[:, j]) if support[j] else None
        row["ap"] = _r(ap)
        if ap is not None:
            aps.append(ap)
    micro_denominator = 2 * tp.sum() + fp.sum() + fn.sum()
    present = support > 0
    f1 = np.array([row["f1"] for row in per_class], dtype=np.float64)
    n = len(probs)
    return {
        "accuracy": _r(np.all(truth == guess, axis=1).mean() if n else 0.0),
        "hamming_accuracy": _r((truth == guess).mean() if n else 0.0),
        "map": _r(np.mean(aps)) if aps else None,
        "micro_f1": _r(2 * tp.sum() / micro_denominator if micro_denominator else 0.0),
        "macro_f1": _r(f1[present].mean() if present.any() else 0.0),
        "per_class": per_class,
    }


def _hierarchical_metrics(
    labels: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    taxonomy: Mapping[str, str | None],
    threshold: float,
) -> dict[str, Any]:
    hierarchy = Hierarchy.build(labels, taxonomy)
    index = {label: i for i, label in enumerate(labels)}
    paths, _ = greedy_paths(probs, hierarchy)
    leaf = np.array([index[p[-1]] for p in paths], dtype=np.int64)
    out = _single_label_metrics(labels, targets, leaf)
    out["argmax_leaf_accuracy"] = _r(np.mean(probs.argmax(axis=1) == targets)) if len(probs) else 0

    true_paths = [_ancestry(labels[t], taxonomy) for t in targets]
    max_depth = max((len(_ancestry(label, taxonomy)) for label in labels), default=1)
    levels = []
    for level in range(1, max_depth + 1):
        hits = [
            p[min(level, len(p)) - 1] == q[min(level, len(q)) - 1]
            for p, q in zip(paths, true_paths, strict=True)
        ]
        levels.append({"level": level, "accuracy": _r(np.mean(hits)) if hits else None})
    out["levels"] = levels

    answers = [decode_hierarchical(row, hierarchy, threshold, k=1) for row in probs]
    depths = np.array([len(a.path) for a in answers])
    correct = np.array(
        [a.label == UNKNOWN or a.label in q for a, q in zip(answers, true_paths, strict=True)]
    )
    leaf_depths = np.array([len(q) for q in true_paths])
    n = max(len(answers), 1)
    out["backoff"] = {
        "threshold": threshold,
        "accuracy": _r(correct.sum() / n),
        "leaf_rate": _r(np.sum(depths == leaf_depths) / n),
        "unknown_rate": _r(np.sum(depths == 0) / n),
        "mean_depth": _r(depths.sum() / n, 3),
        "max_depth": max_depth,
    }
    out["thresholds"] = {"hierarchy": threshold}
    return out


# --------------------------------------------------------------------------------------------
# The int8 accuracy gate


def main_figure(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """The one number the gate compares: accuracy, or mAP for multilabel."""
    if metrics.get("task") == "multilabel":
        return "mAP", float(metrics.get("map") or 0.0)
    return "accuracy", float(metrics["accuracy"])


# A net loss of fewer images than this cannot be told from chance: even when int8 never fixes
# an image float got wrong, 4 lost images have a one-sided exact McNemar p of 0.5**4 = 0.06.
MIN_LOST_IMAGES = 5


def compare_float_int8(
    float_metrics: Mapping[str, Any],
    int8_metrics: Mapping[str, Any],
    max_drop_points: float = 1.0,
    min_lost_images: int = MIN_LOST_IMAGES,
) -> dict[str, Any]:
    """The int8 accuracy gate: does the int8 model stay within ``max_drop_points`` percentage
    points of the float model on the main figure (accuracy; multilabel: mAP)?

    On a small test split one image is several points, so a drop also has to amount to at
    least ``min_lost_images`` images (net) before it fails the gate: fewer is within chance
    (exact McNemar test, p > 0.05). With 10,000 test images one point is 100 images, and the
    point limit alone decides.

    Returns ``passed``, ``drop_points`` (float minus int8, in points; negative when int8 does
    better), the two figures, ``per_class`` F1 drops (points), ``worst_classes`` (up to 3 that
    lost F1, worst first) and a one-line ``message`` naming them.
    """
    metric, float_value = main_figure(float_metrics)
    _, int8_value = main_figure(int8_metrics)
    drop = round((float_value - int8_value) * 100, 2)
    int8_rows = {row["label"]: row for row in int8_metrics.get("per_class", [])}
    per_class = []
    for row in float_metrics.get("per_class", []):
        other = int8_rows.get(row["label"])
        if other is None:
            continue
        per_class.append(
            {
                "label": row["label"],
                "float_f1": row["f1"],
                "int8_f1": other["f1"],
                "drop": round((row["f1"] - other["f1"]) * 100, 2),
            }
        )
    worst = sorted((r for r in per_class if r["drop"] > 0), key=lambda r: -r["drop"])[:3]
    n = int(int8_metrics.get("n") or float_metrics.get("n") or 0)
    lost_images = round(drop * n / 100, 1)
    over_limit = drop > max_drop_points
    # (A negative limit demands a gain: no chance allowance then.)
    within_chance = over_limit and max_drop_points >= 0 and n > 0 and lost_images < min_lost_images
    passed = not over_limit or within_chance
    change = f"{float_value:.3f} -> {int8_value:.3f}"
    if drop > 0:
        message = f"int8 loses {drop:.1f} points of {metric} ({change})"
    else:
        message = f"int8 loses nothing in {metric} ({change}, {-drop:+.1f} points)"
    if within_chance:
        message += (
            f", more than the {max_drop_points:g}-point limit but only {lost_images:g} of {n} "
            f"test images: within chance (fewer than {min_lost_images}); a larger test split "
            "would tell"
        )
    else:
        message += (
            f", within the {max_drop_points:g}-point limit"
            if passed
            else f", more than the {max_drop_points:g}-point limit"
        )
    if worst:
        message += "; most on: " + ", ".join(f"{r['label']} (-{r['drop']:.1f})" for r in worst)
    return {
        "passed": bool(passed),
        "metric": metric,
        "max_drop_points": max_drop_points,
        "drop_points": drop,
        "test_images": n,
        "lost_images": lost_images,
        "within_chance": bool(within_chance),
        "float": _r(float_value),
        "int8": _r(int8_value),
        "per_class": per_class,
        "worst_classes": worst,
        "message": message,
    }


# --------------------------------------------------------------------------------------------
# Classical baselines

# Slow models (SVM, random forest, logistic regression on 1000+ dimensions) see at most this
# many training images, a stratified sample, so baselines stay within a minute or so.
BASELINE_MAX_TRAIN = 5000


@dataclass(frozen=True)
class _Baseline:
    name: str
    build: Callable[[int, int], Any]  # (n_train, seed) -> estimator
    slow: bool
    native_multilabel: bool  # predict_proba on an (N, L) target without a wrapper


def _scaled(estimator: Any) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), estimator)


def _baseline_table() -> list[_Baseline]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return [
        _Baseline(
            "k-nearest neighbours (k=5)",
            lambda n, seed: _scaled(KNeighborsClassifier(n_neighbors=min(5, n))),
            slow=False,
            native_multilabel=True,
        ),
        _Baseline(
            "SVM (RBF kernel)",
            lambda n, seed: _scaled(SVC(kernel="rbf", C=1.0, random_state=seed)),
            slow=True,
            native_multilabel=False,
        ),
        _Baseline(
            "random forest (100 trees)",
            lambda n, seed: RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed),
            slow=True,
            native_multilabel=True,
        ),
        _Baseline(
            "logistic regression",
            lambda n, seed: _scaled(LogisticRegression(max_iter=1000, C=1.0)),
            slow=True,
            native_multilabel=False,
        ),
        _Baseline(
            "decision tree",
            lambda n, seed: DecisionTreeClassifier(random_state=seed),
            slow=False,
            native_multilabel=True,
        ),
    ]


def _subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` samples, stratified by class when single-label."""
    n = len(y)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if y.ndim == 1:
        from sklearn.model_selection import train_test_split

        try:
            keep, _ = train_test_split(
                np.arange(n), train_size=limit, stratify=y, random_state=seed
            )
            return np.sort(keep)
        except ValueError:  # a class too small to stratify: fall back to a plain sample
            pass
    return np.sort(rng.choice(n, size=limit, replace=False))


def _scores_of(estimator: Any, x: np.ndarray, n_labels: int) -> np.ndarray:
    """(N, L) multilabel scores from predict_proba (list of per-label arrays or a matrix) or
    decision_function."""
    if hasattr(estimator, "predict_proba"):
        try:
            proba = estimator.predict_proba(x)
        except AttributeError:  # SVC without probability=True
            proba = None
        if isinstance(proba, list):  # native multi-output: one (N, 2) array per label
            columns = []
            for p in proba:
                columns.append(p[:, 1] if p.shape[1] == 2 else np.zeros(len(x)))
            return np.stack(columns, axis=1)
        if proba is not None:
            return proba
    scores = estimator.decision_function(x)
    return scores.reshape(len(x), n_labels)


def baselines(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    task: str,
    *,
    seed: int = 0,
    max_train: int = BASELINE_MAX_TRAIN,
) -> dict[str, dict[str, Any]]:
    """Classical scikit-learn models on the same embeddings and split as the deep model:
    k-nearest neighbours, an RBF SVM, a random forest, logistic regression, a decision tree.

    ``train_y`` / ``test_y`` are label indices (binary, multiclass, hierarchical leaves) or
    (N, L) 0/1 matrices (multilabel). Each result is ``{"accuracy", "seconds", "train_size"}``
    (fit + predict wall time); multilabel adds ``map`` from each model's per-label scores
    (native multi-output for k-NN and trees, one-vs-rest for SVM and logistic regression) and
    ``accuracy`` is exact-match at the models' own decisions. A model that cannot run on this
    data (e.g. one class only) is ``{"skipped": reason}``. The SVM, random forest and logistic
    regression train on a stratified sample of at most ``max_train`` images, to bound runtime.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier

    task = _check_task(task)
    train_x = np.asarray(train_x, dtype=np.float32).reshape(len(train_x), -1)
    test_x = np.asarray(test_x, dtype=np.float32).reshape(len(test_x), -1)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    multilabel = task == "multilabel"
    if multilabel:
        train_y, test_y = train_y.astype(np.int64), test_y.astype(np.int64)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError(
            f"baselines: {len(train_x)} train embeddings vs {len(train_y)} targets, "
            f"{len(test_x)} test embeddings vs {len(test_y)} targets"
        )
    results: dict[str, dict[str, Any]] = {}
    for spec in _baseline_table():
        rows = _subsample(train_y, max_train, seed) if spec.slow else np.arange(len(train_y))
        x, y = train_x[rows], train_y[rows]
        start = time.perf_counter()
        try:
            if not multilabel and len(np.unique(y)) < 2:
                raise ValueError("the training data holds a single class")
            estimator = spec.build(len(x), seed)
            if multilabel and not spec.native_multilabel:
                estimator = OneVsRestClassifier(estimator)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", UserWarning)  # "label not present" in a fold
                estimator.fit(x, y)
                predicted = estimator.predict(test_x)
                entry: dict[str, Any] = {}
                if multilabel:
                    scores = _scores_of(estimator, test_x, test_y.shape[1])
                    present = test_y.sum(axis=0) > 0
                    aps = [
                        average_precision_score(test_y[:, j], scores[:, j])
                        for j in np.flatnonzero(present)
                    ]
                    entry["map"] = _r(np.mean(aps)) if aps else None
                    entry["accuracy"] = _r(np.all(predicted == test_y, axis=1).mean())
                else:
                    entry["accuracy"] = _r(np.mean(predicted == test_y))
        except (ValueError, MemoryError) as exc:
            results[spec.name] = {"skipped": str(exc).splitlines()[0]}
            log.info("baseline %s skipped: %s", spec.name, exc)
            continue
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entry["train_size"] = len(x)
        results[spec.name] = entry
        log.info("baseline %s: %s", spec.name, entry)
    return results
