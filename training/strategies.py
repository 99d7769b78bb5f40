"""The training phase of ``kestrel train``: the two ways a model is fitted, chosen by the
backbone.

* pretrained backbone: frozen, a head trained on cached embeddings of augmented copies of
  the training images (the fast path), optionally followed by fine-tuning its top blocks;
* random-init backbone: the whole network end to end on augmented pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.config import TrainConfig
from training.fit import (
    PixelFit,
    build_augmenter,
    class_weights,
    compute_embeddings,
    encode_targets,
    fast_batch_norm,
    fit_head,
    fit_pixels,
)
from training.models import (
    assemble,
    build_embedder,
    build_head,
    output_activation,
    unfreeze_top_blocks,
)
from training.phases import DecodedData, Phases, Setup, Trained, say

# (baseline training embeddings, test embeddings, the report's description of the training)
_Outcome = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@dataclass(frozen=True)
class _Parts:
    """The networks and targets that both ways of training start from."""

    backbone: keras.Model
    embedder: keras.Model
    head: keras.Model
    augmenter: keras.Sequential | None
    train: tuple[np.ndarray, np.ndarray, np.ndarray]  # pixels, targets, weights
    val: tuple[np.ndarray, np.ndarray]  # pixels, targets


def train_model(
    setup: Setup, data: DecodedData, config: TrainConfig, phases: Phases, progress: bool
) -> Trained:
    """Seed, build and fit the model the way its backbone calls for."""
    parts = _build_parts(setup, data, config)
    fit = _fit_pretrained if setup.backbone.pretrained else _fit_from_scratch
    baseline_train, test_embeddings, info = fit(setup, parts, data, config, phases, progress)
    activation = output_activation(config.task, config.output)
    model = assemble(parts.embedder, parts.head, activation)
    return Trained(model, activation, parts.augmenter, baseline_train, test_embeddings, info)


def _build_parts(setup: Setup, data: DecodedData, config: TrainConfig) -> _Parts:
    # Seeded first: building the augmenter and the networks draws random numbers.
    keras.utils.set_random_seed(config.seed)
    if config.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    augmenter = build_augmenter(config, config.seed)
    backbone = setup.backbone.build(setup.size, setup.channels)
    embedder = build_embedder(setup.backbone, backbone, setup.size, setup.channels)
    n_labels = len(data.dataset.labels)
    head = build_head(config.task, n_labels, setup.backbone.embedding_size, config.dropout)
    t_train = encode_targets(data.y_train, config.task, n_labels)
    t_val = encode_targets(data.y_val, config.task, n_labels)
    w_train = class_weights(data.y_train, config.task, n_labels, config.class_weighting)
    train = (data.train_px, t_train, w_train)
    return _Parts(backbone, embedder, head, augmenter, train, (data.val_px, t_val))


def _fit_pretrained(
    setup: Setup,
    parts: _Parts,
    data: DecodedData,
    config: TrainConfig,
    phases: Phases,
    progress: bool,
) -> _Outcome:
    """The fast path: a head on cached embeddings of the frozen backbone, then optionally
    fine-tuning."""
    info: dict[str, Any] = {"mode": "head on cached embeddings"}
    parts.backbone.trainable = False
    copies = config.augment_copies if parts.augmenter is not None else 1
    with phases("embeddings"):
        train_emb = compute_embeddings(
            parts.embedder,
            data.train_px,
            augmenter=parts.augmenter,
            copies=copies,
            desc="embeddings (train)",
            progress=progress,
        )
        val_emb = compute_embeddings(
            parts.embedder, data.val_px, desc="embeddings (val)", progress=progress
        )
        test_emb = compute_embeddings(
            parts.embedder, data.test_px, desc="embeddings (test)", progress=progress
        )
    _, t_train, w_train = parts.train
    with phases("train_head"):
        info["head_epochs"] = fit_head(
            parts.head,
            (train_emb, np.concatenate([t_train] * copies), np.tile(w_train, copies)),
            (val_emb, parts.val[1]),
            config,
            progress=progress,
        )
    if config.fine_tune:
        _fine_tune(setup, parts, config, info, phases, progress)
    return train_emb[: len(data.train_px)], test_emb, info


def _fine_tune(
    setup: Setup,
    parts: _Parts,
    config: TrainConfig,
    info: dict[str, Any],
    phases: Phases,
    progress: bool,
) -> None:
    with phases("fine_tune"):
        unfrozen = unfreeze_top_blocks(setup.backbone, parts.backbone, config.fine_tune_blocks)
        fit = _fit_on_pixels(
            parts,
            config,
            epochs=config.fine_tune_epochs,
            learning_rate=config.fine_tune_learning_rate,
            desc="fine-tune",
            progress=progress,
            keep_if_worse=True,
        )
    if fit.kept:
        info["mode"] += f", then fine-tuned ({unfrozen} layers)"
    info["fine_tune"] = fit.describe()
    if progress:
        say(f"fine-tuning: {fit.describe()}")
    parts.backbone.trainable = False


def _fit_from_scratch(
    setup: Setup,
    parts: _Parts,
    data: DecodedData,
    config: TrainConfig,
    phases: Phases,
    progress: bool,
) -> _Outcome:
    """Random-init backbone: the whole network end to end on pixels."""
    info: dict[str, Any] = {"mode": "end to end from random initialization"}
    if config.fine_tune and progress:
        say(f"{setup.backbone.name} has no pretrained weights: every layer is trained anyway")
    fast_batch_norm(parts.backbone)
    with phases("train"):
        info["epochs"] = _fit_on_pixels(
            parts,
            config,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            desc="train",
            progress=progress,
        ).epochs
    parts.backbone.trainable = False
    with phases("embeddings"):
        # Baselines use the trained network's embeddings: there are no pretrained ones.
        baseline_train = compute_embeddings(
            parts.embedder, data.train_px, desc="embeddings (train)", progress=progress
        )
        test_emb = compute_embeddings(
            parts.embedder, data.test_px, desc="embeddings (test)", progress=progress
        )
    return baseline_train, test_emb, info


def _fit_on_pixels(
    parts: _Parts,
    config: TrainConfig,
    *,
    epochs: int,
    learning_rate: float,
    desc: str,
    progress: bool,
    keep_if_worse: bool = False,
) -> PixelFit:
    return fit_pixels(
        parts.embedder,
        parts.head,
        parts.augmenter,
        parts.train,
        parts.val,
        config,
        epochs=epochs,
        learning_rate=learning_rate,
        desc=desc,
        progress=progress,
        keep_if_worse=keep_if_worse,
    )


__all__ = ["train_model"]
