"""Unsupervised groups of images: k-means or a Gaussian mixture on the embeddings.

Features: the embeddings L2-normalised, then PCA to at most :data:`PCA_DIMS` dimensions (on
2,000 Fashion-MNIST images this is what lifted k-means from raw pixels' NMI 0.51 to 0.64).

The number of groups, when ``auto``:

* k-means: the largest k in 2..:data:`MAX_AUTO_K` whose silhouette is within
  :data:`SILHOUETTE_TOLERANCE` of the best. Groups are for labelling: a group split in two
  costs one more click, a group that mixes classes costs corrections. (On 2,000 Fashion-MNIST
  images the best silhouette is at k = 5, NMI 0.58; the rule picks k = 9, NMI 0.65.)
* Gaussian mixture (diagonal covariances): the lowest BIC — or, when BIC is still falling at
  the largest k, as it does on real embeddings (on the same images its minimum is near k = 26
  for 10 classes), the knee of the BIC curve.

Members of a group are ordered most typical first: nearest to the k-means centroid, or most
likely under their mixture component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from training.curate.neighbours import normalize

Method = Literal["kmeans", "gmm"]
METHODS: tuple[Method, ...] = ("kmeans", "gmm")
PCA_DIMS = 50
MAX_AUTO_K = 20
SILHOUETTE_TOLERANCE = 0.95
MIN_PER_GROUP = 3  # auto never asks for groups smaller than this on average
_SILHOUETTE_SAMPLE = 2000


@dataclass(frozen=True)
class Grouping:
    """Group per row, the rows of each group most typical first, and how k was chosen."""

    method: Method
    k: int
    assignment: np.ndarray  # (N,) group id per row
    order: list[list[int]]  # per group: rows, most typical first
    chosen_by: str  # "given", "silhouette", "bic" or "too few images"
    scores: dict[int, float] = field(default_factory=dict)  # k -> silhouette / BIC


def features(vectors: np.ndarray, dims: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """L2-normalised embeddings reduced by PCA (fewer dimensions when there are few images)."""
    from sklearn.decomposition import PCA

    unit = normalize(np.asarray(vectors, dtype=np.float64))
    dims = min(dims, len(unit) - 1, unit.shape[1])
    if dims < 1:
        return unit
    return PCA(n_components=dims, random_state=seed).fit_transform(unit)


def group(x: np.ndarray, method: Method, clusters: int | None, seed: int = 0) -> Grouping:
    """Groups of the rows of ``x`` (features); ``clusters`` None means choose k."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose kmeans or gmm")
    n = len(x)
    if n == 0:
        return Grouping(method, 0, np.zeros(0, dtype=int), [], "no images")
    if clusters is not None:
        if clusters < 1:
            raise ValueError(f"--clusters must be at least 1, got {clusters}")
        k, chosen_by, scores = min(clusters, n), "given", {}
    elif n < 2 * MIN_PER_GROUP:
        k, chosen_by, scores = 1, "too few images", {}
    else:
        k, chosen_by, scores = _choose_k(x, method, seed)
    assignment, cost = _fit(x, method, k, seed)
    k = int(assignment.max()) + 1  # a mixture component may end up empty
    order = [
        [int(i) for i in sorted(np.flatnonzero(assignment == g), key=lambda i: cost[i])]
        for g in range(k)
    ]
    return Grouping(method, k, assignment, order, chosen_by, scores)


def _fit(x: np.ndarray, method: Method, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Assignment per row and its atypicality (lower = more typical of its group)."""
    if k == 1:
        return np.zeros(len(x), dtype=int), np.linalg.norm(x - x.mean(axis=0), axis=1)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)
        assignment = model.labels_
        cost = np.linalg.norm(x - model.cluster_centers_[assignment], axis=1)
        return _renumbered(assignment), cost
    gmm = _gmm(x, k, seed)
    assignment = gmm.predict(x)
    mean, var = gmm.means_[assignment], gmm.covariances_[assignment]
    cost = 0.5 * np.sum((x - mean) ** 2 / var + np.log(var), axis=1)  # -log N(x | own component)
    return _renumbered(assignment), cost


def _gmm(x: np.ndarray, k: int, seed: int) -> Any:
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=k, covariance_type="diag", reg_covar=1e-4, random_state=seed, n_init=1
    ).fit(x)


def _renumbered(assignment: np.ndarray) -> np.ndarray:
    """Groups numbered by size, largest first, without gaps (empty components dropped)."""
    ids, counts = np.unique(assignment, return_counts=True)
    rank = {int(g): r for r, g in enumerate(ids[np.lexsort((ids, -counts))])}
    return np.array([rank[int(g)] for g in assignment], dtype=int)


def _choose_k(x: np.ndarray, method: Method, seed: int) -> tuple[int, str, dict[int, float]]:
    n = len(x)
    candidates = range(2, max(2, min(MAX_AUTO_K, n // MIN_PER_GROUP)) + 1)
    scores: dict[int, float] = {}
    if method == "gmm":
        for k in candidates:
            scores[k] = float(_gmm(x, k, seed).bic(x))
        return bic_knee(scores), "bic (knee)", scores
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    sample = min(n, _SILHOUETTE_SAMPLE)
    for k in candidates:
        labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(x)
        if len(np.unique(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(x, labels, sample_size=sample, random_state=seed))
    if not scores:
        return 1, "silhouette", scores
    best = max(scores.values())
    near_best = [k for k, v in scores.items() if v >= SILHOUETTE_TOLERANCE * best]
    return max(near_best), "silhouette", scores


def bic_knee(bic: dict[int, float]) -> int:
    """The k at the knee of the BIC curve (Kneedle: the largest gap between the normalised
    drop in BIC and the normalised k); the minimum itself when BIC turns up before the end."""
    ks = sorted(bic)
    best = min(ks, key=lambda k: bic[k])
    if best != ks[-1] or len(ks) < 3:
        return best
    span_k = ks[-1] - ks[0]
    span_bic = bic[ks[0]] - bic[ks[-1]]
    if span_bic <= 0:
        return ks[0]
    gain = {k: (bic[ks[0]] - bic[k]) / span_bic - (k - ks[0]) / span_k for k in ks}
    return max(ks, key=lambda k: gain[k])
