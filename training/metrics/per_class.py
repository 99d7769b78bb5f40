"""Building blocks of every figure: rounding, per-class precision / recall / F1 and the
confusion matrix of single-label predictions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Past this many labels the confusion matrix keeps only the labels that occur (in targets or
# predictions): a 1000x1000 matrix of zeros helps nobody.
FULL_CONFUSION_MAX_LABELS = 100


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A figure as it goes into the report: rounded, and None when missing or not finite."""
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def per_class_rows(
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
                "precision": rounded(precision),
                "recall": rounded(recall),
                "f1": rounded(f1),
                "support": int(support[i]),
            }
        )
    return rows


def single_label_metrics(
    labels: Sequence[str], targets: np.ndarray, predicted: np.ndarray
) -> dict[str, Any]:
    """Accuracy, per-class P/R/F1, macro F1 and the confusion matrix of one-label predictions."""
    n_labels = len(labels)
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (targets, predicted), 1)
    tp = np.diag(matrix)
    support = matrix.sum(axis=1)
    per_class = per_class_rows(labels, tp, matrix.sum(axis=0) - tp, support - tp, support)
    present = support > 0
    f1 = np.array([row["f1"] for row in per_class], dtype=np.float64)
    shown = np.arange(n_labels)
    if n_labels > FULL_CONFUSION_MAX_LABELS:
        shown = np.flatnonzero(present | (matrix.sum(axis=0) > 0))
    return {
        "accuracy": rounded(tp.sum() / max(len(targets), 1)),
        # Macro F1 over the classes present in the targets: an absent class has no recall.
        "macro_f1": rounded(f1[present].mean() if present.any() else 0.0),
        "per_class": per_class,
        "confusion_labels": [labels[i] for i in shown],
        "confusion_matrix": matrix[np.ix_(shown, shown)].tolist(),
    }
