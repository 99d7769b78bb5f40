"""Real images for the dataset tests: scikit-image's ``lfw_subset`` (100 faces, then 100
non-face crops), scikit-learn's ``load_digits`` and Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (tests that need it skip without it)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from dataset_files import FASHION_NAMES

from training.tools.benchmark_datasets import DatasetMissing, load_fashion_mnist


@pytest.fixture(scope="session")
def lfw() -> tuple[np.ndarray, np.ndarray]:
    """(faces, non-faces), 100 each, 25x25 uint8."""
    import skimage.data

    images = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    return images[:100], images[100:]


@pytest.fixture(scope="session")
def digits() -> dict[int, list[np.ndarray]]:
    """Distinct digits per class, 8x8 upscaled to 32x32 uint8."""
    from sklearn.datasets import load_digits

    data = load_digits()
    out: dict[int, list[np.ndarray]] = {d: [] for d in range(10)}
    seen: set[bytes] = set()
    for image, target in zip(data.images, data.target, strict=True):
        pixels = (image * 255 / 16).round().astype(np.uint8)
        if pixels.tobytes() not in seen:
            seen.add(pixels.tobytes())
            out[int(target)].append(cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_NEAREST))
    return out


@pytest.fixture(scope="session")
def fashion() -> dict[str, np.ndarray]:
    """Fashion-MNIST test set: the first 40 images of each class, keyed by class name."""
    try:
        images, labels = load_fashion_mnist("test")
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    return {name: images[labels == i][:40] for i, name in enumerate(FASHION_NAMES)}
