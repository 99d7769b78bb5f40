"""From samples to arrays: training targets in the model's output order, and pixels through the
device's own preprocessing — held in memory when they fit, read from disk batch by batch when
they do not (:class:`Pixels`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from device.inference.bundle import InputSpec, TaskType
from device.inference.preprocess import ImageError, InputQuantizer, prepare, read_image
from training.data.checks import parallel_map
from training.data.samples import DataError, Sample, first_few

# Decoded pixels up to this size stay in memory (each epoch reads them from there); beyond it
# they are decoded from disk batch by batch (20,000 images at 224 px are 3 GB).
PIXEL_MEMORY_BYTES = int(os.environ.get("KESTREL_PIXEL_MEMORY_MB", "768")) * 2**20


def fits_in_memory(images: int, spec: InputSpec, limit: int | None = None) -> bool:
    """Whether ``images`` decoded at ``spec`` fit the in-memory limit."""
    size = images * spec.height * spec.width * spec.channels
    return size <= (PIXEL_MEMORY_BYTES if limit is None else limit)


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
    return _decode([sample.path for sample in samples], spec, progress, "Loading images")


def _decode(paths: Sequence[Path], spec: InputSpec, progress: bool, desc: str) -> np.ndarray:
    pixels = np.empty((len(paths), spec.height, spec.width, spec.channels), dtype=np.uint8)
    identity = InputQuantizer.identity()

    def load_one(i: int) -> str | None:
        try:
            pixels[i] = prepare(read_image(str(paths[i])), spec, identity, "BGR")
        except (ImageError, OSError, cv2.error) as exc:
            return f"{paths[i]}: {exc}"
        return None

    failures = [f for f in parallel_map(load_one, range(len(paths)), progress, desc) if f]
    if failures:
        raise DataError(
            f"{len(failures)} images could not be read (changed since the dataset was checked?): "
            + "; ".join(first_few(failures)),
            failures,
        )
    return pixels


class Pixels:
    """The images of one split as the model sees them (``(N, H, W, C)`` uint8), indexed like
    an array: ``pixels[i]``, ``pixels[a:b]`` and ``pixels[rows]`` give numpy arrays.

    Held in memory (``array``) or, for datasets too large for that, decoded from disk on each
    access (the same preprocessing, so the same numbers): every reader of a split goes through
    slices or row batches, so peak memory stays at a batch, not the dataset.
    """

    def __init__(self, paths: Sequence[Path], spec: InputSpec, array: np.ndarray | None = None):
        self.paths = list(paths)
        self.spec = spec
        self.array = array
        self.shape = (len(self.paths), spec.height, spec.width, spec.channels)
        self.dtype = np.dtype(np.uint8)

    @classmethod
    def load(cls, samples: Sequence[Sample], spec: InputSpec, *, in_memory: bool,
             progress: bool = True) -> Pixels:  # fmt: skip
        paths = [sample.path for sample in samples]
        array = _decode(paths, spec, progress, "Loading images") if in_memory else None
        return cls(paths, spec, array)

    @property
    def in_memory(self) -> bool:
        return self.array is not None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if self.array is not None:
            return self.array[index]
        if isinstance(index, int | np.integer):
            return _decode([self.paths[index]], self.spec, False, "")[0]
        rows = range(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        return _decode([self.paths[i] for i in rows], self.spec, False, "")

    def subset(self, rows: np.ndarray | Sequence[int]) -> Pixels:
        """The images at ``rows``, as Pixels (a view of the paths; memory copied if held)."""
        array = None if self.array is None else self.array[np.asarray(rows)]
        return Pixels([self.paths[i] for i in rows], self.spec, array)

    @classmethod
    def join(cls, *parts: Pixels) -> Pixels:
        """One after another (e.g. validation then test, scored in one pass)."""
        arrays = [p.array for p in parts]
        held = all(a is not None for a in arrays)
        array = np.concatenate(arrays) if held and arrays else None  # type: ignore[arg-type]
        return cls([path for p in parts for path in p.paths], parts[0].spec, array)


PixelArray = np.ndarray | Pixels  # what readers of a split accept


def batches(pixels: PixelArray, size: int) -> Iterator[np.ndarray]:
    """``pixels`` in consecutive slices of ``size`` images (the last one shorter)."""
    for start in range(0, len(pixels), size):
        yield pixels[start : start + size]
