"""``kestrel train`` on a large dataset: peak memory, time per image, and the embedding cache
across two runs. Run by hand, not in CI (about an hour on a 2-core machine at 20,000 images).

The data: ``--images`` Fashion-MNIST pictures (the only large real set that ships offline,
28 px grey) upscaled to 224 x 224 and saved as JPEG files, a folder per class — 20,000 of
them decoded are 3 GB of pixels, more than ``kestrel train`` may hold (it reads them from
disk batch by batch). Then, each ``kestrel train DATA --task multiclass --out B`` in a child
process of its own, with a fresh embedding cache under ``--work``:

1. ``half``: the first half of the images, an empty embedding cache — time per image;
2. ``full``: all of them, an empty cache of its own — peak RSS (the child's ``ru_maxrss``,
   from ``wait4``), time per image (linear: the same as ``half`` within noise);
3. ``again``: 50 new images added, ``full``'s cache — only those are embedded (its counts).

Targets: peak RSS <= 2 GB; time per image of ``full`` within 25 % of ``half``; ``again``
computes 50 embeddings (plus none of the others).

Usage::

    python bench/train_scale.py --work /tmp/scale [--images 20000] [--train-flags "..."]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

_CHECKOUT = str(Path(__file__).resolve().parents[1])
if _CHECKOUT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, _CHECKOUT)

from training.tools.benchmark_datasets.sources import load_fashion_mnist  # noqa: E402

SIZE = 224
ADDED = 50
TARGET_RSS_GB = 2.0
LINEAR_TOLERANCE = 0.25
CACHE_LINE = re.compile(r"embedding cache: (\d+) reused, (\d+) computed")


def write_images(root: Path, images: np.ndarray, labels: np.ndarray, start: int) -> None:
    """Each image upscaled to SIZE px, as a colour JPEG in its class folder."""
    for i, (image, label) in enumerate(zip(images, labels, strict=True), start):
        folder = root / f"class{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        big = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))


@dataclass
class Run:
    name: str
    images: int
    seconds: float
    peak_rss_gb: float
    reused: int
    computed: int
    exit_code: int

    @property
    def ms_per_image(self) -> float:
        return 1000 * self.seconds / max(self.images, 1)


def train_child(name: str, data: Path, out: Path, images: int, env: dict[str, str],
                flags: Sequence[str]) -> Run:  # fmt: skip
    """One ``kestrel train`` in a child process: wall time, its peak RSS, the cache counts."""
    command = [sys.executable, "-m", "device.cli", "train", str(data), "--task", "multiclass",
               "--out", str(out), *flags]  # fmt: skip
    print(f"[{name}] {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    stderr = child.stderr.read()  # to the end first: a full pipe would block the child
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest so far
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    reused = computed = 0
    for found in CACHE_LINE.finditer(stderr):
        reused, computed = reused + int(found[1]), computed + int(found[2])
    tail = stderr.strip().splitlines()[-3:]
    print(f"[{name}] exit {child.returncode}; last lines:\n  " + "\n  ".join(tail), flush=True)
    return Run(name, images, seconds, usage.ru_maxrss / 2**20, reused, computed, child.returncode)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="datasets, bundles, cache")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument(
        "--train-flags",
        default="--time-budget 60 --no-fine-tune",
        help="flags of every kestrel train run (default: a budget that fits 20,000 images at "
        "224 px on 2 cores, the frozen-backbone head)",
    )
    args = parser.parse_args(argv)
    flags = args.train_flags.split()
    images, labels = load_fashion_mnist("train")
    n = min(args.images, len(images) - ADDED)
    half, full = args.work / "half", args.work / "full"
    if not full.exists():
        print(f"writing {n} images at {SIZE} px under {args.work}", flush=True)
        write_images(half, images[: n // 2], labels[: n // 2], 0)
        write_images(full, images[:n], labels[:n], 0)
    # half and full each start from an empty embedding cache of their own; again reuses full's.
    env = {name: dict(os.environ, KESTREL_CACHE_DIR=str(args.work / f"cache-{name}"))
           for name in ("half", "full")}  # fmt: skip
    runs = [
        train_child("half", half, args.work / "b-half", n // 2, env["half"], flags),
        train_child("full", full, args.work / "b-full", n, env["full"], flags),
    ]
    write_images(full, images[n : n + ADDED], labels[n : n + ADDED], n)
    runs.append(train_child("again", full, args.work / "b-again", n + ADDED, env["full"],
                            flags))  # fmt: skip
    print(f"\n{'run':6} {'images':>7} {'seconds':>8} {'ms/img':>7} {'peak GB':>8} "
          f"{'reused':>7} {'computed':>8} exit")  # fmt: skip
    for r in runs:
        print(f"{r.name:6} {r.images:7d} {r.seconds:8.0f} {r.ms_per_image:7.1f} "
              f"{r.peak_rss_gb:8.2f} {r.reused:7d} {r.computed:8d} {r.exit_code}")  # fmt: skip
    ratio = runs[1].ms_per_image / runs[0].ms_per_image
    checks = {
        f"peak RSS {max(r.peak_rss_gb for r in runs):.2f} GB <= {TARGET_RSS_GB}": max(
            r.peak_rss_gb for r in runs
        )
        <= TARGET_RSS_GB,
        f"time per image full / half = {ratio:.2f} (linear within {LINEAR_TOLERANCE:.0%})": abs(
            ratio - 1
        )
        <= LINEAR_TOLERANCE,
        f"second run embedded {runs[2].computed} new files (of {ADDED} added)": runs[2].computed
        == ADDED,
        "every run wrote its bundle": all(r.exit_code == 0 for r in runs),
    }
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
