"""The training phase of ``kestrel train``: the two ways a model is fitted, chosen by the
backbone.

* pretrained backbone: frozen, a head trained on cached embeddings of augmented copies of
  the training images (the fast path), optionally followed by fine-tuning its top blocks;
* random-init backbone: the whole network end to end on augmented pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.batch_norm import fast_batch_norm
from training.config import TrainConfig
from training.fit import (
    PixelFit,
    build_augmenter,
    class_weights,
    compute_embeddings,
    encode_targets,
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


@dataclass(frozen=True)
class _Run:
    """How a fit goes: its phase timer, progress bars, and the time it must stop by."""

    phases: Phases
    progress: bool
    deadline: float | None


def train_model(
    setup: Setup,
    data: DecodedData,
    config: TrainConfig,
    phases: Phases,
    progress: bool,
    deadline: float | None = None,
) -> Trained:
    """Seed, build and fit the model the way its backbone calls for, each fit stopping by
    ``deadline`` (``time.perf_counter``); with ``distribute``, under
    ``tf.distribute.MirroredStrategy`` (every GPU of the machine, or the logical CPUs)."""
    strategy = tf.distribute.MirroredStrategy() if config.distribute else None
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        parts = _build_parts(setup, data, config)
        fit = _fit_pretrained if setup.backbone.pretrained else _fit_from_scratch
        baseline_train, test_embeddings, info = fit(
            setup, parts, data, config, _Run(phases, progress, deadline)
        )
        activation = output_activation(config.task, config.output)
        model = assemble(parts.embedder, parts.head, activation)
    if strategy is not None:
        info["distributed"] = f"MirroredStrategy, {strategy.num_replicas_in_sync} replicas"
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
    run: _Run,
) -> _Outcome:
    """The fast path: a head on cached embeddings of the frozen backbone, then optionally
    fine-tuning."""
    info: dict[str, Any] = {"mode": "head on cached embeddings"}
    parts.backbone.trainable = False
    copies = config.augment_copies if parts.augmenter is not None else 1
    with run.phases("embeddings"):
        train_emb, val_emb, test_emb = _pretrained_embeddings(
            setup, parts, data, config, run.progress
        )
    _, t_train, w_train = parts.train
    with run.phases("train_head"):
        info["head_epochs"] = fit_head(
            parts.head,
            (train_emb, np.concatenate([t_train] * copies), np.tile(w_train, copies)),
            (val_emb, parts.val[1]),
            config,
            progress=run.progress,
            deadline=run.deadline,
        )
    if config.fine_tune:
        _fine_tune(setup, parts, config, info, run)
    return train_emb[: len(data.train_px)], test_emb, info


def _pretrained_embeddings(
    setup: Setup, parts: _Parts, data: DecodedData, config: TrainConfig, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train (copy-major, augmented copies after the originals), val and test embeddings of
    the frozen backbone. The originals come from the on-disk cache keyed by file content,
    backbone and size (:mod:`training.embeddings`): a second run embeds only new files."""
    copies = config.augment_copies if parts.augmenter is not None else 1
    splits = (data.dataset.train, data.dataset.val, data.dataset.test)
    cached = _cached(setup, splits, config, progress)
    if cached is None:
        cached = [
            compute_embeddings(parts.embedder, px, desc=f"embeddings ({name})", progress=progress)
            for name, px in zip(
                ("train", "val", "test"), (data.train_px, data.val_px, data.test_px), strict=True
            )
        ]
    train = cached[0]
    if copies > 1:
        augmented = compute_embeddings(
            parts.embedder,
            data.train_px,
            augmenter=parts.augmenter,
            copies=copies - 1,
            desc="embeddings (augmented train)",
            progress=progress,
            augment_all=True,
        )
        train = np.concatenate([train, augmented])
    return train, cached[1], cached[2]


def _cached(setup: Setup, splits: tuple, config: TrainConfig, progress: bool) -> list | None:
    """The un-augmented embeddings of every split from the cache, or None without one."""
    if not config.embedding_cache or setup.channels != 3:
        return None
    from training.embeddings import embed_files

    out = []
    for samples in splits:
        paths = [sample.path for sample in samples]
        embedded = embed_files(paths, size=setup.size, backbone=setup.backbone.name,
                               progress=progress)  # fmt: skip
        if embedded.failed or len(embedded.paths) != len(paths):
            return None  # changed since the data check: embed the decoded pixels instead
        if progress and embedded.reused:
            say(f"embedding cache: {embedded.reused} reused, {embedded.computed} computed")
        out.append(embedded.vectors)
    return out


def _fine_tune(
    setup: Setup,
    parts: _Parts,
    config: TrainConfig,
    info: dict[str, Any],
    run: _Run,
) -> None:
    with run.phases("fine_tune"):
        unfrozen = unfreeze_top_blocks(setup.backbone, parts.backbone, config.fine_tune_blocks)
        fit = _fit_on_pixels(
            parts,
            config,
            epochs=config.fine_tune_epochs,
            learning_rate=config.fine_tune_learning_rate,
            desc="fine-tune",
            run=run,
            keep_if_worse=True,
        )
    if fit.kept:
        info["mode"] += f", then fine-tuned ({unfrozen} layers)"
    info["fine_tune"] = fit.describe()
    info["fine_tune_epochs"] = fit.epochs
    if run.progress:
        say(f"fine-tuning: {fit.describe()}")
    parts.backbone.trainable = False


def _fit_from_scratch(
    setup: Setup,
    parts: _Parts,
    data: DecodedData,
    config: TrainConfig,
    run: _Run,
) -> _Outcome:
    """Random-init backbone: the whole network end to end on pixels."""
    info: dict[str, Any] = {"mode": "end to end from random initialization"}
    if config.fine_tune and run.progress:
        say(f"{setup.backbone.name} has no pretrained weights: every layer is trained anyway")
    fast_batch_norm(parts.backbone)
    with run.phases("train"):
        fit = _fit_on_pixels(
            parts,
            config,
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            desc="train",
            run=run,
        )
    info["epochs"] = fit.epochs
    if fit.at_deadline:
        info["stopped"] = "at the time it was given"
    parts.backbone.trainable = False
    with run.phases("embeddings"):
        # Baselines use the trained network's embeddings: there are no pretrained ones.
        baseline_train = compute_embeddings(
            parts.embedder, data.train_px, desc="embeddings (train)", progress=run.progress
        )
        test_emb = compute_embeddings(
            parts.embedder, data.test_px, desc="embeddings (test)", progress=run.progress
        )
    return baseline_train, test_emb, info


def _fit_on_pixels(
    parts: _Parts,
    config: TrainConfig,
    *,
    epochs: int,
    learning_rate: float,
    desc: str,
    run: _Run,
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
        progress=run.progress,
        keep_if_worse=keep_if_worse,
        deadline=run.deadline,
    )


__all__ = ["train_model"]
