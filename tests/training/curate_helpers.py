"""Helpers of the curate, label and embedding tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from training.tools.benchmark_datasets import FASHION_MNIST_CLASSES

FASHION = list(FASHION_MNIST_CLASSES)
EMBED_SIZE = 96  # small: the tests' time budget


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    """``folder/<prefix>NNN.png`` for each image; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        assert cv2.imwrite(str(path), image)
        paths.append(path)
    return paths
