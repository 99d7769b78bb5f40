"""Real benchmark and test datasets, built offline into the layouts ``kestrel train`` reads.

Two sources of real images ship with packages (see shared STACK notes):

- **Fashion-MNIST** (Debian ``dataset-fashion-mnist``, MIT): 60,000 train + 10,000 test
  28x28 grayscale pictures of 10 kinds of clothing, read straight from the package's idx files.
- **LFW subset** (``skimage.data.lfw_subset()``): 200 real 25x25 crops, the first 100 faces,
  the last 100 background patches of the same photos.

Builders (each writes a fresh folder; small counts make CI-sized versions in a second):

- :func:`write_fashion_mnist_multiclass` — ``train/<class>/*.png`` and ``test/<class>/*.png``;
- :func:`write_fashion_mnist_hierarchical` — the same pictures under a real clothing taxonomy,
  as nested folders (``train/tops/shirt/*.png``; dress and bag are top-level leaves:
  ``train/dress/*.png``);
- :func:`write_fashion_mnist_multilabel` — 2x2 mosaics (56x56) of four items, labelled with the
  set of classes present, listed in ``labels.csv`` (``path,labels`` with ``;`` between labels);
- :func:`write_lfw_binary` — ``face/`` and ``no-face/`` (optionally under ``train/`` and
  ``test/``).

File names carry the index of the picture in its source (``train-00042.png`` is item 42 of
Fashion-MNIST's train file), so every image can be traced back and checked.

Command line (DATASET: fashion-mnist, fashion-mnist-hierarchical, fashion-mnist-multilabel,
lfw)::

    python -m training.tools.benchmark_datasets DATASET OUT [--per-class N] [--test-per-class N]
"""

from __future__ import annotations

from training.tools.benchmark_datasets.cli import BUILDERS, build_parser, main
from training.tools.benchmark_datasets.fashion_mnist import (
    FASHION_MNIST_TAXONOMY,
    MOSAIC_GRID,
    mosaic_labels,
    write_fashion_mnist_hierarchical,
    write_fashion_mnist_multiclass,
    write_fashion_mnist_multilabel,
)
from training.tools.benchmark_datasets.lfw import LFW_CLASSES, write_lfw_binary
from training.tools.benchmark_datasets.sources import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FASHION_MNIST_PACKAGE,
    DatasetMissing,
    Split,
    load_fashion_mnist,
    load_lfw_subset,
    read_idx,
)
from training.tools.benchmark_datasets.writing import (
    Count,
    DatasetSummary,
    class_folder,
    select_per_class,
)

__all__ = [
    "BUILDERS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_PACKAGE",
    "FASHION_MNIST_TAXONOMY",
    "LFW_CLASSES",
    "MOSAIC_GRID",
    "Count",
    "DatasetMissing",
    "DatasetSummary",
    "Split",
    "build_parser",
    "class_folder",
    "load_fashion_mnist",
    "load_lfw_subset",
    "main",
    "mosaic_labels",
    "read_idx",
    "select_per_class",
    "write_fashion_mnist_hierarchical",
    "write_fashion_mnist_multiclass",
    "write_fashion_mnist_multilabel",
    "write_lfw_binary",
]
