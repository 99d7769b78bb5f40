"""Classical scikit-learn baselines on the same embeddings and split as the deep model."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.metrics.checks import check_task
from training.metrics.per_class import rounded

log = logging.getLogger(__name__)

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
    multilabel = check_task(task) == "multilabel"
    train_x = np.asarray(train_x, dtype=np.float32).reshape(len(train_x), -1)
    test_x = np.asarray(test_x, dtype=np.float32).reshape(len(test_x), -1)
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
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
            entry = _fit_and_score(spec, x, y, test_x, test_y, multilabel, seed)
        except (ValueError, MemoryError) as exc:
            results[spec.name] = {"skipped": str(exc).splitlines()[0]}
            log.info("baseline %s skipped: %s", spec.name, exc)
            continue
        entry["seconds"] = round(time.perf_counter() - start, 2)
        entry["train_size"] = len(x)
        results[spec.name] = entry
        log.info("baseline %s: %s", spec.name, entry)
    return results


def _fit_and_score(
    spec: _Baseline,
    x: np.ndarray,
    y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    multilabel: bool,
    seed: int,
) -> dict[str, Any]:
    """Fit one baseline and return its figures on the test embeddings."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import average_precision_score
    from sklearn.multiclass import OneVsRestClassifier

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
        if not multilabel:
            return {"accuracy": rounded(np.mean(predicted == test_y))}
        scores = _scores_of(estimator, test_x, test_y.shape[1])
        present = test_y.sum(axis=0) > 0
        aps = [average_precision_score(test_y[:, j], scores[:, j]) for j in np.flatnonzero(present)]
        return {
            "map": rounded(np.mean(aps)) if aps else None,
            "accuracy": rounded(np.all(predicted == test_y, axis=1).mean()),
        }
