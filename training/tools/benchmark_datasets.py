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

Command line::

    python -m training.tools.benchmark_datasets fashion-mnist OUT [--per-class 600] [--test-per-class N]
    python -m training.tools.benchmark_datasets {fashion-mnist-hierarchical,fashion-mnist-multilabel,lfw} OUT
"""

from __future__ import annotations

import argparse
import csv
import gzip
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
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

LFW_CLASSES: tuple[str, str] = ("no-face", "face")  # [negative, positive]
MULTILABEL_CSV = "labels.csv"
MOSAIC_GRID = 2  # 2x2 items per mosaic

Split = Literal["train", "test"]
Count = int | Literal["all"]


class DatasetMissing(FileNotFoundError):
    """A source dataset is not installed; the message says how to install it."""


# ----------------------------------------------------------------------------- sources


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


# ----------------------------------------------------------------------------- helpers


def select_per_class(labels: np.ndarray, count: Count, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``count`` random items of each class (all of them for "all"), sorted."""
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if count == "all":
            chosen.append(members)
            continue
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count per class must be a positive integer or 'all', got {count!r}")
        if count > len(members):
            raise ValueError(
                f"class {int(cls)}: asked for {count} items, only {len(members)} exist"
            )
        chosen.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(chosen))


def _fresh_dir(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write the image")


def class_folder(name: str, taxonomy: Mapping[str, str | None] | None = None) -> Path:
    """Relative folder of a class: its name, or its path from the top of ``taxonomy``."""
    if taxonomy is None:
        return Path(name)
    parts = [name]
    parent = taxonomy[name]
    while parent is not None:
        parts.append(parent)
        parent = taxonomy[parent]
    return Path(*reversed(parts))


@dataclass(frozen=True)
class DatasetSummary:
    """What a builder wrote: images per split, and images per class (or label) per split.

    For multilabel data an image counts once for each label it carries.
    """

    root: Path
    images: dict[str, int]  # split -> images
    counts: dict[str, dict[str, int]]  # split -> class -> images

    def total(self) -> int:
        return sum(self.images.values())

    def describe(self) -> str:
        lines = [f"{self.root}: {self.total()} images"]
        for split, per_class in self.counts.items():
            detail = ", ".join(f"{k} {v}" for k, v in per_class.items())
            lines.append(f"  {split}: {self.images[split]} ({detail})")
        return "\n".join(lines)


def _write_class_folders(
    out: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    class_names: Sequence[str],
    source_name: str,
    taxonomy: Mapping[str, str | None] | None = None,
) -> dict[str, int]:
    counts = dict.fromkeys(class_names, 0)
    for i in indices:
        name = class_names[int(labels[i])]
        _write_png(
            out / class_folder(name, taxonomy) / f"{source_name}-{int(i):05d}.png", images[i]
        )
        counts[name] += 1
    return counts


# ----------------------------------------------------------------------------- Fashion-MNIST


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
    out = _fresh_dir(out, overwrite)
    counts = {}
    for split, count in (("train", per_class_train), ("test", test)):
        if count == 0:
            continue
        images, labels = load_fashion_mnist(split, root)
        indices = select_per_class(labels, count, rng)
        counts[split] = _write_class_folders(
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
        _write_png(out / name, mosaic)
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
    out = _fresh_dir(out, overwrite)
    counts, written = {}, {}
    for split, count in (("train", per_class_train), ("test", test)):
        if count == 0:
            continue
        images, labels = load_fashion_mnist(split, root)
        indices = select_per_class(labels, count, rng)
        if len(indices) < MOSAIC_GRID * MOSAIC_GRID:
            raise ValueError(f"{split}: {len(indices)} items are too few for one mosaic")
        rows, counts[split] = _write_mosaics(out / split, split, images, labels, indices, rng)
        write_labels_csv(out / split / MULTILABEL_CSV, rows)
        written[split] = len(rows)
    return DatasetSummary(out, written, counts)


def write_labels_csv(path: Path, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    """A multilabel CSV: header ``path,labels``, labels joined with ``;``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels"])
        for rel, labels in rows:
            writer.writerow([rel, ";".join(labels)])


def read_labels_csv(path: Path) -> dict[str, list[str]]:
    """The rows of a multilabel CSV written by :func:`write_labels_csv`: path -> labels."""
    with path.open(newline="", encoding="utf-8") as f:
        return {
            row["path"]: [x for x in row["labels"].split(";") if x] for row in csv.DictReader(f)
        }


# ----------------------------------------------------------------------------- LFW


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
    out = _fresh_dir(out, overwrite)
    images, labels = load_lfw_subset()
    indices = select_per_class(labels, "all" if per_class is None else per_class, rng)
    splits: dict[str, np.ndarray] = {"": indices}
    if test_per_class:
        test = select_per_class(labels[indices], test_per_class, rng)
        test = indices[test]
        splits = {"train": np.setdiff1d(indices, test), "test": test}
    counts = {}
    for split, chosen in splits.items():
        counts[split or "all"] = _write_class_folders(
            out / split if split else out, split, images, labels, chosen, LFW_CLASSES, "lfw"
        )
    return DatasetSummary(out, {k: sum(v.values()) for k, v in counts.items()}, counts)


# ----------------------------------------------------------------------------- CLI

BUILDERS = {
    "fashion-mnist": write_fashion_mnist_multiclass,
    "fashion-mnist-hierarchical": write_fashion_mnist_hierarchical,
    "fashion-mnist-multilabel": write_fashion_mnist_multilabel,
    "lfw": write_lfw_binary,
}


def _count(text: str) -> Count:
    if text == "all":
        return "all"
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'all', got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.tools.benchmark_datasets",
        description="Write a real benchmark dataset (offline) in a layout `kestrel train` reads.",
    )
    parser.add_argument("dataset", choices=sorted(BUILDERS))
    parser.add_argument("out", type=Path, help="folder to write (must be empty or absent)")
    parser.add_argument(
        "--per-class",
        type=_count,
        default=None,
        help="training pictures per class (Fashion-MNIST default 600; lfw default all 100)",
    )
    parser.add_argument(
        "--test-per-class",
        type=_count,
        default=None,
        help="test pictures per class: Fashion-MNIST default all (1000), lfw default 0 "
        "(no fixed test split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random selection")
    parser.add_argument(
        "--fashion-mnist-dir",
        type=Path,
        default=FASHION_MNIST_DIR,
        help=f"folder of the idx files (default: where {FASHION_MNIST_PACKAGE} puts them)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dataset == "lfw":
            per_class = None if args.per_class in (None, "all") else args.per_class
            test = 0 if args.test_per_class in (None, "all") else args.test_per_class
            summary = write_lfw_binary(
                args.out,
                args.seed,
                per_class=per_class,
                test_per_class=test,
                overwrite=args.overwrite,
            )
        else:
            summary = BUILDERS[args.dataset](
                args.out,
                600 if args.per_class is None else args.per_class,
                "all" if args.test_per_class is None else args.test_per_class,
                args.seed,
                root=args.fashion_mnist_dir,
                overwrite=args.overwrite,
            )
    except (DatasetMissing, FileExistsError, ValueError) as exc:
        print(f"training.tools.benchmark_datasets: {exc}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
