"""``curate``: a folder of images -> ``REPORT/curate.json`` and ``REPORT/index.html``.

Phases: discover the images (:mod:`.discover`), measure them (:mod:`.quality`), embed them
(:mod:`training.embeddings`, cached), then flags from neighbours (:mod:`.neighbours`), label
errors and balance (:mod:`.labels`), groups (:mod:`.grouping`), and the report
(:mod:`.report`). Nothing in the folder is changed: curate only reads it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.curate.discover import Item, discover
from training.curate.grouping import METHODS, Grouping, Method, features, group
from training.curate.labels import LabelIssues, class_balance, label_issues
from training.curate.neighbours import (
    groups,
    neighbours,
    normalize,
    outlier_fence,
    outlier_mask,
    phash_pairs,
)
from training.curate.quality import Stats, measure_all, quality_flags, thresholds

DEFAULT_BACKBONE = "efficientnet-lite0"


class CurateError(ValueError):
    """A folder or setting curate cannot work with (the message says which)."""


@dataclass
class Analysis:
    """Everything measured about a folder; :mod:`.report` turns it into the JSON report."""

    root: Path
    items: list[Item]
    stats: dict[Path, Stats]
    failed: dict[Path, str]
    rows: list[Path]  # the embedded images, in the order of ``vectors``
    vectors: np.ndarray  # L2-normalised embeddings
    flags: dict[Path, list[str]]
    extra: dict[Path, dict[str, Any]] = field(default_factory=dict)  # per-image report fields
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    issues: LabelIssues | None = None
    grouping: Grouping | None = None
    grouped_rows: list[int] = field(default_factory=list)  # rows the grouping numbers
    grouped_of: str = "unlabeled"
    map_xy: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def curate(
    root: Path,
    out: Path | None = None,
    *,
    clusters: int | None = None,
    method: Method = "kmeans",
    backbone: str = DEFAULT_BACKBONE,
    image_size: int | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Analyse ``root``; write the report into ``out`` when given; return the report dict.

    Raises :class:`CurateError` for a missing folder, a folder without images or bad settings.
    """
    from training.curate.report import build_report, write_report
    from training.embeddings import canonical_backbone, embed_files
    from training.models import get_backbone

    root = Path(root)
    if method not in METHODS:
        raise CurateError(f"unknown method {method!r}; choose {' or '.join(METHODS)}")
    try:
        name = canonical_backbone(backbone)
        size = image_size or get_backbone(name).default_size
        items = discover(root)
    except (OSError, ValueError) as exc:
        raise CurateError(str(exc)) from None
    if not items:
        raise CurateError(f"{root}: no images found (looked in the folder and its class folders)")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    paths = [item.path for item in items]
    stats, failed = measure_all(paths, progress)
    timings["measure"] = time.perf_counter() - clock
    say(progress, f"measured {len(stats)} images ({len(failed)} unreadable)")
    clock = time.perf_counter()
    try:
        embedded = embed_files(
            [p for p in paths if p in stats],
            size=size,
            backbone=name,
            cache_dir=cache_dir,
            progress=progress,
        )
    except ValueError as exc:
        raise CurateError(str(exc)) from None
    timings["embed"] = time.perf_counter() - clock
    say(progress, f"embeddings: {embedded.computed} computed, {embedded.reused} from the cache")
    failed.update(embedded.failed)
    analysis = Analysis(
        root=root,
        items=items,
        stats=stats,
        failed=failed,
        rows=embedded.paths,
        vectors=normalize(embedded.vectors),
        flags=quality_flags({p: stats[p] for p in embedded.paths}),
        timings=timings,
        settings={
            "method": method,
            "clusters": clusters if clusters is not None else "auto",
            "backbone": name,
            "image_size": size,
            "seed": seed,
            "embeddings": {"computed": embedded.computed, "reused": embedded.reused},
            "thresholds": thresholds(stats),
        },
    )
    analyse(analysis, method, clusters, seed, progress)
    report = build_report(analysis)
    if out is not None:
        write_report(Path(out), report, analysis)
    return report


