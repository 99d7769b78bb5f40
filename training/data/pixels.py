"""From samples to arrays: training targets in the model's output order, and pixels through the
device's own preprocessing."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from device.inference.bundle import InputSpec, TaskType
from device.inference.preprocess import ImageError, InputQuantizer, prepare, read_image
from training.data.checks import parallel_map
from training.data.samples import DataError, Sample, first_few


def target_array(samples: Sequence[Sample], labels: Sequence[str], task: TaskType) -> np.ndarray:
    """Training targets in the model's output order.

    binary / multiclass / hierarchical: ``(N,)`` int64 index into ``labels``;
    multilabel: ``(N, L)`` float32, 1 where the image has the label.
    """
    index = {label: i for i, label in enumerate(labels)}
    problems: list[str] = []
    if task == "multilabel":
        targets = np.zeros((len(samples), len(labels)), dtype=np.float32)
        for row, sample in enumerate(samples):
            for label in sample.labels:
                if label in index:
                    targets[row, index[label]] = 1.0
                else:
                    problems.append(f"{sample.path}: unknown label {label!r}")
    else:
        targets = np.zeros(len(samples), dtype=np.int64)
        for row, sample in enumerate(samples):
            if len(sample.labels) != 1:
                problems.append(f"{sample.path}: {task} needs one label, has {sample.labels}")
            elif sample.labels[0] not in index:
                problems.append(f"{sample.path}: unknown label {sample.labels[0]!r}")
            else:
                targets[row] = index[sample.labels[0]]
    if problems:
        raise DataError(
            f"{len(problems)} samples do not match the labels {list(labels)}: "
            + "; ".join(first_few(problems)),
            problems,
        )
    return targets


def load_pixels(samples: Sequence[Sample], spec: InputSpec, *, progress: bool = True) -> np.ndarray:
    """Decode and preprocess images exactly as the device does: ``(N, H, W, C)`` uint8.

    ``device.inference.preprocess.read_image`` then
    ``prepare(frame, spec, InputQuantizer.identity(), "BGR")``: the pixels before
    normalization, which the model does itself.
    """
    pixels = np.empty((len(samples), spec.height, spec.width, spec.channels), dtype=np.uint8)
    identity = InputQuantizer.identity()

    def load_one(i: int) -> str | None:
        try:
            pixels[i] = prepare(read_image(str(samples[i].path)), spec, identity, "BGR")
        except (ImageError, OSError, cv2.error) as exc:
            return f"{samples[i].path}: {exc}"
        return None

    results = parallel_map(load_one, range(len(samples)), progress, "Loading images")
    failures = [failure for failure in results if failure is not None]
    if failures:
        raise DataError(
            f"{len(failures)} images could not be read (changed since the dataset was checked?): "
            + "; ".join(first_few(failures)),
            failures,
        )
    return pixels
