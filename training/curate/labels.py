"""Labeled images: likely label errors (confident learning) and class balance.

Label errors: out-of-fold probabilities from a logistic-regression head trained on the
embeddings in stratified k-fold cross-validation (each image is scored by a head that never saw
it), then cleanlab's ``find_label_issues`` (Northcutt et al. 2021, confident learning): an image
whose given class is unlikely by the per-class thresholds it estimates is flagged, with the
class the heads preferred.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from training.data.checks import IMBALANCE_RATIO

MAX_FOLDS = 5


@dataclass(frozen=True)
class LabelIssues:
    """Which labeled images look mislabeled (indices into the labeled rows), and why not run."""

    flagged: dict[int, dict[str, object]]  # row -> {"suggested": class, "quality": score}
    skipped: str | None = None  # why label errors were not looked for


def label_issues(vectors: np.ndarray, labels: list[str], seed: int = 0) -> LabelIssues:
    """Label issues among ``labels`` (one per row of the L2-normalised ``vectors``)."""
    counts = Counter(labels)
    classes = sorted(counts)
    if len(classes) < 2:
        return LabelIssues({}, "label errors need at least two classes")
    folds = min(MAX_FOLDS, min(counts.values()))
    if folds < 2:
        small = sorted(c for c, n in counts.items() if n < 2)
        return LabelIssues({}, f"label errors need 2+ images per class ({', '.join(small)})")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in labels])
    head = LogisticRegression(C=1.0, max_iter=300)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(head, vectors, y, cv=cv, method="predict_proba")
    mask = find_label_issues(y, probs, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(y, probs)
    flagged = {
        int(i): {
            "suggested": classes[int(np.argmax(probs[i]))],
            "quality": round(float(quality[i]), 4),
        }
        for i in np.flatnonzero(mask)
    }
    return LabelIssues(flagged)


def class_balance(labels: list[str]) -> dict[str, object]:
    """Counts per class, the largest-to-smallest ratio and whether it is imbalanced (the ratio
    at which ``kestrel train`` warns)."""
    counts = dict(sorted(Counter(labels).items()))
    if not counts:
        return {"counts": {}, "ratio": None, "imbalanced": False, "minority": []}
    ratio = max(counts.values()) / min(counts.values())
    biggest = max(counts.values())
    minority = sorted(c for c, n in counts.items() if n * IMBALANCE_RATIO <= biggest)
    return {
        "counts": counts,
        "ratio": round(ratio, 2),
        "imbalanced": len(counts) > 1 and ratio >= IMBALANCE_RATIO,
        "minority": minority,
    }
