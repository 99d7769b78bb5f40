"""``kestrel train``: labeled images -> a tested, quantized bundle, with an int8 accuracy gate.

The steps, each timed (``TrainResult.timings``):

1. load and check the dataset (:mod:`training.data`): a bad dataset fails before training;
2. decode every image once through the device's own preprocessing;
3. train: pretrained backbone -> frozen, embeddings of a few augmented copies of every
   training image cached once, a small head trained on them (optionally followed by
   fine-tuning the top blocks on pixels); random-init backbone -> end to end on pixels;
4. export the chosen format (int8 calibrated on real training images) and a float32 reference;
5. run both through the device runtime: thresholds calibrated on each one's validation
   outputs, metrics on the test split, the gate (``max_int8_drop``);
6. classical baselines on the same embeddings and split;
7. write the bundle with its report, atomically, unless the gate failed (then only with
   ``force``, and the failure is recorded in the manifest and the report).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from device import __version__
from device.inference.bundle import MANIFEST_FILE, write_bundle
from training import data as data_mod
from training import evaluate, metrics, report
from training.config import TrainConfig
from training.export import batches_of, convert, io_quantization
from training.models import (
    HEADS,
    assemble,
    build_embedder,
    build_head,
    get_backbone,
    input_spec,
    output_activation,
    resolve_input,
    unfreeze_top_blocks,
)

log = logging.getLogger(__name__)

REFERENCE_FORMAT = "float32"
EMBEDDING_BATCH = 64
# Manifest metrics keep the headline figures; the full ones (per class, confusion) are in
# report.json next to it.
_COMPACT_KEYS = ("levels", "abstain", "backoff")


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        bundle_path: The written bundle, or None when the gate failed without ``force``.
        report: Everything measured (what report.json holds).
        gate: The verdict of :func:`training.metrics.compare_float_int8` (``passed``,
            ``drop_points``, ``message``, ...).
        timings: Wall seconds per phase.
    """

    bundle_path: Path | None
    report: dict[str, Any]
    gate: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.gate.get("passed"))


class TrainError(ValueError):
    """A training request that cannot run (e.g. an output folder that is not a bundle)."""


class _Phases:
    """Wall time per phase, as a context manager per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 2)


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


def _say(message: str) -> None:
    print(f"kestrel: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Targets, weights, augmentation


def encode_targets(y: np.ndarray, task: str, num_labels: int) -> np.ndarray:
    """Targets as the loss wants them: (N, 1) for binary, multi-hot or one-hot otherwise."""
    if task == "binary":
        return y.astype(np.float32).reshape(-1, 1)
    if task == "multilabel":
        return y.astype(np.float32)
    return np.eye(num_labels, dtype=np.float32)[y]


def class_weights(y: np.ndarray, task: str, num_labels: int, enabled: bool) -> np.ndarray:
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
    if config.flip != "none":
        layers.append(keras.layers.RandomFlip(config.flip, seed=seed))
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
# Training


def compute_embeddings(
    embedder: keras.Model,
    pixels: np.ndarray,
    *,
    augmenter: keras.Sequential | None = None,
    copies: int = 1,
    desc: str = "embeddings",
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of ``pixels`` (uint8), copy-major: rows [k * N + i] hold copy k of image i;
    copy 0 is the original, the others pass through ``augmenter``."""
    n = len(pixels)
    batches = [(k, s) for k in range(copies) for s in range(0, n, EMBEDDING_BATCH)]
    out = np.empty((copies * n, embedder.output_shape[-1]), dtype=np.float32)
    with tqdm(total=copies * n, desc=desc, unit="img", disable=not progress) as bar:
        for k, start in batches:
            batch = pixels[start : start + EMBEDDING_BATCH].astype(np.float32)
            if k > 0 and augmenter is not None:
                batch = np.asarray(augmenter(batch, training=True))
            out[k * n + start : k * n + start + len(batch)] = embedder.predict_on_batch(batch)
            bar.update(len(batch))
    return out


