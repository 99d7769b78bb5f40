"""``python -m training.tools.benchmark_datasets DATASET OUT``: write one benchmark dataset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from training.tools.benchmark_datasets.fashion_mnist import (
    write_fashion_mnist_hierarchical,
    write_fashion_mnist_multiclass,
    write_fashion_mnist_multilabel,
)
from training.tools.benchmark_datasets.lfw import write_lfw_binary
from training.tools.benchmark_datasets.sources import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_PACKAGE,
    DatasetMissing,
)
from training.tools.benchmark_datasets.writing import Count

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