def analyse(a: Analysis, method: Method, clusters: int | None, seed: int, progress: bool) -> None:
    """The flags from neighbours and labels, the groups and the 2-D map, filled into ``a``."""
    clock = time.perf_counter()
    x = features(a.vectors, seed=seed) if len(a.rows) else np.zeros((0, 0))
    _duplicates_and_outliers(a)
    _label_errors(a, x, seed)
    a.timings["flags"] = time.perf_counter() - clock
    clock = time.perf_counter()
    label_of = {item.path: item.label for item in a.items}
    unlabeled = [r for r, p in enumerate(a.rows) if label_of[p] is None]
    if unlabeled:
        a.grouped_rows, a.grouped_of = unlabeled, "unlabeled"
    else:
        a.grouped_rows, a.grouped_of = list(range(len(a.rows))), "all"
    a.grouping = group(x[a.grouped_rows], method, clusters, seed)
    a.timings["group"] = time.perf_counter() - clock
    what = f"{len(a.grouped_rows)} {a.grouped_of} images"
    say(progress, f"{a.grouping.k} groups of {what} ({method}, k by {a.grouping.chosen_by})")
    clock = time.perf_counter()
    a.map_xy = embedding_map(x, seed)
    a.timings["map"] = time.perf_counter() - clock


def _duplicates_and_outliers(a: Analysis) -> None:
    near = neighbours(a.vectors)
    hashes = [a.stats[p].phash for p in a.rows]
    by_sha: dict[str, int] = {}
    pairs = list(near.near_pairs) + phash_pairs(hashes)
    for r, path in enumerate(a.rows):
        first = by_sha.setdefault(a.stats[path].sha256, r)
        if first != r:
            pairs.append((first, r))
    for members in groups(len(a.rows), pairs):
        paths = [a.rows[r] for r in members]
        exact = len({a.stats[p].sha256 for p in paths}) == 1
        rel = [p.relative_to(a.root).as_posix() for p in paths]
        a.duplicates.append({"paths": rel, "kind": "exact" if exact else "near"})
        for path in paths[1:]:
            a.flags[path].append("duplicate")
            a.extra.setdefault(path, {})["duplicate_of"] = a.duplicates[-1]["paths"][0]
    for r in np.flatnonzero(outlier_mask(near.knn_distance)):
        a.flags[a.rows[r]].append("outlier")
    for r, path in enumerate(a.rows):
        a.extra.setdefault(path, {})["knn_distance"] = round(float(near.knn_distance[r]), 4)
    a.settings["thresholds"]["outlier_knn_distance_above"] = outlier_fence(near.knn_distance)


def _label_errors(a: Analysis, x: np.ndarray, seed: int) -> None:
    label_of = {item.path: item.label for item in a.items}
    labeled = [r for r, p in enumerate(a.rows) if label_of[p] is not None]
    if not labeled:
        return
    labels = [label_of[a.rows[r]] or "" for r in labeled]
    a.issues = label_issues(x[labeled], labels, seed)
    for i, info in a.issues.flagged.items():
        path = a.rows[labeled[i]]
        a.flags[path].append("label_error")
        a.extra.setdefault(path, {})["suggested_label"] = info["suggested"]


def embedding_map(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the feature rows: t-SNE (PCA for fewer than 10 images)."""
    n = len(x)
    if n == 0:
        return np.zeros((0, 2))
    if n < 10 or x.shape[1] < 2:
        padded = np.zeros((n, 2))
        padded[:, : min(2, x.shape[1])] = x[:, :2]
        return padded
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", max_iter=500, random_state=seed)
    # One OpenMP thread: t-SNE's threads spin, and on a busy machine they took 5-10x longer.
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x.astype(np.float32))


def labels_of(items: Sequence[Item]) -> list[str]:
    return [item.label for item in items if item.label is not None]


def balance(items: Sequence[Item]) -> dict[str, Any]:
    return class_balance(labels_of(items))


def say(progress: bool, message: str) -> None:
    if progress:
        print(f"kestrel curate: {message}", file=sys.stderr)