def _compile(model: keras.Model, task: str, learning_rate: float, label_smoothing: float) -> None:
    if HEADS[task].multi_hot:
        loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=label_smoothing)
        accuracy = keras.metrics.BinaryAccuracy(name="acc", threshold=0.0)
    else:
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        accuracy = keras.metrics.CategoricalAccuracy(name="acc")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=loss, weighted_metrics=[accuracy]
    )


def _callbacks(config: TrainConfig, epochs: int, desc: str, progress: bool, has_val: bool):
    callbacks: list[keras.callbacks.Callback] = [_EpochBar(epochs, desc, progress)]
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
) -> int:
    """Train the head on cached embeddings; returns the epochs run."""
    x, y, w = train
    _compile(head, config.task, config.learning_rate, config.label_smoothing)
    has_val = len(val[0]) > 0
    history = head.fit(
        x,
        y,
        sample_weight=w,
        validation_data=val if has_val else None,
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=_callbacks(config, config.epochs, "head", progress, has_val),
    )
    return len(history.history["loss"])


def _pixel_dataset(
    pixels: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch: int, seed: int | None
) -> tf.data.Dataset:
    parts = (pixels, y) if w is None else (pixels, y, w)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if seed is not None:
        ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)

    def cast(p, *rest):
        return (tf.cast(p, tf.float32), *rest)

    return ds.batch(batch).map(cast).prefetch(2)


def fit_pixels(
    embedder: keras.Model,
    head: keras.Model,
    augmenter: keras.Sequential | None,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    *,
    epochs: int,
    learning_rate: float,
    desc: str,
    progress: bool = True,
    keep_if_worse: bool = False,
) -> PixelFit:
    """Train end to end on (augmented) pixels: the trainable layers of ``embedder`` and the
    head.

    With ``keep_if_worse`` (fine-tuning a model that is already trained), the validation loss
    is measured before and after; when training did not lower it, every weight is put back as
    it was, so fine-tuning can never make the exported model worse on validation data.
    """
    inputs = keras.Input(embedder.input_shape[1:], name="pixels")
    x = augmenter(inputs) if augmenter is not None else inputs
    model = keras.Model(inputs, head(embedder(x)), name="training_model")
    _compile(model, config.task, learning_rate, config.label_smoothing)
    pixels, y, w = train
    has_val = len(val[0]) > 0
    val_ds = _pixel_dataset(val[0], val[1], None, config.batch_size, None) if has_val else None
    before: float | None = None
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
            *_callbacks(config, epochs, desc, progress, has_val),
            _RefreshBatchNorm(
                embedder, pixels[np.random.default_rng(config.seed).permutation(len(pixels))]
            ),
        ],
    )
    result = PixelFit(epochs=len(history.history["loss"]))
    if before is not None and val_ds is not None:
        after = float(model.evaluate(val_ds, verbose=0, return_dict=True)["loss"])
        result = PixelFit(result.epochs, before, after, kept=after < before)
        if not result.kept:
            model.set_weights(saved)
    return result


@dataclass(frozen=True)
class PixelFit:
    """What :func:`fit_pixels` did: epochs run and, when it compared, the validation loss
    before and after and whether the trained weights were kept."""

    epochs: int
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    kept: bool = True

    def describe(self) -> str:
        if self.val_loss_before is None or self.val_loss_after is None:
            return f"{self.epochs} epochs"
        change = f"validation loss {self.val_loss_before:.4f} -> {self.val_loss_after:.4f}"
        if self.kept:
            return f"{self.epochs} epochs, {change}"
        return f"{self.epochs} epochs, {change}: not better, the head-only weights were kept"


