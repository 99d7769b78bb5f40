"""What flows between the phases of ``kestrel train`` (:func:`training.train.train`): the
resolved settings, the decoded data, the trained model, the phase timer and status lines."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from device.inference.bundle import InputSpec
from training.data import Dataset, Pixels
from training.models import BackboneSpec


def say(message: str) -> None:
    """A status line on stderr."""
    print(f"kestrel: {message}", file=sys.stderr, flush=True)


class Phases:
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


@dataclass(frozen=True)
class Setup:
    """What the settings resolve to before any data is read."""

    backbone: BackboneSpec
    size: int
    channels: int
    input: InputSpec  # the exported model's device input (uint8 for int8)


@dataclass(frozen=True)
class DecodedData:
    """The dataset through the device preprocessing: pixels (in memory or read per batch,
    see :class:`training.data.Pixels`) and label arrays per split."""

    dataset: Dataset
    train_px: Pixels
    val_px: Pixels
    test_px: Pixels
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Trained:
    """The trained model and what the later phases need from training."""

    model: keras.Model  # pixels -> outputs, as exported
    activation: str  # the manifest's output.activation ("none": logits)
    augmenter: keras.Sequential | None
    baseline_train: np.ndarray  # embeddings the classical baselines train on
    test_embeddings: np.ndarray
    info: dict[str, Any]  # the report's description of the training


__all__ = ["DecodedData", "Phases", "Setup", "Trained", "say"]
