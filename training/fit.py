"""Fitting Keras models: targets and weights, augmentation, cached embeddings, the head on
embeddings, end-to-end training on pixels, each fit within an optional deadline (batch-norm
statistics: :mod:`training.batch_norm`).

Everything here works on pixels decoded by the device preprocessing (numpy arrays or
:class:`training.data.Pixels`, read in batches: never the whole dataset at once);
:mod:`training.train` decides which of these run.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from device.inference.bundle import TaskType
from training.batch_norm import BATCH_NORM_IMAGES, RefreshBatchNorm, sample_pixels
from training.config import DEFAULT_FLIP, TrainConfig
from training.data.pixels import PixelArray
from training.models import HEADS

EMBEDDING_BATCH = 64
# An epoch of the head sees at least this many examples (a small training split is repeated):
# epochs of a dozen steps let early stopping end the fit long before the head converges
# (few-shot Fashion-MNIST, Lite0 embeddings of 130 images x 3 copies: stopped after 21 epochs
# of 13 steps, test 0.709; with epochs of 1024 examples 0.740, logistic regression 0.725).
HEAD_EPOCH_EXAMPLES = 1024
# A validation split smaller than this is too noisy to stop the head on: it stops on its
# training loss instead (few-shot Fashion-MNIST, 20 validation images, seeds 0/1/2: stopped on
# validation loss 0.740/0.724/0.719, on training loss 0.732/0.732/0.730; logistic regression
# on the same embeddings 0.725).
HEAD_MIN_VAL_IMAGES = 100
# Head steps per call into TensorFlow: a step of a one-layer head is mostly Python overhead.
HEAD_STEPS_PER_EXECUTION = 16


# --------------------------------------------------------------------------------------------
# Targets, weights, augmentation


def encode_targets(y: np.ndarray, task: TaskType, num_labels: int) -> np.ndarray:
    """Targets as the loss wants them: (N, 1) for binary, multi-hot or one-hot otherwise."""
    if task == "binary":
        return y.astype(np.float32).reshape(-1, 1)
    if task == "multilabel":
        return y.astype(np.float32)
    return np.eye(num_labels, dtype=np.float32)[y]


def class_weights(y: np.ndarray, task: TaskType, num_labels: int, enabled: bool) -> np.ndarray:
    """Per-example weights: inverse class frequency, normalised to a mean of 1 (ones for
    multilabel, where per-label thresholds deal with imbalance)."""
    if not enabled or task == "multilabel":
        return np.ones(len(y), dtype=np.float32)
    counts = np.bincount(y, minlength=num_labels).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(num_labels)
    per_class[present] = len(y) / (present.sum() * counts[present])
    return per_class[y].astype(np.float32)


def build_augmenter(config: TrainConfig, seed: int) -> keras.Sequential | None:
    """The training-time augmentation as Keras layers on float 0..255 pixels (None if off)."""
    layers: list[keras.layers.Layer] = []
    flip = config.flip or DEFAULT_FLIP  # left open and no data look (the search sets it)
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if config.rotation > 0:
        layers.append(keras.layers.RandomRotation(config.rotation, seed=seed + 1))
    if config.zoom > 0:
        layers.append(keras.layers.RandomZoom((-config.zoom, config.zoom), seed=seed + 2))
    if config.translation > 0:
        layers.append(
            keras.layers.RandomTranslation(config.translation, config.translation, seed=seed + 3)
        )
    if config.brightness > 0:
        layers.append(keras.layers.RandomBrightness(config.brightness, seed=seed + 4))
    if config.contrast > 0:
        layers.append(keras.layers.RandomContrast(config.contrast, seed=seed + 5))
    if config.noise > 0:
        layers.append(keras.layers.GaussianNoise(config.noise, seed=seed + 6))
    return keras.Sequential(layers, name="augmentation") if layers else None


# --------------------------------------------------------------------------------------------
# Embeddings and the head


def compute_embeddings(
    embedder: keras.Model,
    pixels: PixelArray,
    *,
    augmenter: keras.Sequential | None = None,
    copies: int = 1,
    desc: str = "embeddings",
    progress: bool = True,
    augment_all: bool = False,
) -> np.ndarray:
    """Embeddings of ``pixels`` (uint8), copy-major: rows [k * N + i] hold copy k of image i;
    copy 0 is the original (augmented too with ``augment_all``), the others pass through
    ``augmenter``."""
    n = len(pixels)
    batches = [(k, s) for k in range(copies) for s in range(0, n, EMBEDDING_BATCH)]
    out = np.empty((copies * n, embedder.output_shape[-1]), dtype=np.float32)
    with tqdm(total=copies * n, desc=desc, unit="img", disable=not progress) as bar:
        for k, start in batches:
            batch = pixels[start : start + EMBEDDING_BATCH].astype(np.float32)
            if (k > 0 or augment_all) and augmenter is not None:
                batch = np.asarray(augmenter(batch, training=True))
            out[k * n + start : k * n + start + len(batch)] = _predict(embedder, batch)
            bar.update(len(batch))
    return out


def _predict(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    """One batch through ``model``. Under a distribution strategy ``predict_on_batch`` returns
    every replica's copy of the outputs (measured: 128 rows for 64 images on 2 replicas), so
    the model is called directly there."""
    if tf.distribute.has_strategy():
        return np.asarray(model(batch, training=False))
    return model.predict_on_batch(batch)


class _EpochBar(keras.callbacks.Callback):
    """One compact progress bar per fit: an update per epoch with the losses."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        super().__init__()
        self.total, self.desc, self.enabled = total, desc, enabled
        self.bar: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bar = tqdm(
            total=self.total, desc=self.desc, unit="epoch", disable=not self.enabled, leave=True
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        shown = {k: f"{v:.3f}" for k, v in (logs or {}).items() if k != "learning_rate"}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


def _compile(
    model: keras.Model,
    task: TaskType,
    learning_rate: float,
    label_smoothing: float,
    steps_per_execution: int = 1,
) -> None:
    if HEADS[task].multi_hot:
        loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
        accuracy = keras.metrics.BinaryAccuracy(name="acc", threshold=0.0)
    else:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        accuracy = keras.metrics.CategoricalAccuracy(name="acc")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        weighted_metrics=[accuracy],
        steps_per_execution=steps_per_execution,
    )