def _fast_batch_norm(model: keras.Model, momentum: float = 0.9) -> None:
    """Let batch-norm statistics follow training quickly. With the usual 0.99 (0.999 in
    keras.applications) a few hundred steps leave the moving averages near their initial
    values, and the inference-mode model is far worse than in training (measured: 38 % vs
    99 % on digits after 15 short epochs)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def refresh_batch_norm(
    embedder: keras.Model, pixels: np.ndarray, *, limit: int = 1024, batch: int = 64
) -> None:
    """Re-estimate the moving statistics of every trainable batch-norm layer as the plain
    average over (up to ``limit``) un-augmented training images, with the current weights.

    Moving averages lag the weights; with a small dataset (a few steps per epoch) they lag so
    far that the inference-mode model is near chance while training accuracy is high
    (measured: 17 % vs 96 % on 6 digit classes, 132 images). Calling the layers in training
    mode with momentum k / (k + 1) for the k-th batch makes the moving value the exact mean.
    """
    layers = [
        layer
        for layer in _all_layers(embedder)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not layers or len(pixels) == 0:
        return
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, min(len(pixels), limit), batch)):
            for layer in layers:
                layer.momentum = k / (k + 1)
            embedder(pixels[start : start + batch].astype(np.float32), training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


class _RefreshBatchNorm(keras.callbacks.Callback):
    """Re-estimate batch-norm statistics before every validation pass and at the end, so
    early stopping judges the model that will be exported."""

    def __init__(self, embedder: keras.Model, pixels: np.ndarray) -> None:
        super().__init__()
        self.embedder, self.pixels = embedder, pixels

    def on_test_begin(self, logs: dict | None = None) -> None:
        refresh_batch_norm(self.embedder, self.pixels)

    def on_train_end(self, logs: dict | None = None) -> None:
        refresh_batch_norm(self.embedder, self.pixels)


def calibration_pixels(
    train_pixels: np.ndarray,
    count: int,
    augmenter: keras.Sequential | None,
    seed: int,
) -> np.ndarray:
    """``count`` real training images for int8 calibration; a training set smaller than
    that is topped up with augmented copies of its own images (still real pictures)."""
    rng = np.random.default_rng(seed)
    n = len(train_pixels)
    chosen = train_pixels[rng.permutation(n)[: min(n, count)]]
    if n >= count or augmenter is None:
        return chosen
    extra = []
    while n + sum(map(len, extra)) < count:
        batch = train_pixels[rng.permutation(n)[: count - n - sum(map(len, extra))]]
        augmented = np.asarray(augmenter(batch.astype(np.float32), training=True))
        extra.append(np.clip(np.round(augmented), 0, 255).astype(np.uint8))
    return np.concatenate([chosen, *extra])


@contextlib.contextmanager
def _quiet_conversion() -> Iterator[None]:
    """The converter prints every resource tensor of the temporary SavedModel (hundreds of
    lines on stdout) and warns about input statistics that a uint8 input does not need."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield


def _with_progress(data: Callable, total: int, enabled: bool) -> Callable:
    def generate():
        yield from tqdm(
            data(), total=total, desc="int8 calibration", unit="img", disable=not enabled
        )

    return generate


# --------------------------------------------------------------------------------------------
# Manifest and report


def _compact(figures: dict[str, Any]) -> dict[str, Any]:
    """Headline figures of a compute_metrics dict: scalars plus a few small sub-dicts."""
    out = {k: v for k, v in figures.items() if isinstance(v, int | float | str) or v is None}
    out.update({k: figures[k] for k in _COMPACT_KEYS if k in figures})
    return out


def _phase_line(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())


def _default_command(data_root: Path, config: TrainConfig) -> str:
    defaults = TrainConfig()
    changed = {
        k: v for k, v in config.to_dict().items() if getattr(defaults, k) != v and k != "task"
    }
    parts = ["train", data_root.name, "--task", config.task]
    parts += [f"{k}={v}" for k, v in changed.items()]
    return "kestrel " + shlex.join(parts)


