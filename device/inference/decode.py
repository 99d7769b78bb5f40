"""Decoding: raw model outputs -> labels, for the four task types.

Pure numpy functions, tested on synthetic arrays. :func:`make_decoder` builds, once per
bundle, the function that the engine calls per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.inference.bundle import Manifest, TensorQuantization
from device.inference.taxonomy import lineage

UNKNOWN = "unknown"


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 4)}


@dataclass(frozen=True)
class Prediction:
    """A decoded model output.

    ``labels`` is the answer: one label (binary, multiclass, hierarchical: the deepest confident
    node, or ``unknown``), or every active label (multilabel, possibly none). ``scores`` holds
    the top-k leaf scores; ``path`` the hierarchy from the top level down to the answer.
    """

    task: str
    labels: tuple[LabelScore, ...]
    scores: tuple[LabelScore, ...]
    path: tuple[LabelScore, ...] = field(default=())

    @property
    def label(self) -> str:
        """The main answer as one string ('' when a multilabel model sees nothing)."""
        return self.labels[0].label if self.labels else ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "labels": [x.to_dict() for x in self.labels],
            "scores": [x.to_dict() for x in self.scores],
        }
        if self.path:
            out["hierarchy"] = [x.to_dict() for x in self.path]
        return out


def dequantize(raw: np.ndarray, quantization: TensorQuantization | None) -> np.ndarray:
    """Quantized output -> float32. Subtracts the zero point in float, so int8 cannot wrap."""
    values = raw.astype(np.float32).reshape(-1)
    if quantization is None:
        return values
    return (values - np.float32(quantization.zero_point)) * np.float32(quantization.scale)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / np.sum(shifted)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def top_k(probs: np.ndarray, labels: Sequence[str], k: int) -> tuple[LabelScore, ...]:
    k = max(1, min(k, probs.size))
    idx = np.argpartition(-probs, k - 1)[:k] if k < probs.size else np.arange(probs.size)
    idx = idx[np.argsort(-probs[idx], kind="stable")]
    return tuple(LabelScore(labels[i], float(probs[i])) for i in idx)


def decode_binary(probs: np.ndarray, labels: Sequence[str], threshold: float) -> Prediction:
    """``labels`` is [negative, positive]; ``probs`` holds P(positive) or both probabilities."""
    positive = float(probs[-1])
    negative_label, positive_label = labels
    scores = (LabelScore(positive_label, positive), LabelScore(negative_label, 1.0 - positive))
    if positive >= threshold:
        answer = LabelScore(positive_label, positive)
    else:
        answer = LabelScore(negative_label, 1.0 - positive)
    return Prediction("binary", (answer,), scores)


def decode_multiclass(
    probs: np.ndarray,
    labels: Sequence[str],
    k: int = 5,
    min_score: float = 0.0,
    abstain: float | None = None,
) -> Prediction:
    """Top-k; the answer is ``unknown`` when the top score is under the abstain threshold."""
    ranked = top_k(probs, labels, k)
    best = ranked[0]
    unsure = abstain is not None and best.score < abstain
    answer = LabelScore(UNKNOWN, best.score) if unsure else best
    shown = tuple(x for x in ranked if x.score >= min_score) or (best,)
    return Prediction("multiclass", (answer,), shown)


def decode_multilabel(
    probs: np.ndarray, labels: Sequence[str], thresholds: Mapping[str, float], k: int = 5
) -> Prediction:
    """Every label whose probability reaches its own threshold (0.5 when not calibrated)."""
    limits = np.array([thresholds.get(label, 0.5) for label in labels], dtype=np.float32)
    active = np.flatnonzero(probs >= limits)
    active = active[np.argsort(-probs[active], kind="stable")]
    answer = tuple(LabelScore(labels[i], float(probs[i])) for i in active)
    return Prediction("multilabel", answer, top_k(probs, labels, k))


@dataclass(frozen=True)
class Hierarchy:
    """A taxonomy prepared once for fast decoding.

    Probabilities of all nodes live in one vector: internal nodes first (their sums are one
    matrix product over the leaves), then the leaves. Children are index arrays into it.
    """

    names: tuple[str, ...]  # internal nodes, then leaves
    membership: np.ndarray  # (internal nodes, leaves): 1 where the leaf lies under the node
    children: Mapping[int, np.ndarray]  # node index (-1: the root) -> child indices

    @property
    def leaves(self) -> tuple[str, ...]:
        return self.names[len(self.membership) :]

    @classmethod
    def build(cls, leaves: Sequence[str], parents: Mapping[str, str | None]) -> Hierarchy:
        leaf_set = set(leaves)
        inner = sorted(n for n in parents if n not in leaf_set)
        names = (*inner, *leaves)
        index = {n: i for i, n in enumerate(names)}
        membership = np.zeros((len(inner), len(leaves)), dtype=np.float32)
        for j, leaf in enumerate(leaves):
            for ancestor in lineage(leaf, parents)[1:]:
                membership[index[ancestor], j] = 1.0
        children: dict[int, list[int]] = {}
        for node, parent in parents.items():
            children.setdefault(-1 if parent is None else index[parent], []).append(index[node])
        arrays = {k: np.array(sorted(v), dtype=np.intp) for k, v in children.items()}
        return cls(names=names, membership=membership, children=arrays)

    def node_probabilities(self, leaf_probs: np.ndarray) -> np.ndarray:
        """Probability of every node, in the order of :attr:`names`."""
        return np.concatenate([self.membership @ leaf_probs, leaf_probs])

    def probability(self, leaf_probs: np.ndarray, name: str) -> float:
        return float(self.node_probabilities(leaf_probs)[self.names.index(name)])


def decode_hierarchical(
    probs: np.ndarray, hierarchy: Hierarchy, threshold: float, k: int = 5
) -> Prediction:
    """Deepest confident node ("hedging your bets", Deng et al. 2012).

    Leaf probabilities are summed up the taxonomy; starting at the top, follow the most probable
    child while its probability reaches ``threshold``. When the leaf ("aphid") is unsure the
    answer backs off to its parent ("insect"); when no top-level node is sure it is ``unknown``.
    """
    node_probs = hierarchy.node_probabilities(probs.astype(np.float32, copy=False))
    path: list[LabelScore] = []
    top_level = hierarchy.children[-1]
    options = top_level
    while options is not None:
        best = int(options[np.argmax(node_probs[options])])
        if node_probs[best] < threshold:
            break
        path.append(LabelScore(hierarchy.names[best], float(node_probs[best])))
        options = hierarchy.children.get(best)
    answer = path[-1] if path else LabelScore(UNKNOWN, float(node_probs[top_level].max()))
    return Prediction("hierarchical", (answer,), top_k(probs, hierarchy.leaves, k), tuple(path))


Decoder = Callable[[np.ndarray], Prediction]


def make_probabilities(
    manifest: Manifest, output_quantization: TensorQuantization | None
) -> Callable[[np.ndarray], np.ndarray]:
    """Raw output tensor -> probabilities in label order, as the manifest says.

    Training uses this same function to evaluate bundles, so thresholds are calibrated on
    exactly the numbers the device compares them with.
    """
    activation = manifest.output.activation
    task = manifest.task

    def probabilities(raw: np.ndarray) -> np.ndarray:
        values = dequantize(raw, output_quantization)
        if activation != "none":
            return values
        if task == "multilabel" or (task == "binary" and values.size == 1):
            return sigmoid(values)
        return softmax(values)

    return probabilities


def make_decoder(
    manifest: Manifest,
    output_quantization: TensorQuantization | None,
    k: int = 5,
    min_score: float = 0.0,
) -> Decoder:
    """Build once per bundle the function that turns a raw output tensor into a Prediction."""
    labels = manifest.labels
    thresholds = manifest.thresholds
    task = manifest.task
    probabilities = make_probabilities(manifest, output_quantization)

    if task == "binary":
        return lambda raw: decode_binary(probabilities(raw), labels, thresholds.binary)
    if task == "multiclass":
        return lambda raw: decode_multiclass(
            probabilities(raw), labels, k, min_score, thresholds.abstain
        )
    if task == "multilabel":
        return lambda raw: decode_multilabel(probabilities(raw), labels, thresholds.per_label, k)
    assert manifest.taxonomy is not None  # the manifest validator guarantees it
    hierarchy = Hierarchy.build(labels, manifest.taxonomy)
    return lambda raw: decode_hierarchical(probabilities(raw), hierarchy, thresholds.hierarchy, k)