class StopAtDeadline(keras.callbacks.Callback):
    """Stop after the epoch that leaves less time before ``deadline`` (``time.perf_counter``)
    than the slowest epoch so far took: a fit never runs far past the time it was given, on a
    fast machine or a slow one (early stopping still restores the best weights)."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self.deadline, self.stopped = deadline, False
        self.started = self.slowest = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        self.slowest = max(self.slowest, now - self.started)
        if self.deadline is not None and now + self.slowest > self.deadline:
            self.model.stop_training = self.stopped = True


def _callbacks(
    config: TrainConfig, epochs: int, desc: str, progress: bool, has_val: bool,
    stop: StopAtDeadline,
) -> list[keras.callbacks.Callback]:  # fmt: skip
    callbacks: list[keras.callbacks.Callback] = [_EpochBar(epochs, desc, progress), stop]
    if config.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss" if has_val else "loss",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def fit_head(
    head: keras.Model,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    *,
    progress: bool = True,
    deadline: float | None = None,
) -> int:
    """Train the head on cached embeddings, stopping by ``deadline``; returns the epochs run
    (each one of at least HEAD_EPOCH_EXAMPLES examples)."""
    x, y, w = train
    repeat = math.ceil(HEAD_EPOCH_EXAMPLES / max(len(x), 1))
    if repeat > 1:
        x, y, w = (np.concatenate([part] * repeat) for part in train)
    _compile(head, config.task, config.learning_rate, config.label_smoothing,
             HEAD_STEPS_PER_EXECUTION)  # fmt: skip
    has_val = len(val[0]) >= HEAD_MIN_VAL_IMAGES
    history = head.fit(
        x,
        y,
        sample_weight=w,
        validation_data=val if has_val else None,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(
            config, config.epochs, "head", progress, has_val, StopAtDeadline(deadline)
        ),
    )
    return len(history.history["loss"])


# --------------------------------------------------------------------------------------------
# End to end on pixels


@dataclass(frozen=True)
class PixelFit:
    """What :func:`fit_pixels` did: epochs run and, when it compared, the validation loss
    before and after and whether the trained weights were kept."""

    epochs: int
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    kept: bool = True
    at_deadline: bool = False  # stopped by the time it was given, not by its epochs

    def describe(self) -> str:
        epochs = f"{self.epochs} epochs" + (" (all the time allowed)" if self.at_deadline else "")
        if self.val_loss_before is None or self.val_loss_after is None:
            return epochs
        change = f"validation loss {self.val_loss_before:.4f} -> {self.val_loss_after:.4f}"
        if self.kept:
            return f"{epochs}, {change}"
        return f"{epochs}, {change}: not better, the head-only weights were kept"


def _pixel_dataset(
    pixels: PixelArray, y: np.ndarray, w: np.ndarray | None, batch: int, seed: int | None
) -> tf.data.Dataset:
    """Batches of (float pixels, targets[, weights]) read as training goes (a generator, so
    pixels read from disk are never all in memory); with ``seed``, in a new seeded order
    each epoch."""
    n, epochs = len(pixels), itertools.count()

    def generate() -> Iterator[tuple[np.ndarray, ...]]:
        order = np.arange(n)
        if seed is not None:
            order = np.random.default_rng([seed, next(epochs)]).permutation(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            yield (pixels[rows], y[rows]) if w is None else (pixels[rows], y[rows], w[rows])

    shape = (None, *pixels.shape[1:])
    spec = [tf.TensorSpec(shape, tf.uint8), tf.TensorSpec((None, *y.shape[1:]), tf.float32)]
    if w is not None:
        spec.append(tf.TensorSpec((None,), tf.float32))
    ds = tf.data.Dataset.from_generator(generate, output_signature=tuple(spec))
    # Its length said, so Keras counts steps instead of running into the end of each epoch.
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch)))

    def cast(p, *rest):
        return (tf.cast(p, tf.float32), *rest)

    return ds.map(cast).prefetch(2)


def fit_pixels(
    embedder: keras.Model,
    head: keras.Model,
    augmenter: keras.Sequential | None,
    train: tuple[PixelArray, np.ndarray, np.ndarray],
    val: tuple[PixelArray, np.ndarray],
    config: TrainConfig,
    *,
    epochs: int,
    learning_rate: float,
    desc: str,
    progress: bool = True,
    keep_if_worse: bool = False,
    deadline: float | None = None,
) -> PixelFit:
    """Train end to end on (augmented) pixels: the trainable layers of ``embedder`` and the
    head.

    With ``keep_if_worse`` (fine-tuning a model that is already trained), the validation loss
    is measured before and after; when training did not lower it, every weight is put back as
    it was, so fine-tuning can never make the exported model worse on validation data.
    Training stops by ``deadline`` (a ``time.perf_counter`` value) when one is given.
    """
    inputs = keras.Input(embedder.input_shape[1:], name="pixels")
    x = augmenter(inputs) if augmenter is not None else inputs
    model = keras.Model(inputs, head(embedder(x)), name="training_model")
    _compile(model, config.task, learning_rate, config.label_smoothing)
    pixels, y, w = train
    has_val = len(val[0]) > 0
    val_ds = _pixel_dataset(val[0], val[1], None, config.batch_size, None) if has_val else None
    before: float | None = None
    stop = StopAtDeadline(deadline)
    if keep_if_worse and val_ds is not None:
        saved = model.get_weights()
        before = float(model.evaluate(val_ds, verbose=0, return_dict=True)["loss"])
    history = model.fit(
        _pixel_dataset(pixels, y, w, config.batch_size, config.seed),
        validation_data=val_ds,
        epochs=epochs,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=0,
        # After EarlyStopping, whose restored best weights then get fresh statistics.
        callbacks=[
            *_callbacks(config, epochs, desc, progress, has_val, stop),
            RefreshBatchNorm(embedder, sample_pixels(pixels, BATCH_NORM_IMAGES, config.seed)),
        ],
    )
    result = PixelFit(epochs=len(history.history["loss"]), at_deadline=stop.stopped)
    if before is not None and val_ds is not None:
        after = float(model.evaluate(val_ds, verbose=0, return_dict=True)["loss"])
        result = PixelFit(result.epochs, before, after, after < before, stop.stopped)
        if not result.kept:
            model.set_weights(saved)
    return result


__all__ = [
    "EMBEDDING_BATCH",
    "PixelFit",
    "StopAtDeadline",
    "build_augmenter",
    "class_weights",
    "compute_embeddings",
    "encode_targets",
    "fit_head",
    "fit_pixels",
]
