"""How much data is enough: the chosen head refitted on 25 / 50 / 100 % of the training
images (their embeddings, computed once), scored per class on the test split.

For a pretrained backbone the embeddings are the frozen backbone's, so the curve is what the
head would reach with less data. For a network trained from scratch they are that network's
own (trained on all the images), so the curve understates what less data would cost; the
section says which it is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from training.config import TrainConfig
from training.fit import class_weights, encode_targets, fit_head
from training.models import HEADS, build_head
from training.phases import DecodedData, Trained

FRACTIONS = (0.25, 0.5, 1.0)
MAX_EPOCHS = 30
GAIN_POINTS = 2.0  # a class gaining this many points per doubling of its images would gain more


def _rows(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified share of the rows (at least 2 per class), nested across fractions."""
    keys = y if y.ndim == 1 else np.argmax(y, axis=1)
    rng = np.random.default_rng(seed)
    keep = []
    for key in np.unique(keys):
        rows = rng.permutation(np.flatnonzero(keys == key))  # same seed: nested prefixes
        keep.append(rows[: max(2, math.ceil(fraction * len(rows)))])
    return np.sort(np.concatenate(keep))


def _per_class(task: str, logits: np.ndarray, y: np.ndarray, n_labels: int) -> list[float | None]:
    """Recall per class (single-label) or average precision per label (multilabel)."""
    if task == "multilabel":
        from sklearn.metrics import average_precision_score

        return [
            float(average_precision_score(y[:, j], logits[:, j])) if y[:, j].any() else None
            for j in range(n_labels)
        ]
    predicted = (logits[:, 0] > 0).astype(int) if task == "binary" else logits.argmax(axis=1)
    return [
        float(np.mean(predicted[y == j] == j)) if np.any(y == j) else None for j in range(n_labels)
    ]


def _overall(task: str, logits: np.ndarray, y: np.ndarray, per_class: list) -> float:
    if task == "multilabel":
        return float(np.mean([v for v in per_class if v is not None]))
    predicted = (logits[:, 0] > 0).astype(int) if task == "binary" else logits.argmax(axis=1)
    return float(np.mean(predicted == y))


def learning_curve(
    trained: Trained, data: DecodedData, config: TrainConfig, *, pretrained: bool
) -> dict[str, Any]:
    """The curve, per class, with advice; see the module docstring."""
    task, labels = config.task, data.dataset.labels
    n_labels = len(labels)
    x, y = trained.baseline_train, data.y_train
    head_config = config.override(epochs=min(config.epochs, MAX_EPOCHS))
    scores, overall, images = [], [], []
    for fraction in FRACTIONS:
        rows = _rows(y, fraction, config.seed)
        head = build_head(task, n_labels, x.shape[1], config.dropout)
        targets = encode_targets(y[rows], task, n_labels)
        weights = class_weights(y[rows], task, n_labels, config.class_weighting)
        no_val = (np.zeros((0, x.shape[1]), np.float32), np.zeros((0, targets.shape[1])))
        fit_head(head, (x[rows], targets, weights), no_val, head_config, progress=False)
        logits = np.asarray(head.predict(trained.test_embeddings, verbose=0))
        per_class = _per_class(task, logits, data.y_test, n_labels)
        scores.append(per_class)
        overall.append(round(_overall(task, logits, data.y_test, per_class), 4))
        counts = y[rows].sum(axis=0) if y.ndim == 2 else np.bincount(y[rows], minlength=n_labels)
        images.append([int(c) for c in counts])
    return _summarize(task, labels, images, scores, overall, pretrained)


def _summarize(task: str, labels: list[str], images: list[list[int]], scores: list[list],
               overall: list[float], pretrained: bool) -> dict[str, Any]:  # fmt: skip
    per_class = []
    for j, label in enumerate(labels):
        curve = [s[j] for s in scores]
        counts = [n[j] for n in images]
        gain = None
        if curve[-1] is not None and curve[-2] is not None and counts[-1] > counts[-2]:
            doublings = math.log2(counts[-1] / counts[-2])
            gain = round(100 * (curve[-1] - curve[-2]) / max(doublings, 1e-9), 1)
        advice = (
            f"would gain: about +{gain:g} points from ~{counts[-1]} more images (double)"
            if gain is not None and gain >= GAIN_POINTS and curve[-1] < 0.999
            else "flat: more images of this class would change little"
        )
        per_class.append({"label": label, "images": counts,
                          "score": [None if v is None else round(v, 4) for v in curve],
                          "gain_per_doubling": gain, "advice": advice})  # fmt: skip
    metric = "mAP" if task == "multilabel" else "accuracy"
    rising = sorted(
        (r for r in per_class if r["advice"].startswith("would gain")),
        key=lambda r: -(r["gain_per_doubling"] or 0),
    )
    shown = ", ".join(f"{r['label']} (+{r['gain_per_doubling']:g} pt per doubling)"
                      for r in rising[:4])  # fmt: skip
    line = (
        f"learning curve (a head on the {'frozen backbone' if pretrained else 'trained network'}"
        f"'s embeddings): {metric} {' -> '.join(f'{v:.3f}' for v in overall)} at "
        f"{'/'.join(f'{f:.0%}' for f in FRACTIONS)} of the training images; "
        + (f"would gain from more images: {shown}" if rising else "flat: more images of the "
           "same kind would change little")
    )  # fmt: skip
    return {
        "fractions": list(FRACTIONS),
        "metric": metric,
        "overall": overall,
        "per_class": per_class,
        "embeddings": "frozen pretrained backbone"
        if pretrained
        else "the trained network's own (understates what less data would cost)",
        "summary": line,
        "per_class_metric": "average precision" if task == "multilabel" else "recall",
        "units": HEADS[task].units(len(labels)),
    }


__all__ = ["FRACTIONS", "learning_curve"]
