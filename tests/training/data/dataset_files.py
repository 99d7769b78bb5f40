"""Helpers of the dataset tests: writing images into a layout, reading samples back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from training.data import Dataset, Sample
from training.tools.benchmark_datasets import FASHION_MNIST_CLASSES

FASHION_NAMES = list(FASHION_MNIST_CLASSES)
FASHION_TREE = {
    "tops": ["t-shirt", "pullover"],
    "bottoms": ["trouser"],
    "footwear": ["sandal", "sneaker"],
}
MULTI = ["two", "one", "zero"]


def write_images(folder: Path, images: list[np.ndarray] | np.ndarray, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"img{i:03d}{ext}"), image)


def rel_paths(samples: list[Sample], root: Path) -> set[str]:
    return {s.path.relative_to(root).as_posix() for s in samples}


def all_samples(ds: Dataset) -> list[Sample]:
    return ds.train + ds.val + ds.test


def mosaics(
    digits: dict[int, list[np.ndarray]], count: int, seed: int = 0
) -> Iterator[tuple[np.ndarray, tuple[str, ...]]]:
    """2x2 mosaics of digits: labels are the digits 0-2 present; 7s fill the empty cells."""
    rng = np.random.default_rng(seed)
    names = {0: "zero", 1: "one", 2: "two"}
    for i in range(count):
        present = [d for d in (0, 1, 2) if rng.random() < 0.4]
        if i % 10 == 0:
            present = []  # all-negative images
        cells = [digits[d][i % 40] for d in present] + [digits[7][(i + k) % 60] for k in range(4)]
        cells = cells[:4]
        image = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])
        yield image, tuple(sorted(names[d] for d in present))
