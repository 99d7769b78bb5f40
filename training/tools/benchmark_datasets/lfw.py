"""LFW builder: skimage's 25x25 face and non-face crops as ``face/`` and ``no-face/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.tools.benchmark_datasets.sources import load_lfw_subset
from training.tools.benchmark_datasets.writing import (
    DatasetSummary,
    fresh_dir,
    select_per_class,
    write_class_folders,
)

LFW_CLASSES: tuple[str, str] = ("no-face", "face")  # [negative, positive]


def write_lfw_binary(
    out: str | Path,
    seed: int = 0,
    *,
    per_class: int | None = None,
    test_per_class: int = 0,
    overwrite: bool = False,
) -> DatasetSummary:
    """skimage's LFW subset as ``face/`` and ``no-face/`` folders of 25x25 PNGs.

    ``per_class`` limits the pictures per class (random, seeded; default all 100). With
    ``test_per_class`` > 0 that many of each class go to ``test/`` and the rest to
    ``train/``, a fixed held-out split; otherwise the trainer makes its own split.
    """
    rng = np.random.default_rng(seed)
    out = fresh_dir(out, overwrite)
    images, labels = load_lfw_subset()
    indices = select_per_class(labels, "all" if per_class is None else per_class, rng)
    splits: dict[str, np.ndarray] = {"": indices}
    if test_per_class:
        test = select_per_class(labels[indices], test_per_class, rng)
        test = indices[test]
        splits = {"train": np.setdiff1d(indices, test), "test": test}
    counts = {}
    for split, chosen in splits.items():
        counts[split or "all"] = write_class_folders(
            out / split if split else out, split, images, labels, chosen, LFW_CLASSES, "lfw"
        )
    return DatasetSummary(out, {k: sum(v.values()) for k, v in counts.items()}, counts)
