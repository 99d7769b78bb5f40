"""Input checks shared by every metric: the task name, the shapes of probabilities and
targets, and the taxonomy a hierarchical task needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from device.inference.bundle import TASK_TYPES, TaskType


def check_task(task: str) -> TaskType:
    """``task`` as a :data:`~device.inference.bundle.TaskType`, or ValueError naming the choices."""
    if task not in TASK_TYPES:
        raise ValueError(f"task: expected one of {', '.join(TASK_TYPES)}, got {task!r}")
    return task  # type: ignore[return-value]


def positive_scores(probs: np.ndarray) -> np.ndarray:
    """P(positive) from (N,), (N, 1) or (N, 2) binary probabilities."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim == 1:
        return probs
    if probs.ndim == 2 and probs.shape[1] in (1, 2):
        return probs[:, -1]
    raise ValueError(f"binary probs: expected shape (N,), (N, 1) or (N, 2), got {probs.shape}")


def check_arrays(
    task: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes; return float32 probs and int64 (or 0/1 float32 multilabel) targets."""
    probs = np.asarray(probs, dtype=np.float32)
    targets = np.asarray(targets)
    if task == "binary":
        if len(labels) != 2:
            raise ValueError(f"binary labels: expected [negative, positive], got {list(labels)}")
        probs = positive_scores(probs)
    elif probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(
            f"{task} probs: expected shape (N, {len(labels)}) for {len(labels)} labels, "
            f"got {probs.shape}"
        )
    if task == "multilabel":
        return probs, _multilabel_targets(probs, targets)
    return probs, _label_indices(task, probs, targets, labels)


def _multilabel_targets(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if targets.shape != probs.shape:
        raise ValueError(
            f"multilabel targets: expected shape {probs.shape} (a 0/1 matrix), got {targets.shape}"
        )
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("multilabel targets: expected only 0 and 1")
    return targets.astype(np.float32)


def _label_indices(
    task: str, probs: np.ndarray, targets: np.ndarray, labels: Sequence[str]
) -> np.ndarray:
    n = probs.shape[0] if probs.ndim else 0
    if targets.shape != (n,):
        raise ValueError(
            f"{task} targets: expected shape ({n},) of label indices, got {targets.shape}"
        )
    if n and (targets.min() < 0 or targets.max() >= len(labels)):
        raise ValueError(
            f"{task} targets: label indices must lie in [0, {len(labels) - 1}], "
            f"got {targets.min()}..{targets.max()}"
        )
    return targets.astype(np.int64)


def require_taxonomy(
    labels: Sequence[str], taxonomy: Mapping[str, str | None] | None
) -> Mapping[str, str | None]:
    """The taxonomy of a hierarchical task; ValueError when absent or missing a label."""
    if not taxonomy:
        raise ValueError("hierarchical task: a taxonomy (node -> parent) is required")
    missing = [label for label in labels if label not in taxonomy]
    if missing:
        raise ValueError(f"taxonomy: labels without a parent entry: {missing[:5]}")
    return taxonomy
