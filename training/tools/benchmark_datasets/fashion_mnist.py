"""Fashion-MNIST builders: class folders, nested folders under a clothing taxonomy, and 2x2
mosaics listed in ``labels.csv`` (multilabel)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from training.data.multilabel import CSV_NAME, write_labels_csv
from training.tools.benchmark_datasets.sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
)
from training.tools.benchmark_datasets.writing import (
    Count,
    DatasetSummary,
    fresh_dir,
    select_per_class,
    write_class_folders,
    write_png,
)

#: The benchmark taxonomy: every node -> its parent (None: a top-level node). Dress and bag
#: have no finer kinds here, so they are leaves at the top level.
FASHION_MNIST_TAXONOMY: dict[str, str | None] = {
    "tops": None,
    "bottoms": None,
    "footwear": None,
    "dress": None,
    "bag": None,
    "t-shirt": "tops",
    "pullover": "tops",
    "coat": "tops",
    "shirt": "tops",
    "trouser": "bottoms",
    "sandal": "footwear",
    "sneaker": "footwear",
    "ankle-boot": "footwear",
}
MOSAIC_GRID = 2  # 2x2 items per mosaic


def _write_fashion_mnist_folders(
    out: str | Path,
    per_class_train: Count,
    test: Count,
    seed: int,
    root: str | Path,
    overwrite: bool,
    taxonomy: Mapping[str, str | None] | None,
) -> DatasetSummary:
    rng = np.random.default_rng(seed)
    out = fresh_dir(out, overwrite)
    counts = {}
    for split, count in (("train", per_class_train), ("test", test)):
        if count == 0:
            continue
        images, labels = load_fashion_mnist(split, root)
        indices = select_per_class(labels, count, rng)
        counts[split] = write_class_folders(
            out / split, split, images, labels, indices, FASHION_MNIST_CLASSES, split, taxonomy
        )
    return DatasetSummary(out, {k: sum(v.values()) for k, v in counts.items()}, counts)


def write_fashion_mnist_multiclass(
    out: str | Path,
    per_class_train: Count = 600,
    test: Count = "all",
    seed: int = 0,
    *,
    root: str | Path = FASHION_MNIST_DIR,
    overwrite: bool = False,
) -> DatasetSummary:
    """Fashion-MNIST as ``out/train/<class>/*.png`` and ``out/test/<class>/*.png``.

    ``per_class_train`` random pictures of each class from the train file; ``test`` pictures
    of each class from the t10k file ("all": the full 10,000; 0: no test folder). The trainer
    carves its validation split out of ``train/``.
    """
    return _write_fashion_mnist_folders(out, per_class_train, test, seed, root, overwrite, None)


def write_fashion_mnist_hierarchical(
    out: str | Path,
    per_class_train: Count = 600,
    test: Count = "all",
    seed: int = 0,
    *,
    root: str | Path = FASHION_MNIST_DIR,
    overwrite: bool = False,
) -> DatasetSummary:
    """Fashion-MNIST under :data:`FASHION_MNIST_TAXONOMY` as nested folders.

    ``out/train/tops/shirt/*.png``, ``out/train/footwear/sandal/*.png`` ...; dress and bag
    are leaves at the top level (``out/train/dress/*.png``). Counts as in
    :func:`write_fashion_mnist_multiclass`, and with the same seed the same pictures.
    """
    return _write_fashion_mnist_folders(
        out, per_class_train, test, seed, root, overwrite, FASHION_MNIST_TAXONOMY
    )


def mosaic_labels(classes: Sequence[int]) -> list[str]:
    """The label set of a mosaic: the distinct classes of its items, in class order."""
    return [FASHION_MNIST_CLASSES[c] for c in sorted(set(int(c) for c in classes))]


def _write_mosaics(
    out: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    rng: np.random.Generator,
) -> tuple[list[tuple[str, list[str]]], dict[str, int]]:
    tiles = MOSAIC_GRID * MOSAIC_GRID
    order = rng.permutation(indices)
    order = order[: len(order) - len(order) % tiles].reshape(-1, tiles)
    rows: list[tuple[str, list[str]]] = []
    counts = dict.fromkeys(FASHION_MNIST_CLASSES, 0)
    for n, group in enumerate(order):
        grid = images[group].reshape(MOSAIC_GRID, MOSAIC_GRID, *images.shape[1:])
        mosaic = np.concatenate([np.concatenate(list(row), axis=1) for row in grid], axis=0)
        # Sources in row-major order, so the name says which item sits where.
        name = f"{split}-{n:05d}-" + "-".join(str(int(i)) for i in group) + ".png"
        write_png(out / name, mosaic)
        present = mosaic_labels(labels[group])
        for label in present:
            counts[label] += 1
        rows.append((name, present))
    return rows, counts


def write_fashion_mnist_multilabel(
    out: str | Path,
    per_class_train: Count = 600,
    test: Count = "all",
    seed: int = 0,
    *,
    root: str | Path = FASHION_MNIST_DIR,
    overwrite: bool = False,
) -> DatasetSummary:
    """2x2 mosaics (56x56) of four Fashion-MNIST items; labels = the classes present.

    The items are chosen as in :func:`write_fashion_mnist_multiclass` (``per_class_train``
    per class from the train file, ``test`` per class from the t10k file), shuffled and
    tiled four at a time, so every chosen item appears in exactly one mosaic: 600 per class
    give 1,500 training mosaics, the full test file 2,500 test mosaics. Written as
    ``out/<split>/<split>-NNNNN-<i>-<j>-<k>-<l>.png`` (the source indices, row by row) and
    listed in ``out/<split>/labels.csv`` with ``path,labels`` (paths relative to the CSV).
    """
    rng = np.random.default_rng(seed)
    out = fresh_dir(out, overwrite)
    counts, written = {}, {}
    for split, count in (("train", per_class_train), ("test", test)):
        if count == 0:
            continue
        images, labels = load_fashion_mnist(split, root)
        indices = select_per_class(labels, count, rng)
        if len(indices) < MOSAIC_GRID * MOSAIC_GRID:
            raise ValueError(f"{split}: {len(indices)} items are too few for one mosaic")
        rows, counts[split] = _write_mosaics(out / split, split, images, labels, indices, rng)
        write_labels_csv(out / split / CSV_NAME, rows)
        written[split] = len(rows)
    return DatasetSummary(out, written, counts)
