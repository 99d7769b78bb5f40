"""Hierarchical tasks: the device's greedy walk down the taxonomy, the back-off threshold
fitted on validation data, and the per-level and back-off figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from device.inference.bundle import Thresholds
from device.inference.decode import UNKNOWN, Hierarchy, decode_hierarchical
from device.inference.taxonomy import path_from_root
from training.metrics.per_class import rounded, single_label_metrics
from training.metrics.search import MIN_VAL_IMAGES, candidates

# A hierarchical threshold never goes below 0.5: a reported node then always holds the majority
# of the probability, so no sibling can be as likely as the answer.
MIN_HIERARCHY_THRESHOLD = 0.5
MAX_HIERARCHY_THRESHOLD = 0.99


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


def stop_depth(path_scores: np.ndarray, threshold: float) -> int:
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


def hierarchy_threshold(
    probs: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    taxonomy: Mapping[str, str | None],
    target_accuracy: float,
) -> tuple[float, str]:
    """The smallest threshold in [0.5, 0.99] whose back-off answers reach ``target_accuracy``
    on validation, and a note saying how it was chosen."""
    n = len(probs)
    default = Thresholds().hierarchy
    if n < MIN_VAL_IMAGES:
        return default, (
            f"hierarchy threshold: kept the default {default} (only {n} validation images; "
            f"need >= {MIN_VAL_IMAGES})"
        )
    hierarchy = Hierarchy.build(labels, taxonomy)
    paths, scores = greedy_paths(probs, hierarchy)
    true_paths = [path_from_root(labels[t], taxonomy) for t in targets]
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
    points = candidates(all_scores, MIN_HIERARCHY_THRESHOLD, MAX_HIERARCHY_THRESHOLD)
    wrong = n - np.searchsorted(first_wrong, points, side="left")
    accuracy = 1.0 - wrong / n
    depth = (len(all_scores) - np.searchsorted(all_scores, points, side="left")) / n
    # Accuracy never falls as the threshold rises (backing off to an ancestor of a correct node
    # stays correct), so the first candidate that reaches the target is the most specific one.
    reaching = np.flatnonzero(accuracy >= target_accuracy)
    if reaching.size:
        i = int(reaching[0])
        threshold = float(points[i])
        return round(threshold, 6), (
            f"hierarchy threshold {threshold:.4g}: smallest (>= {MIN_HIERARCHY_THRESHOLD}) "
            f"whose reported node is correct for {accuracy[i]:.3f} >= {target_accuracy} of "
            f"{n} validation images (mean depth {depth[i]:.2f})"
        )
    threshold = float(points[-1])
    return round(threshold, 6), (
        f"hierarchy threshold {threshold:.4g}: target accuracy {target_accuracy} not reachable "
        f"at or below {MAX_HIERARCHY_THRESHOLD}; reported nodes correct for {accuracy[-1]:.3f} "
        f"of {n} validation images (mean depth {depth[-1]:.2f})"
    )


def hierarchical_metrics(
    labels: Sequence[str],
    probs: np.ndarray,
    targets: np.ndarray,
    taxonomy: Mapping[str, str | None],
    threshold: float,
) -> dict[str, Any]:
    """The figures of :func:`training.metrics.compute_metrics` for a hierarchical task."""
    hierarchy = Hierarchy.build(labels, taxonomy)
    index = {label: i for i, label in enumerate(labels)}
    paths, _ = greedy_paths(probs, hierarchy)
    leaf = np.array([index[p[-1]] for p in paths], dtype=np.int64)
    out = single_label_metrics(labels, targets, leaf)
    out["argmax_leaf_accuracy"] = (
        rounded(np.mean(probs.argmax(axis=1) == targets)) if len(probs) else 0
    )
    true_paths = [path_from_root(labels[t], taxonomy) for t in targets]
    max_depth = max((len(path_from_root(label, taxonomy)) for label in labels), default=1)
    out["levels"] = _level_accuracies(paths, true_paths, max_depth)
    out["backoff"] = _backoff_figures(probs, hierarchy, threshold, true_paths, max_depth)
    out["thresholds"] = {"hierarchy": threshold}
    return out


def _level_accuracies(
    paths: list[list[str]], true_paths: list[list[str]], max_depth: int
) -> list[dict[str, Any]]:
    """Accuracy per taxonomy level; a path shorter than the level counts with its last node."""
    levels = []
    for level in range(1, max_depth + 1):
        hits = [
            p[min(level, len(p)) - 1] == q[min(level, len(q)) - 1]
            for p, q in zip(paths, true_paths, strict=True)
        ]
        levels.append({"level": level, "accuracy": rounded(np.mean(hits)) if hits else None})
    return levels


def _backoff_figures(
    probs: np.ndarray,
    hierarchy: Hierarchy,
    threshold: float,
    true_paths: list[list[str]],
    max_depth: int,
) -> dict[str, Any]:
    """The device's answers at ``threshold``: how often right, at the leaf, unknown, how deep."""
    answers = [decode_hierarchical(row, hierarchy, threshold, k=1) for row in probs]
    depths = np.array([len(a.path) for a in answers])
    correct = np.array(
        [a.label == UNKNOWN or a.label in q for a, q in zip(answers, true_paths, strict=True)]
    )
    leaf_depths = np.array([len(q) for q in true_paths])
    n = max(len(answers), 1)
    return {
        "threshold": threshold,
        "accuracy": rounded(correct.sum() / n),
        "leaf_rate": rounded(np.sum(depths == leaf_depths) / n),
        "unknown_rate": rounded(np.sum(depths == 0) / n),
        "mean_depth": rounded(depths.sum() / n, 3),
        "max_depth": max_depth,
    }
