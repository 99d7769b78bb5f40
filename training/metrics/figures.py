"""Every evaluation figure of one model on one labeled set (:func:`compute_metrics`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from device.inference.bundle import Thresholds
from device.inference.decode import UNKNOWN, decode_binary, decode_multiclass, decode_multilabel
from training.metrics.checks import check_arrays, check_task, require_taxonomy
from training.metrics.hierarchy import hierarchical_metrics
from training.metrics.per_class import per_class_rows, rounded, single_label_metrics
from training.metrics.thresholds import coverage_curve


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
      unknown rate. ``coverage_curve``: [coverage, accuracy on the answered, threshold] as the
      threshold rises (the report's plot).
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
    task = check_task(task)
    probs, targets = check_arrays(task, probs, targets, labels)
    limits = (
        thresholds
        if isinstance(thresholds, Thresholds)
        else Thresholds.model_validate(dict(thresholds or {}))
    )
    metrics: dict[str, Any] = {"task": task, "n": len(probs)}
    if task == "binary":
        metrics.update(_binary_metrics(labels, probs, targets, limits.binary))
    elif task == "multiclass":
        metrics.update(_multiclass_metrics(labels, probs, targets, limits.abstain))
    elif task == "multilabel":
        per_label = {label: limits.per_label.get(label, 0.5) for label in labels}
        metrics.update(_multilabel_metrics(labels, probs, targets, per_label))
    else:
        tax = require_taxonomy(labels, taxonomy)
        metrics.update(hierarchical_metrics(labels, probs, targets, tax, limits.hierarchy))
    return metrics


def _binary_metrics(
    labels: Sequence[str], scores: np.ndarray, targets: np.ndarray, threshold: float
) -> dict[str, Any]:
    predicted = np.array(
        [decode_binary(np.array([p]), labels, threshold).label == labels[1] for p in scores],
        dtype=np.int64,
    )
    out = single_label_metrics(labels, targets, predicted)
    out["thresholds"] = {"binary": threshold}
    out.update(_ranking_figures(scores, targets == 1))
    return out


def _ranking_figures(scores: np.ndarray, positives: np.ndarray) -> dict[str, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if positives.all() or not positives.any():
        return {"roc_auc": None, "average_precision": None}
    return {
        "roc_auc": rounded(roc_auc_score(positives, scores)),
        "average_precision": rounded(average_precision_score(positives, scores)),
    }


def _multiclass_metrics(
    labels: Sequence[str], probs: np.ndarray, targets: np.ndarray, abstain: float | None
) -> dict[str, Any]:
    decoded = [decode_multiclass(row, labels, 1, 0.0, abstain) for row in probs]
    index = {label: i for i, label in enumerate(labels)}
    top1 = np.array([index[p.scores[0].label] for p in decoded], dtype=np.int64)
    out = single_label_metrics(labels, targets, top1)
    out["thresholds"] = {"abstain": abstain}
    out["coverage_curve"] = coverage_curve(probs, targets)
    if abstain is not None:
        answered = np.array([p.label != UNKNOWN for p in decoded])
        correct = top1 == targets
        out["abstain"] = {
            "threshold": abstain,
            "coverage": rounded(answered.mean()) if len(answered) else None,
            "unknown_rate": rounded(1 - answered.mean()) if len(answered) else None,
            "accuracy_on_answered": rounded(correct[answered].mean()) if answered.any() else None,
        }
    return out


def _multilabel_metrics(
    labels: Sequence[str], probs: np.ndarray, targets: np.ndarray, per_label: dict[str, float]
) -> dict[str, Any]:
    predicted = np.zeros_like(targets)
    index = {label: i for i, label in enumerate(labels)}
    for row, p in enumerate(probs):
        for active in decode_multilabel(p, labels, per_label, k=1).labels:
            predicted[row, index[active.label]] = 1
    out = _multilabel_figures(labels, probs, targets, predicted)
    out["thresholds"] = {"per_label": per_label}
    return out


def _multilabel_figures(
    labels: Sequence[str], probs: np.ndarray, targets: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    truth = targets.astype(bool)
    guess = predicted.astype(bool)
    tp = (truth & guess).sum(axis=0)
    fp = (~truth & guess).sum(axis=0)
    fn = (truth & ~guess).sum(axis=0)
    support = truth.sum(axis=0)
    per_class = per_class_rows(labels, tp, fp, fn, support)
    aps = []
    for j, row in enumerate(per_class):
        ap = average_precision_score(truth[:, j], probs[:, j]) if support[j] else None
        row["ap"] = rounded(ap)
        if ap is not None:
            aps.append(ap)
    micro_denominator = 2 * tp.sum() + fp.sum() + fn.sum()
    present = support > 0
    f1 = np.array([row["f1"] for row in per_class], dtype=np.float64)
    n = len(probs)
    return {
        "accuracy": rounded(np.all(truth == guess, axis=1).mean() if n else 0.0),
        "hamming_accuracy": rounded((truth == guess).mean() if n else 0.0),
        "map": rounded(np.mean(aps)) if aps else None,
        "micro_f1": rounded(2 * tp.sum() / micro_denominator if micro_denominator else 0.0),
        "macro_f1": rounded(f1[present].mean() if present.any() else 0.0),
        "per_class": per_class,
    }
