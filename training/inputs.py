"""From settings and a loaded dataset to the model input: the resolved setup and the decoded
pixels of every split (once per input shape), and stratified training subsets of them."""

from __future__ import annotations

import dataclasses

import numpy as np

from training import data as data_mod
from training.config import TrainConfig
from training.data import Dataset, Pixels
from training.data.pixels import fits_in_memory
from training.models import get_backbone, input_spec, resolve_input
from training.phases import DecodedData, Setup, say


class SetupError(ValueError):
    """Settings that no model can take (e.g. an image size too small for the backbone)."""


def resolve_setup(config: TrainConfig) -> Setup:
    """Backbone, input size and channels, and the device input of the exported model."""
    try:
        backbone = get_backbone(config.backbone or "efficientnet-lite0")
        size, channels = resolve_input(backbone, config.image_size, config.grayscale)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    dtype = "uint8" if config.export_format == "int8" else "float32"
    return Setup(backbone, size, channels, input_spec(size, channels, dtype))


def decode_pixels(
    dataset: Dataset,
    config: TrainConfig,
    setup: Setup,
    *,
    progress: bool,
) -> DecodedData:
    """Every split through the device preprocessing at the setup's input, with targets: held
    in memory when all of them fit (:func:`training.data.pixels.fits_in_memory`), else read
    from disk per batch."""
    splits = (dataset.train, dataset.val, dataset.test)
    spec = setup.input
    count = sum(len(split) for split in splits)
    held = fits_in_memory(count, spec)
    if progress and not held:
        gib = count * spec.height * spec.width * spec.channels / 2**30
        say(f"{gib:.1f} GiB of pixels at {spec.height} px: read from disk batch by batch")
    pixels = [Pixels.load(split, spec, in_memory=held, progress=progress) for split in splits]
    targets = [data_mod.target_array(split, dataset.labels, config.task) for split in splits]
    return DecodedData(dataset, *pixels, *targets)


def subset(data: DecodedData, fraction: float, seed: int, min_per_label: int = 10) -> DecodedData:
    """A stratified share of the training split (at least ``min_per_label`` images of each
    label where it has them); validation and test stay whole."""
    y = data.y_train
    keys = y if y.ndim == 1 else np.argmax(y, axis=1) + (y.sum(axis=1) > 0)
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for key in np.unique(keys):
        rows = rng.permutation(np.flatnonzero(keys == key))
        keep.append(rows[: max(min_per_label, round(fraction * len(rows)))])
    rows = np.sort(np.concatenate(keep))
    dataset = dataclasses.replace(data.dataset, train=[data.dataset.train[i] for i in rows])
    return dataclasses.replace(
        data, dataset=dataset, train_px=data.train_px.subset(rows), y_train=y[rows]
    )


__all__ = ["SetupError", "decode_pixels", "resolve_setup", "subset"]
