"""What loading produces (:class:`Sample`, :class:`Dataset`, :class:`DataError`), and the
discovery record (:class:`Found`) that every layout reader and check fills in."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.bundle import TaskType

LISTED = 8  # how many files an error or warning names before "... and N more"
LISTED_PROBLEMS = 50  # how many problems an error message lists (DataError.problems has all)


class DataError(ValueError):
    """The dataset cannot be used; the message names the files / classes and says what to do.

    ``problems`` holds every problem found, one string each (the message lists them all).
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems is not None else [message]


@dataclass(frozen=True)
class Sample:
    """One image and its labels.

    binary / multiclass: one label; hierarchical: one leaf label; multilabel: 0..N labels
    (sorted).
    """

    path: Path
    labels: tuple[str, ...]


@dataclass
class Dataset:
    """A checked dataset, split into train / val / test."""

    root: Path
    task: TaskType
    labels: list[str]  # output order of the model; binary: [negative, positive]
    taxonomy: dict[str, str | None] | None  # hierarchical: parent of every node (None: top)
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[tuple[str, str]]  # (path relative to root, reason) for every file left out
    warnings: list[str]
    split_source: str = ""  # how the split was made, for the report
    image_sizes: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)

    def splits(self) -> dict[str, list[Sample]]:
        """The three splits by name, in the order train, val, test."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: counts per split per label, skipped files, warnings."""
        counts: dict[str, dict[str, int]] = {}
        images: dict[str, int] = {}
        for name, samples in self.splits().items():
            per_label = Counter(label for s in samples for label in s.labels)
            counts[name] = {label: per_label.get(label, 0) for label in self.labels}
            images[name] = len(samples)
        out: dict[str, Any] = {
            "root": str(self.root),
            "task": self.task,
            "labels": list(self.labels),
            "split": self.split_source,
            "images": images,
            "counts": counts,
        }
        if self.task == "multilabel":
            out["unlabeled"] = {
                name: sum(1 for s in samples if not s.labels)
                for name, samples in self.splits().items()
            }
        if self.taxonomy is not None:
            out["taxonomy"] = dict(self.taxonomy)
        if self.image_sizes:
            out["image_size"] = self._image_size_summary()
        out["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        out["warnings"] = list(self.warnings)
        return out

    def _image_size_summary(self) -> dict[str, list[int]]:
        heights = np.array([h for h, _ in self.image_sizes.values()])
        widths = np.array([w for _, w in self.image_sizes.values()])
        return {
            "min": [int(heights.min()), int(widths.min())],
            "median": [int(np.median(heights)), int(np.median(widths))],
            "max": [int(heights.max()), int(widths.max())],
        }


# ---------------------------------------------------------------------------------------------
# Discovery: files and their labels, before anything is decoded


@dataclass
class Entry:
    """One listed file: a class-folder image or a labels-CSV row."""

    path: Path
    labels: tuple[str, ...]
    split: str | None  # the given split folder, or None
    where: str  # for messages: path relative to root, or "labels.csv line 7"


@dataclass
class Found:
    """Everything discovery and the checks learn; problems are collected, raised together."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # every class / label folder seen
    taxonomy: dict[str, str | None] | None = None
    # skipped files per class (unreadable or missing), for the bad-fraction rule
    bad: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    files_per_class: Counter[str] = field(default_factory=Counter)
    layout: str = ""

    def rel(self, path: Path) -> str:
        return relative_path(path, self.root)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((self.rel(path), reason))


# ---------------------------------------------------------------------------------------------
# Messages


def relative_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for messages ("" for the root itself), else as given."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            return str(path)
    return rel.as_posix() if str(rel) != "." else ""


def first_few(items: Iterable[str], count: int = LISTED) -> list[str]:
    """The first ``count`` items, and "... and N more" when there are more."""
    items = list(items)
    if len(items) <= count:
        return items
    return [*items[:count], f"... and {len(items) - count} more"]


def dataset_error(root: Path, task: str, problems: list[str]) -> DataError:
    """One :class:`DataError` listing every (distinct) problem found in the dataset."""
    unique = list(dict.fromkeys(problems))
    plural = "s" if len(unique) > 1 else ""
    message = f"cannot use the dataset {root} (--task {task}), {len(unique)} problem{plural}:\n"
    message += "\n".join(f"  - {p}" for p in first_few(unique, LISTED_PROBLEMS))
    return DataError(message, unique)
