"""The two offline sources: Fashion-MNIST's idx files (Debian ``dataset-fashion-mnist``) and
scikit-image's LFW subset."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

#: Where the Debian package ``dataset-fashion-mnist`` puts the idx files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Fashion-MNIST's classes in label order (0 T-shirt/top ... 9 Ankle boot), as folder names.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)

Split = Literal["train", "test"]


class DatasetMissing(FileNotFoundError):
    """A source dataset is not installed; the message says how to install it."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read a (gzipped) idx file — the format of MNIST and Fashion-MNIST — as a numpy array.

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    then each dimension as a big-endian uint32, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: idx type code 0x{data[2]:02x}; only unsigned bytes are read")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: idx header says shape {shape} ({expected} bytes), "
            f"file holds {len(data) - header} bytes (truncated?)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@lru_cache(maxsize=4)
def load_fashion_mnist(
    split: Split, root: str | Path = FASHION_MNIST_DIR
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``split`` as (images (N, 28, 28) uint8, labels (N,) uint8), read-only."""
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    image_file, label_file = (root / name for name in _IDX_FILES[split])
    for path in (image_file, label_file):
        if not path.is_file():
            raise DatasetMissing(
                f"{path}: Fashion-MNIST not found; install it with "
                f"`apt-get install {FASHION_MNIST_PACKAGE}` (or pass its folder)"
            )
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{root}: {split} images {images.shape} and labels {labels.shape} do not match"
        )
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"{label_file}: label {labels.max()} outside 0..9")
    return images, labels


def load_lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """skimage's LFW subset as (images (200, 25, 25) uint8, labels (200,): 1 face, 0 not).

    The loader returns floats in [0, 1]; its first 100 crops are faces, the last 100 are not.
    """
    import skimage.data

    raw = np.asarray(skimage.data.lfw_subset())
    images = np.clip(np.round(raw * 255.0), 0, 255).astype(np.uint8)
    half = len(images) // 2
    labels = np.array([1] * half + [0] * (len(images) - half), dtype=np.uint8)
    return images, labels
