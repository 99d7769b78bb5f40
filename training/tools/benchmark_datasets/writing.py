"""Writing images into the layouts ``kestrel train`` reads, and what was written."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from device.inference.taxonomy import path_from_root

Count = int | Literal["all"]


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


def fresh_dir(out: str | Path, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write the image")


def class_folder(name: str, taxonomy: Mapping[str, str | None] | None = None) -> Path:
    """Relative folder of a class: its name, or its path from the top of ``taxonomy``."""
    if taxonomy is None:
        return Path(name)
    return Path(*path_from_root(name, taxonomy))


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


def write_class_folders(
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
        write_png(out / class_folder(name, taxonomy) / f"{source_name}-{int(i):05d}.png", images[i])
        counts[name] += 1
    return counts
