"""Real images shared by the curate, label and embedding tests: Fashion-MNIST's test file
(Debian ``dataset-fashion-mnist``; the tests that need it skip without it), and one embedding
cache per session so that the backbone embeds each picture once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from curate_helpers import FASHION

from training.tools.benchmark_datasets import DatasetMissing, load_fashion_mnist


@pytest.fixture(scope="session")
def fashion_by_class() -> dict[str, np.ndarray]:
    """The first 100 test pictures of each class (28x28 grey), keyed by class name."""
    try:
        images, labels = load_fashion_mnist("test")
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    return {name: images[labels == i][:100] for i, name in enumerate(FASHION)}


@pytest.fixture(scope="session")
def kestrel_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``KESTREL_CACHE_DIR`` for the session."""
    return tmp_path_factory.mktemp("kestrel-cache")


@pytest.fixture(scope="session")
def embedding_cache(kestrel_cache_root: Path) -> Path:
    """The session's embedding cache: what ``$KESTREL_CACHE_DIR/embeddings`` names (tests
    that need a fresh one make their own)."""
    return kestrel_cache_root / "embeddings"


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory) -> Path:
    """5 digit classes x 24 real 8x8 grayscale images, a folder per class."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("tiny-digits")
    for digit in range(5):
        folder = root / f"digit{digit}"
        folder.mkdir()
        for i in np.flatnonzero(digits.target == digit)[:24]:
            image = (digits.images[i] / 16 * 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i}.png"), image)
    return root