def _check_out_dir(out_dir: Path, data_root: Path) -> None:
    """Refuse to replace anything but a bundle: write_bundle swaps the folder wholesale."""
    out, root = out_dir.resolve(), data_root.resolve()
    if out == root or root in out.parents or out in root.parents:
        raise TrainError(f"{out_dir}: the output folder must lie outside the data folder")
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file())
    ):
        raise TrainError(
            f"{out_dir}: exists and is not a Kestrel bundle; refusing to replace it "
            "(choose another --out or remove it)"
        )


# --------------------------------------------------------------------------------------------
# The whole run


def train(
    data_root: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train, export, gate and write a bundle; see the module docstring for the steps.

    Args:
        data_root: The labeled image folder.
        out_dir: The bundle folder to write (replaced atomically if it holds a bundle).
        config: Hyper-parameters.
        force: Write the bundle even when the exported model fails the accuracy gate (the
            failure is recorded in its manifest and report).
        progress: Progress bars and status lines on stderr.
        command: The command line to record in the manifest (default: rebuilt from config).

    Raises:
        training.data.DataError: The dataset is unusable (before any training).
        TrainError, ValueError: Impossible settings (e.g. an image size too small).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    config.validate()
    phases = _Phases()
    started = time.perf_counter()
    try:
        backbone_spec = get_backbone(config.backbone)
        size, channels = resolve_input(backbone_spec, config.image_size, config.grayscale)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    _check_out_dir(out_dir, data_root)
    fmt = config.export_format
    spec = input_spec(size, channels, "uint8" if fmt == "int8" else "float32")
    task = config.task

    with phases("data"):
        dataset = data_mod.load_dataset(
            data_root,
            task,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            min_images_per_class=config.min_images_per_class,
            positive=config.positive,
            taxonomy_file=config.taxonomy_file,
            labels_csv=config.labels_csv,
            progress=progress,
        )
    labels = dataset.labels
    with phases("pixels"):
        train_px = data_mod.load_pixels(dataset.train, spec, progress=progress)
        val_px = data_mod.load_pixels(dataset.val, spec, progress=progress)
        test_px = data_mod.load_pixels(dataset.test, spec, progress=progress)
    y_train, y_val, y_test = (
        data_mod.target_array(s, labels, task) for s in (dataset.train, dataset.val, dataset.test)
    )
    if progress:
        _say(
            f"{len(train_px)} train / {len(val_px)} val / {len(test_px)} test images, "
            f"{len(labels)} labels; {backbone_spec.name} at {size}x{size}x{channels}"
        )

    keras.utils.set_random_seed(config.seed)
    if config.deterministic_ops:
        tf.config.experimental.enable_op_determinism()
    augmenter = build_augmenter(config, config.seed)
    backbone = backbone_spec.build(size, channels)
    embedder = build_embedder(backbone_spec, backbone, size, channels)
    head = build_head(task, len(labels), backbone_spec.embedding_size, config.dropout)
    n_labels = len(labels)
    t_train, t_val = encode_targets(y_train, task, n_labels), encode_targets(y_val, task, n_labels)
    w_train = class_weights(y_train, task, n_labels, config.class_weighting)
    training_info: dict[str, Any] = {"mode": "head on cached embeddings"}

    if backbone_spec.pretrained:
        backbone.trainable = False
        copies = config.augment_copies if augmenter is not None else 1
        with phases("embeddings"):
            train_emb = compute_embeddings(
                embedder,
                train_px,
                augmenter=augmenter,
                copies=copies,
                desc="embeddings (train)",
                progress=progress,
            )
            val_emb = compute_embeddings(
                embedder, val_px, desc="embeddings (val)", progress=progress
            )
            test_emb = compute_embeddings(
                embedder, test_px, desc="embeddings (test)", progress=progress
            )
        with phases("train_head"):
            training_info["head_epochs"] = fit_head(
                head,
                (train_emb, np.concatenate([t_train] * copies), np.tile(w_train, copies)),
                (val_emb, t_val),
                config,
                progress=progress,
            )
        baseline_train = train_emb[: len(train_px)]
        if config.fine_tune:
            with phases("fine_tune"):
                unfrozen = unfreeze_top_blocks(backbone_spec, backbone, config.fine_tune_blocks)
                fit = fit_pixels(
                    embedder,
                    head,
                    augmenter,
                    (train_px, t_train, w_train),
                    (val_px, t_val),
                    config,
                    epochs=config.fine_tune_epochs,
                    learning_rate=config.fine_tune_learning_rate,
                    desc="fine-tune",
                    progress=progress,
                    keep_if_worse=True,
                )
            if fit.kept:
                training_info["mode"] += f", then fine-tuned ({unfrozen} layers)"
            training_info["fine_tune"] = fit.describe()
            if progress:
                _say(f"fine-tuning: {fit.describe()}")
            backbone.trainable = False
    else:
        training_info["mode"] = "end to end from random initialization"
        if config.fine_tune and progress:
            _say(f"{backbone_spec.name} has no pretrained weights: every layer is trained anyway")
        _fast_batch_norm(backbone)
        with phases("train"):
            training_info["epochs"] = fit_pixels(
                embedder,
                head,
                augmenter,
                (train_px, t_train, w_train),
                (val_px, t_val),
                config,
                epochs=config.epochs,
                learning_rate=config.learning_rate,
                desc="train",
                progress=progress,
            ).epochs
        backbone.trainable = False
        with phases("embeddings"):
            # Baselines use the trained network's embeddings: there are no pretrained ones.
            baseline_train = compute_embeddings(
                embedder, train_px, desc="embeddings (train)", progress=progress
            )
            test_emb = compute_embeddings(
                embedder, test_px, desc="embeddings (test)", progress=progress
            )

    activation = output_activation(task, config.output)
    model = assemble(embedder, head, activation)

    with phases("export"):
        calib_px = calibration_pixels(train_px, config.calibration_images, augmenter, config.seed)
        representative = _with_progress(batches_of(calib_px), len(calib_px), progress)
        with _quiet_conversion():
            candidate_bytes = convert(model, fmt, representative)
            reference_bytes = (
                candidate_bytes if fmt == REFERENCE_FORMAT else convert(model, REFERENCE_FORMAT)
            )

    base_fields: dict[str, Any] = {
        "name": out_dir.name,
        "task": task,
        "labels": labels,
        "output": {"activation": activation, "size": HEADS[task].units(n_labels)},
        "taxonomy": dataset.taxonomy if task == "hierarchical" else None,
        "backbone": f"{backbone_spec.name} ({backbone_spec.description}), "
        f"input {size}x{size}x{channels}",
        "created_by": {
            "command": command or _default_command(data_root, config),
            "source": f"trained on the images of '{data_root.name}' by kestrel {__version__}",
        },
    }

    def fields_for(model_bytes: bytes, scheme: str, input_dtype: str) -> dict[str, Any]:
        return {
            **base_fields,
            "input": input_spec(size, channels, input_dtype).model_dump(),
            "quantization": {"scheme": scheme, **io_quantization(model_bytes)},
        }

    eval_px = np.concatenate([val_px, test_px])
    n_val = len(val_px)
    sections: dict[str, dict[str, Any]] = {}
    with phases("gate"), tempfile.TemporaryDirectory(prefix="kestrel-gate-") as tmp:
        runs = [(REFERENCE_FORMAT, reference_bytes, "float32")]
        if fmt != REFERENCE_FORMAT:
            runs.append((fmt, candidate_bytes, spec.dtype))
        for name, model_bytes, dtype in runs:
            bundle = write_bundle(
                Path(tmp) / name, model_bytes, fields_for(model_bytes, name, dtype)
            )
            if progress:
                _say(f"evaluating the {name} model through the device runtime")
            run = evaluate.run_bundle(bundle, eval_px, progress=progress)
            val_probs, test_probs = run.probs[:n_val], run.probs[n_val:]
            # Each model gets thresholds fitted to its own outputs: the device compares the
            # exported model's (int8) numbers with them.
            calibration = metrics.calibrate(task, val_probs, y_val, labels, dataset.taxonomy)
            section = metrics.compute_metrics(
                task, test_probs, y_test, labels, calibration.thresholds, dataset.taxonomy
            )
            section |= {"latency_ms": run.latency_ms, "scheme": name}
            sections[name] = {"section": section, "calibration": calibration}
    reference, candidate = sections[REFERENCE_FORMAT], sections[fmt]
    gate = metrics.compare_float_int8(
        reference["section"], candidate["section"], config.max_int8_drop
    )
    gate["format"] = fmt
    gate["forced"] = bool(force and not gate["passed"])
    _say(("gate passed: " if gate["passed"] else "GATE FAILED: ") + gate["message"])

    if progress:
        _say("classical baselines on the same embeddings")
    with phases("baselines"):
        baseline_figures = metrics.baselines(
            baseline_train, y_train, test_emb, y_test, task, seed=config.seed
        )

    phases.seconds["total"] = round(time.perf_counter() - started, 2)
    summary = dataset.summary()
    summary["root"] = data_root.name  # not the machine's absolute path
    thresholds = candidate["calibration"].thresholds
    result_report: dict[str, Any] = {
        "kind": "train",
        "name": out_dir.name,
        "task": task,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": base_fields["created_by"]["command"],
        "labels": labels,
        "dataset": summary,
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
        "warnings": list(dataset.warnings),
        "thresholds": thresholds,
        "calibration": candidate["calibration"].notes,
        "float": reference["section"],
        "int8": candidate["section"],
        "gate": gate,
        "baselines": baseline_figures,
        "baselines_note": (
            "Classical scikit-learn models on the same split, fed the embeddings that the head "
            + (
                "was trained on (the frozen pretrained backbone's, without augmentation)"
                if backbone_spec.pretrained
                else "sees (the trained network's; this backbone has no pretrained weights)"
            )
            + "; the slow ones train on a sample of at most 5,000 images."
        ),
        "training": {
            "backbone": base_fields["backbone"],
            **training_info,
            "export format": fmt,
            "model size (MB)": round(len(candidate_bytes) / 1e6, 3),
            "int8 calibration images": len(calib_px),
            "seconds per phase": _phase_line(phases.seconds),
        },
        "config": config.to_dict(),
    }

    if not gate["passed"] and not force:
        _say(f"no bundle written to {out_dir} (use --force to write it anyway)")
        return TrainResult(None, result_report, gate, dict(phases.seconds))

    manifest_fields = fields_for(candidate_bytes, fmt, spec.dtype)
    manifest_fields["thresholds"] = thresholds
    manifest_fields["metrics"] = {
        "test": {"float": _compact(reference["section"]), fmt: _compact(candidate["section"])},
        "gate": {k: v for k, v in gate.items() if k not in ("per_class",)},
        "latency_ms": candidate["section"]["latency_ms"],
        # The taxonomy is in the manifest already.
        "dataset": {k: v for k, v in summary.items() if k != "taxonomy"},
        "baselines": {name: figures.get("accuracy") for name, figures in baseline_figures.items()},
    }
    with phases("write"), tempfile.TemporaryDirectory(prefix="kestrel-report-") as tmp:
        result_report["training"]["seconds per phase"] = _phase_line(phases.seconds)
        report.write_report(Path(tmp), result_report)
        extra = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        bundle = write_bundle(out_dir, candidate_bytes, manifest_fields, extra_files=extra)
    phases.seconds["total"] = round(time.perf_counter() - started, 2)
    if progress:
        _say(
            f"wrote {bundle.path} ({len(candidate_bytes) / 1e6:.2f} MB, {fmt}) in "
            f"{phases.seconds['total']:.0f} s"
        )
    return TrainResult(bundle.path, result_report, gate, dict(phases.seconds))


__all__ = ["TrainError", "TrainResult", "train"]
