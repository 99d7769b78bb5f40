"""Duplicates (exact and near) and outliers: what an image's neighbours say about it.

* exact duplicates: the same bytes (sha256);
* near duplicates: perceptual hashes (``imagehash.phash``) at most :data:`PHASH_NEAR` bits
  apart, or embeddings with cosine similarity at least :data:`COSINE_NEAR` (a re-encoded,
  resized or slightly shifted copy);
* outliers: the mean cosine distance to the :data:`OUTLIER_K` nearest neighbours above
  Q3 + :data:`OUTLIER_IQR` x IQR of the dataset's (Tukey's fence): far from everything.

Similarities are computed in row blocks, so memory stays O(block x N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHASH_NEAR = 4
COSINE_NEAR = 0.985
OUTLIER_K = 5
OUTLIER_IQR = 1.5
_BLOCK = 1024


@dataclass(frozen=True)
class Neighbours:
    """Per image (rows of the embedding matrix): mean distance to its nearest neighbours; and
    the pairs (i, j), i < j, that are near duplicates by embedding."""

    knn_distance: np.ndarray
    near_pairs: list[tuple[int, int]]


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def neighbours(vectors: np.ndarray, k: int = OUTLIER_K, near: float = COSINE_NEAR) -> Neighbours:
    """k-NN cosine distances and near-duplicate pairs of L2-normalised ``vectors``."""
    n = len(vectors)
    k = max(1, min(k, n - 1))
    knn = np.zeros(n, dtype=np.float64)
    pairs: list[tuple[int, int]] = []
    if n < 2:
        return Neighbours(knn, pairs)
    for start in range(0, n, _BLOCK):
        sims = vectors[start : start + _BLOCK] @ vectors.T
        rows = np.arange(len(sims))
        sims[rows, rows + start] = -np.inf  # not its own neighbour
        top = -np.partition(-sims, k - 1, axis=1)[:, :k]
        knn[start : start + len(sims)] = 1.0 - top.mean(axis=1)
        for i, j in zip(*np.nonzero(sims >= near), strict=True):
            if i + start < j:
                pairs.append((int(i + start), int(j)))
    return Neighbours(knn, pairs)


def outlier_mask(knn_distance: np.ndarray, iqr_factor: float = OUTLIER_IQR) -> np.ndarray:
    """True where the k-NN distance is beyond Tukey's fence (needs 8+ images to mean much)."""
    if len(knn_distance) < 8:
        return np.zeros(len(knn_distance), dtype=bool)
    q1, q3 = np.percentile(knn_distance, (25, 75))
    return knn_distance > q3 + iqr_factor * max(q3 - q1, 1e-6)


def outlier_fence(knn_distance: np.ndarray, iqr_factor: float = OUTLIER_IQR) -> float | None:
    """The k-NN distance above which an image is an outlier (None with too few images)."""
    if len(knn_distance) < 8:
        return None
    q1, q3 = np.percentile(knn_distance, (25, 75))
    return float(q3 + iqr_factor * max(q3 - q1, 1e-6))


def phash_pairs(hashes: list[int], max_bits: int = PHASH_NEAR) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose 64-bit perceptual hashes differ in at most ``max_bits``."""
    values = np.array(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    block = 128
    for start in range(0, len(values), block):
        xor = values[start : start + block, None] ^ values[None, :]
        bits = _popcount(xor)
        for i, j in zip(*np.nonzero(bits <= max_bits), strict=True):
            if i + start < j:
                pairs.append((int(i + start), int(j)))
    return pairs


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(-1)


def groups(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components (union-find) of the pair graph with 2+ members, sorted."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])
