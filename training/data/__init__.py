"""Labeled images on disk -> a checked, split dataset; and its pixels through the device's
preprocessing.

``load_dataset`` reads one of these layouts (hidden files, ``__MACOSX`` and files whose extension
is not an image extension are ignored silently):

* **binary / multiclass** — a folder per class, ``root/<class>/**/*.jpg`` (images may sit in
  subfolders of a class folder, e.g. by date). Binary needs exactly two folders; the positive
  class is ``positive=`` or else the one *not* named like a negative (``no``, ``not_*``,
  ``no_*``, ``non_*``, ``none``, ``empty``, ``background``, ``negative``, ``nothing``,
  ``clear``, ``other``). Binary labels are ``[negative, positive]``; multiclass labels are the
  sorted folder names.
* **hierarchical** — nested folders, ``root/insect/aphid/*.jpg``: a folder with subfolders is
  an inner node of the taxonomy, a folder without subfolders is a leaf and holds the images
  (images directly in an inner folder are an error); a top-level folder with images is a
  top-level leaf. Folder names are the node names and must be unique in the tree. *Or* flat
  class folders (one per leaf) plus ``taxonomy_file``: a ``.json`` file ``{"node": "parent" |
  null}`` naming every node, or any other file as text, one path from a top-level node down
  per line (``animal/insect/aphid``; ``#`` starts a comment). Taxonomy nodes without images
  are left out, with a warning. Labels are the leaves in depth-first order, siblings sorted.
* **multilabel** — a CSV ``path,labels`` (``labels_csv``, else ``root/labels.csv``, else one
  ``labels.csv`` in each split folder): paths relative to the CSV's folder, labels separated by
  ``;``, header optional, an empty label list is a valid all-negative image. *Or* a folder per
  label where the same image may appear in several folders: identical file content is one
  image with the union of the labels; a folder named ``none``, ``nothing``, ``empty``,
  ``background``, ``negative`` or ``no_labels`` holds all-negative images. Labels are sorted.

Split: if the root holds only ``train/`` plus ``val/`` and/or ``test/`` folders (``training``,
``valid``, ``validation``, ``testing`` are accepted too), each holding the same layout, they
are used as given (a missing ``val/`` or ``test/`` is carved out of ``train/``, with a
warning). Otherwise the split is random, seeded and stratified: by class, and for multilabel
by each image's *rarest* label (images without labels form a stratum of their own) so that rare
labels reach every split. A class with at least 3 images gets at least one image in val and
test (2 images: train and val), and always at least one in train.

Checking: every file with an image extension is read and decoded once (in a thread pool: OpenCV
releases the GIL), with the same decoder flags as the device. Empty, unreadable, truncated or
non-image files are skipped and listed in ``Dataset.skipped`` with the reason; more than
``MAX_BAD_FRACTION`` of a class being unreadable is an error. Byte-identical files are one
image: duplicates within a class are dropped (and listed), the same image in two classes is an
error naming both paths, the same image in two given split folders is a warning. Too few images
per class and a single class are errors. All problems found are reported together in one
:class:`DataError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

import cv2
import numpy as np

from device.inference.bundle import InputSpec, TaskType
from device.inference.preprocess import ImageError, InputQuantizer, prepare, read_image

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".jp2"}
)
# Folders that tools leave behind and that are never classes.
IGNORED_FOLDERS = frozenset({"__MACOSX", "@eaDir", "__pycache__", "$RECYCLE.BIN"})
NEGATIVE_NAMES = frozenset(
    {"no", "none", "empty", "background", "negative", "negatives", "nothing", "clear", "other"}
    | {"others", "neg", "bg"}
)
NEGATIVE_PREFIXES = ("no_", "not_", "non_", "without_")
# Multilabel folder layout: a folder with these names holds images that have none of the labels.
UNLABELED_FOLDERS = frozenset({"none", "nothing", "empty", "background", "negative", "no_labels"})
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
CSV_NAME = "labels.csv"
CSV_HEADER_NAMES = frozenset({"path", "file", "filename", "file_name", "filepath", "image"})
MAX_BAD_FRACTION = 0.2  # more unreadable files than this in a class fails the run
IMBALANCE_RATIO = 3.0  # warn when the largest class is this many times the smallest
_LISTED = 8  # how many files an error or warning names before "... and N more"
_LISTED_PROBLEMS = 50  # how many problems an error message lists (DataError.problems has all)

_T = TypeVar("_T")


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
            heights = np.array([h for h, _ in self.image_sizes.values()])
            widths = np.array([w for _, w in self.image_sizes.values()])
            out["image_size"] = {
                "min": [int(heights.min()), int(widths.min())],
                "median": [int(np.median(heights)), int(np.median(widths))],
                "max": [int(heights.max()), int(widths.max())],
            }
        out["skipped"] = [{"path": path, "reason": reason} for path, reason in self.skipped]
        out["warnings"] = list(self.warnings)
        return out


# ---------------------------------------------------------------------------------------------
# Public API


def load_dataset(
    root: Path,
    task: TaskType,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    min_images_per_class: int = 5,
    positive: str | None = None,
    taxonomy_file: Path | None = None,
    labels_csv: Path | None = None,
    progress: bool = True,
) -> Dataset:
    """Find, check and split a labeled image dataset (layouts: see the module docstring).

    Raises :class:`DataError` listing every problem found: wrong path, no images, bad layout,
    too few images in a class, a single class, the same image in two classes, too many
    unreadable files, an ambiguous binary positive class.
    """
    root = Path(root)
    _check_arguments(task, val_fraction, test_fraction, min_images_per_class)
    if task != "binary" and positive is not None:
        raise DataError(f"positive={positive!r} is only for --task binary (task is {task})")
    if task != "hierarchical" and taxonomy_file is not None:
        raise DataError(f"a taxonomy file is only for --task hierarchical (task is {task})")
    if task != "multilabel" and labels_csv is not None:
        raise DataError(f"a labels CSV is only for --task multilabel (task is {task})")
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (give the folder that holds the class folders)")

    found = _Found(root)
    bases = _split_folders(root, found)
    if task == "multilabel":
        _discover_multilabel(root, bases, labels_csv, found)
    elif task == "hierarchical" and taxonomy_file is None:
        _discover_nested(root, bases, found)
    else:
        _discover_class_folders(root, bases, found)
        if task == "hierarchical":
            assert taxonomy_file is not None
            _apply_taxonomy_file(Path(taxonomy_file), found)
    if not found.entries and not found.problems:
        raise DataError(_no_images_message(root, task))

    checked = _check_files(sorted({e.path for e in found.entries}), progress)
    samples = _deduplicate(found, checked, task)
    _check_counts(found, samples, task, min_images_per_class)

    labels, taxonomy = _output_labels(task, found, samples, positive)
    splits, split_source = _make_splits(
        found, samples, task, val_fraction, test_fraction, seed, bases
    )
    if found.problems:
        raise _error(root, task, found.problems)
    _imbalance_warning(samples, labels, task, found)
    sizes: dict[Path, tuple[int, int]] = {}
    for sample, _ in samples:
        result = checked[sample.path]
        if not isinstance(result, str):
            sizes[sample.path] = result[1]
    return Dataset(
        root=root,
        task=task,
        labels=labels,
        taxonomy=taxonomy,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        skipped=sorted(found.skipped),
        warnings=found.warnings,
        split_source=split_source,
        image_sizes=sizes,
    )


def target_array(samples: Sequence[Sample], labels: Sequence[str], task: TaskType) -> np.ndarray:
    """Training targets in the model's output order.

    binary / multiclass / hierarchical: ``(N,)`` int64 index into ``labels``;
    multilabel: ``(N, L)`` float32, 1 where the image has the label.
    """
    index = {label: i for i, label in enumerate(labels)}
    problems: list[str] = []
    if task == "multilabel":
        targets = np.zeros((len(samples), len(labels)), dtype=np.float32)
        for row, sample in enumerate(samples):
            for label in sample.labels:
                if label in index:
                    targets[row, index[label]] = 1.0
                else:
                    problems.append(f"{sample.path}: unknown label {label!r}")
    else:
        targets = np.zeros(len(samples), dtype=np.int64)
        for row, sample in enumerate(samples):
            if len(sample.labels) != 1:
                problems.append(f"{sample.path}: {task} needs one label, has {sample.labels}")
            elif sample.labels[0] not in index:
                problems.append(f"{sample.path}: unknown label {sample.labels[0]!r}")
            else:
                targets[row] = index[sample.labels[0]]
    if problems:
        raise DataError(
            f"{len(problems)} samples do not match the labels {list(labels)}: "
            + "; ".join(_first(problems)),
            problems,
        )
    return targets


def load_pixels(samples: Sequence[Sample], spec: InputSpec, *, progress: bool = True) -> np.ndarray:
    """Decode and preprocess images exactly as the device does: ``(N, H, W, C)`` uint8.

    ``device.inference.preprocess.read_image`` then ``prepare(frame, spec, InputQuantizer.identity(),
    "BGR")``: the pixels before normalization, which the model does itself.
    """
    pixels = np.empty((len(samples), spec.height, spec.width, spec.channels), dtype=np.uint8)
    identity = InputQuantizer.identity()

    def one(i: int) -> str | None:
        try:
            pixels[i] = prepare(read_image(str(samples[i].path)), spec, identity, "BGR")
        except (ImageError, OSError, cv2.error) as exc:
            return f"{samples[i].path}: {exc}"
        return None

    failures = [
        f for f in _parallel(one, range(len(samples)), progress, "Loading images") if f is not None
    ]
    if failures:
        raise DataError(
            f"{len(failures)} images could not be read (changed since the dataset was checked?): "
            + "; ".join(_first(failures)),
            failures,
        )
    return pixels


# ---------------------------------------------------------------------------------------------
# Discovery: files and their labels, before anything is decoded


@dataclass
class _Entry:
    path: Path
    labels: tuple[str, ...]
    split: str | None  # the given split folder, or None
    where: str  # for messages: path relative to root, or "labels.csv line 7"


@dataclass
class _Found:
    root: Path
    entries: list[_Entry] = field(default_factory=list)
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
        return _relative(path, self.root)

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append((self.rel(path), reason))


def _check_arguments(
    task: str, val_fraction: float, test_fraction: float, min_images_per_class: int
) -> None:
    if task not in get_args(TaskType):
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(get_args(TaskType))}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
            "and leave something for training"
        )
    if min_images_per_class < 1:
        raise DataError(f"min_images_per_class must be at least 1, got {min_images_per_class}")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in IGNORED_FOLDERS


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _children(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible subfolders and image files of a folder, sorted by name."""
    dirs: list[Path] = []
    files: list[Path] = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if not _visible(child):
            continue
        if child.is_dir():
            dirs.append(child)
        elif child.is_file() and _is_image_name(child):
            files.append(child)
    return dirs, files


def _images_under(folder: Path, seen: set[str] | None = None) -> list[Path]:
    """Image files in a folder and its subfolders (symlinks followed, loops cut), sorted."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    dirs, files = _children(folder)
    for sub in dirs:
        files.extend(_images_under(sub, seen))
    return files


def _split_folders(root: Path, found: _Found) -> dict[str | None, Path]:
    """``{"train": root/train, ...}`` when the root holds split folders, else ``{None: root}``."""
    dirs, _ = _children(root)
    named = {d.name.lower(): d for d in dirs}
    splits = {name: SPLIT_ALIASES[name] for name in named if name in SPLIT_ALIASES}
    # A class may be called "train" (vehicles): split folders need train plus val or test.
    if "train" not in splits.values() or len(set(splits.values())) < 2:
        return {None: root}
    others = sorted(d.name for d in dirs if d.name.lower() not in SPLIT_ALIASES)
    if others:
        found.problems.append(
            f"{root} mixes split folders ({', '.join(sorted(named[n].name for n in splits))}) "
            f"with other folders ({', '.join(others)}): put every class folder inside the "
            "split folders"
        )
    by_split: dict[str | None, Path] = {}
    for name, split in sorted(splits.items()):
        if split in by_split:
            found.problems.append(
                f"{by_split[split].name}/ and {named[name].name}/ are both the {split} split; "
                "keep one"
            )
        else:
            by_split[split] = named[name]
    return {s: by_split[s] for s in SPLITS if s in by_split}


def _loose_images(base: Path, found: _Found, what: str) -> None:
    """Images lying next to the class folders belong to no class: skip them, with a warning."""
    _, files = _children(base)
    for path in files:
        found.skip(path, f"not in a {what} folder")
    if files:
        found.warnings.append(
            f"{len(files)} images directly in {found.rel(base) or '.'}/ are not in a {what} "
            f"folder and were left out: {', '.join(_first(found.rel(p) for p in files))}"
        )


def _discover_class_folders(root: Path, bases: dict[str | None, Path], found: _Found) -> None:
    """A folder per class (per label for multilabel), in each split folder."""
    found.layout = "class folders"
    classes: set[str] = set()
    for split, base in bases.items():
        if split is None:
            _loose_images(root, found, "class")
        else:
            _loose_images(base, found, "class")
        dirs, _ = _children(base)
        for folder in dirs:
            classes.add(folder.name)
            images = _images_under(folder)
            found.files_per_class[folder.name] += len(images)
            for path in images:
                found.entries.append(_Entry(path, (folder.name,), split, found.rel(path)))
    if bases.keys() != {None}:
        _loose_images(root, found, "split")
    found.classes = sorted(classes)


def _discover_nested(root: Path, bases: dict[str | None, Path], found: _Found) -> None:
    """Hierarchical: nested folders; inner folders are taxonomy nodes, the others leaves."""
    found.layout = "nested folders"
    parents: dict[str, str | None] = {}
    where: dict[str, str] = {}  # node -> first folder that defined it

    def visit(folder: Path, parent: str | None, split: str | None) -> None:
        name = folder.name
        rel = found.rel(folder)
        if name in parents and parents[name] != parent:
            found.problems.append(
                f"folder name {name!r} is used twice in the taxonomy, under "
                f"{_node_label(parents[name])} ({where[name]}/) and under {_node_label(parent)} "
                f"({rel}/): node names must be unique, rename one"
            )
            return
        parents.setdefault(name, parent)
        where.setdefault(name, rel)
        dirs, files = _children(folder)
        if dirs:
            if files:
                found.problems.append(
                    f"{len(files)} images directly in the inner folder {rel}/ (it has "
                    f"subfolders, so it is a taxonomy node, not a class): "
                    f"{', '.join(_first(found.rel(p) for p in files))} — move them into a leaf "
                    f"subfolder (e.g. {rel}/other_{name}/) or delete them"
                )
            for sub in dirs:
                visit(sub, name, split)
        else:
            found.files_per_class[name] += len(files)
            for path in files:
                found.entries.append(_Entry(path, (name,), split, found.rel(path)))

    for split, base in bases.items():
        _loose_images(base, found, "class")
        for top in _children(base)[0]:
            visit(top, None, split)
    if bases.keys() != {None}:
        _loose_images(root, found, "split")
    inner = set(parents.values())
    leaves = [n for n in parents if n not in inner]
    # A leaf in one split must not be an inner node in another.
    clashing = sorted({e.labels[0] for e in found.entries} & inner)
    for name in clashing:
        found.problems.append(
            f"{name!r} holds images in one place and subfolders in another ({where[name]}/): "
            "a node is either a class (images) or an inner node (subfolders)"
        )
    found.classes = sorted(leaves)
    found.taxonomy = parents
    if not inner and len(leaves) > 1:
        found.warnings.append(
            "the folders are not nested, so the taxonomy is flat (every class is top level): "
            "this is a multiclass problem; nest folders (root/insect/aphid/) or pass a "
            "taxonomy file"
        )


def _node_label(node: str | None) -> str:
    return "the top level" if node is None else repr(node)


def _read_taxonomy_file(path: Path) -> tuple[dict[str, str | None], list[str]]:
    """Parse a taxonomy file: JSON ``{node: parent | null}`` or text lines ``a/b/c``."""
    if not path.is_file():
        raise DataError(f"taxonomy file {path}: no such file")
    text = path.read_text(encoding="utf-8")
    problems: list[str] = []
    parents: dict[str, str | None] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"taxonomy file {path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f'taxonomy file {path}: expected an object {{"node": "parent" | null}}')
        for node, parent in data.items():
            if not (parent is None or isinstance(parent, str)) or not node.strip():
                problems.append(
                    f"taxonomy file {path}: {node!r}: the parent must be a node name or null, "
                    f"got {parent!r}"
                )
                continue
            parents[node] = parent
        for node, parent in parents.items():
            if parent is not None and parent not in parents:
                problems.append(
                    f"taxonomy file {path}: parent {parent!r} of {node!r} is not a node; add "
                    f'"{parent}": null (top level) or its own parent'
                )
        problems.extend(f"taxonomy file {path}: {p}" for p in _cycles(parents))
        return parents, problems
    line_of: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.strip("/").split("/")]
        if any(not p for p in parts):
            problems.append(f"taxonomy file {path} line {number}: empty node name in {raw!r}")
            continue
        for parent, node in zip([None, *parts[:-1]], parts, strict=True):
            if node in parents and parents[node] != parent:
                problems.append(
                    f"taxonomy file {path} line {number}: {node!r} is under "
                    f"{_node_label(parent)} here but under {_node_label(parents[node])} on line "
                    f"{line_of[node]}"
                )
            else:
                parents.setdefault(node, parent)
                line_of.setdefault(node, number)
    problems.extend(f"taxonomy file {path}: {p}" for p in _cycles(parents))
    return parents, problems


def _cycles(parents: dict[str, str | None]) -> list[str]:
    """Every node whose chain of parents loops, once per loop."""
    problems = []
    reported: set[str] = set()
    for node in parents:
        chain = [node]
        parent = parents.get(node)
        while parent is not None and parent in parents:
            if parent in chain:
                loop = chain[chain.index(parent) :]
                if not reported & set(loop):
                    problems.append(f"cycle {' -> '.join([*loop, parent])}")
                    reported.update(loop)
                break
            chain.append(parent)
            parent = parents[parent]
    return problems


def _apply_taxonomy_file(path: Path, found: _Found) -> None:
    """Flat class folders + a taxonomy file: every folder must be a leaf of the taxonomy."""
    found.layout = f"class folders + taxonomy file {path.name}"
    parents, problems = _read_taxonomy_file(path)
    found.problems.extend(problems)
    if problems:
        return
    inner = {p for p in parents.values() if p is not None}
    for name in found.classes:
        if name not in parents:
            found.problems.append(
                f"class folder {name}/ is not in the taxonomy file {path}: add it with its parent"
            )
        elif name in inner:
            children = sorted(n for n, p in parents.items() if p == name)
            found.problems.append(
                f"class folder {name}/ is an inner node of the taxonomy (parent of "
                f"{', '.join(_first(children))}): images must be in leaf folders"
            )
    leaves = [n for n in parents if n not in inner]
    unused = [n for n in leaves if n not in found.classes]
    if unused:
        found.warnings.append(
            f"{len(unused)} leaves of the taxonomy have no image folder and are left out of the "
            f"model: {', '.join(_first(unused))}"
        )
    found.taxonomy = parents


def _discover_multilabel(
    root: Path, bases: dict[str | None, Path], labels_csv: Path | None, found: _Found
) -> None:
    csv_files: list[tuple[Path, str | None]] = []
    if labels_csv is not None:
        if not Path(labels_csv).is_file():
            raise DataError(f"labels CSV {labels_csv}: no such file")
        csv_files = [(Path(labels_csv), None)]
    elif (root / CSV_NAME).is_file():
        csv_files = [(root / CSV_NAME, None)]
    elif bases.keys() != {None} and any((b / CSV_NAME).is_file() for b in bases.values()):
        for split, base in bases.items():
            if (base / CSV_NAME).is_file():
                csv_files.append((base / CSV_NAME, split))
            else:
                found.problems.append(
                    f"{found.rel(base)}/ has no {CSV_NAME} while other split folders have one"
                )
    if not csv_files:
        _discover_class_folders(root, bases, found)
        found.layout = "label folders"
        # A "none" folder holds all-negative images: it is not a label.
        found.classes = [c for c in found.classes if c.lower() not in UNLABELED_FOLDERS]
        for entry in found.entries:
            if entry.labels[0].lower() in UNLABELED_FOLDERS:
                entry.labels = ()
        for name in [c for c in found.files_per_class if c.lower() in UNLABELED_FOLDERS]:
            found.files_per_class[""] += found.files_per_class.pop(name)
        return
    found.layout = "labels CSV"
    listed: set[Path] = set()
    for csv_path, split in csv_files:
        _read_labels_csv(csv_path, split, bases, found, listed)
    # Labels seen only on missing files count too: they are then reported as too rare.
    found.classes = sorted(label for label in found.files_per_class if label)
    unlisted = [p for b in bases.values() for p in _images_under(b) if p.resolve() not in listed]
    if unlisted:
        found.warnings.append(
            f"{len(unlisted)} images under {root} are not listed in the labels CSV and were "
            f"left out: {', '.join(_first(found.rel(p) for p in unlisted))}"
        )


def _read_labels_csv(
    csv_path: Path,
    split: str | None,
    bases: dict[str | None, Path],
    found: _Found,
    listed: set[Path],
) -> None:
    """Rows ``path,label1;label2`` -> entries; problems name the file and line."""
    name = found.rel(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"labels CSV {csv_path}: cannot be read ({exc})") from None
    first_line: dict[Path, int] = {}
    split_dirs = {b.resolve(): s for s, b in bases.items() if s is not None}
    header_seen = False
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not header_seen:
            header_seen = True
            if row[0].strip().lower() in CSV_HEADER_NAMES:
                continue
        if len(row) > 2:
            found.problems.append(
                f"{name} line {number}: {len(row)} columns, expected path,labels (separate "
                "labels with ';')"
            )
            continue
        path = csv_path.parent / row[0].strip()
        labels = tuple(sorted({p.strip() for p in (row[1] if len(row) > 1 else "").split(";")}))
        labels = tuple(label for label in labels if label)
        resolved = path.resolve()
        if resolved in first_line:
            found.problems.append(
                f"{name} line {number}: {row[0].strip()} is already listed on line "
                f"{first_line[resolved]}; put all its labels on one line, separated by ';'"
            )
            continue
        first_line[resolved] = number
        listed.add(resolved)
        entry_split = split
        if split is None and split_dirs:
            entry_split = next(
                (s for d, s in split_dirs.items() if resolved.is_relative_to(d)), None
            )
            if entry_split is None:
                found.problems.append(
                    f"{name} line {number}: {row[0].strip()} is in none of the split folders "
                    f"({', '.join(b.name for b in bases.values())})"
                )
                continue
        for label in labels or ("",):
            found.files_per_class[label] += 1
        if not path.is_file():
            reason = f"listed in {name} line {number} but not found"
            found.skip(path, reason)
            for label in labels or ("",):
                found.bad[label].append((found.rel(path), reason))
            continue
        found.entries.append(_Entry(path, labels, entry_split, f"{name} line {number}"))


def _no_images_message(root: Path, task: str) -> str:
    layouts = {
        "binary": "root/<positive>/*.jpg and root/<negative>/*.jpg (e.g. cat/ and no_cat/)",
        "multiclass": "a folder per class: root/<class>/*.jpg",
        "hierarchical": "nested folders root/insect/aphid/*.jpg, or class folders plus a "
        "taxonomy file",
        "multilabel": f"root/{CSV_NAME} with lines path,label1;label2, or a folder per label",
    }
    try:
        has_images = any(_images_under(root))
    except OSError:
        has_images = False
    if has_images:
        return (
            f"{root}: images were found but not in the expected layout for --task {task}: "
            f"{layouts[task]}"
        )
    return (
        f"{root}: no images found (extensions: "
        f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Expected {layouts[task]}"
    )


# ---------------------------------------------------------------------------------------------
# Checking: read and decode every file once


_CheckResult = tuple[str, tuple[int, int]] | str  # (sha256, (height, width)) or the reason

# A marker that ends entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart
# marker or another fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_truncation(data: bytes) -> str | None:
    """Why a JPEG is truncated, or None. Walks the marker segments to the end-of-image marker
    (bytes after it, e.g. a phone's motion-photo trailer, are fine). Older OpenCV builds decode
    truncated JPEGs without error, filling the missing part with grey."""
    pos, size = 2, len(data)
    while True:
        while pos < size and data[pos] == 0xFF and pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 2 > size:
            return "truncated JPEG (no end-of-image marker)"
        if data[pos] != 0xFF:
            return None  # malformed in a way the decoder will judge
        marker = data[pos + 1]
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > size:
            return "truncated JPEG (no end-of-image marker)"
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > size:
            return "truncated JPEG (cut inside a header segment)"
        if marker != 0xDA:
            pos = end
            continue
        match = _JPEG_MARKER.search(data, end)
        if match is None:
            return "truncated JPEG (image data cut short, no end-of-image marker)"
        pos = match.start()


def _check_file(path: Path) -> _CheckResult:
    """Read, hash and decode one file (decoder flags as in ``device.inference.preprocess.read_image``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not data:
        return "empty file"
    if data[:3] == b"\xff\xd8\xff":
        reason = _jpeg_truncation(data)
        if reason:
            return reason
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        return f"cannot be decoded ({str(exc).strip().splitlines()[-1]})"
    if image is None or image.size == 0:
        kind = "image" if _looks_like_image(data) else "file"
        return f"not a readable image (corrupt or truncated {kind}, or an unsupported format)"
    return hashlib.sha256(data).hexdigest(), (int(image.shape[0]), int(image.shape[1]))


def _looks_like_image(data: bytes) -> bool:
    magic = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
    return data.startswith(magic)


def _parallel(
    fn: Callable[[_T], Any], items: Iterable[_T], progress: bool, desc: str
) -> Iterator[Any]:
    """``map(fn, items)`` in a thread pool, in order, with a tqdm bar on stderr."""
    from tqdm import tqdm

    items = list(items)
    workers = min(16, 2 * (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from tqdm(
            pool.map(fn, items),
            total=len(items),
            desc=desc,
            unit="img",
            file=sys.stderr,
            disable=not progress,
            leave=False,
        )


def _check_files(paths: list[Path], progress: bool) -> dict[Path, _CheckResult]:
    return dict(zip(paths, _parallel(_check_file, paths, progress, "Checking images"), strict=True))


# ---------------------------------------------------------------------------------------------
# From checked files to samples


def _deduplicate(
    found: _Found, checked: dict[Path, _CheckResult], task: str
) -> list[tuple[Sample, str | None]]:
    """Drop unreadable files and duplicates; one (sample, split) per distinct image and split.

    Identical bytes are one image. Same labels: keep the first file. Multilabel label folders:
    merge the labels. Different labels otherwise: an error naming both files.
    """
    by_hash: dict[str, list[_Entry]] = defaultdict(list)
    for entry in found.entries:
        result = checked[entry.path]
        if isinstance(result, str):
            found.skip(entry.path, result)
            for label in entry.labels or ("",):
                found.bad[label].append((found.rel(entry.path), result))
        else:
            by_hash[result[0]].append(entry)
    merge = task == "multilabel" and found.layout == "label folders"
    kept: dict[int, tuple[Sample, str | None]] = {}  # position of the first entry -> sample
    position = {id(e): i for i, e in enumerate(found.entries)}
    for group in by_hash.values():
        first_with: dict[tuple[str, ...], _Entry] = {}
        for entry in group:
            first_with.setdefault(entry.labels, entry)
        if merge and () in first_with and len(first_with) > 1:
            labeled = next(e for labels, e in first_with.items() if labels)
            found.problems.append(
                f"the same image is in a no-label folder and in a label folder: "
                f"{first_with[()].where} and {labeled.where}; remove the wrong one"
            )
        elif not merge and len(first_with) > 1:
            first = group[0]
            what = "listed with different labels" if task == "multilabel" else "in two classes"
            for entry in list(first_with.values())[1:]:
                found.problems.append(
                    f"the same image is {what}: {first.where} ({_labels_text(first.labels)}) "
                    f"and {entry.where} ({_labels_text(entry.labels)}); remove the wrong one"
                )
        by_split: dict[str | None, list[_Entry]] = defaultdict(list)
        for entry in group:
            by_split[entry.split].append(entry)
        for split, entries in by_split.items():
            first = entries[0]
            labels = tuple(sorted({x for e in entries for x in e.labels})) if merge else None
            kept[position[id(first)]] = (Sample(first.path, labels or first.labels), split)
            seen: dict[tuple[str, ...], _Entry] = {}
            for entry in entries:
                if entry.labels in seen:
                    found.skip(entry.path, f"duplicate of {seen[entry.labels].where}")
                else:
                    seen[entry.labels] = entry
        if len(by_split) > 1:
            found.warnings.append(
                "the same image is in several split folders (test figures are optimistic when "
                "test images are also training images): "
                + ", ".join(entries[0].where for entries in by_split.values())
            )
    return [kept[i] for i in sorted(kept)]


def _labels_text(labels: tuple[str, ...]) -> str:
    return ";".join(labels) if labels else "no labels"


def _check_counts(
    found: _Found, samples: list[tuple[Sample, str | None]], task: str, min_images: int
) -> None:
    """Too many unreadable files, too few images, a single class (or label on every image)."""
    groups = found.classes  # class folders, or every label listed (multilabel)
    counts = Counter(label for sample, _ in samples for label in sample.labels)
    what = "label" if task == "multilabel" else "class"
    for label in [*groups, ""]:
        bad = found.bad.get(label, [])
        total = found.files_per_class.get(label, 0)
        if bad and total and len(bad) > MAX_BAD_FRACTION * total:
            name = f"{what} {label!r}" if label else "images without labels"
            found.problems.append(
                f"{name}: {len(bad)} of {total} files cannot be used "
                f"({100 * len(bad) / total:.0f}%, more than {100 * MAX_BAD_FRACTION:.0f}% "
                "suggests a copy or export problem): "
                + "; ".join(_first(f"{p}: {r}" for p, r in bad))
            )
    for label in groups:
        n = counts.get(label, 0)
        if n < min_images:
            bad = found.bad.get(label, [])
            unusable = f" ({len(bad)} more cannot be read)" if bad else ""
            hint = (
                f"add images to {label}/"
                if found.layout != "labels CSV"
                else f"label more images with {label!r}"
            )
            found.problems.append(
                f"{what} {label!r} has {n} usable images{unusable}; at least {min_images} are "
                f"needed (min_images_per_class): {hint}"
            )
    if task == "multilabel":
        n_images = len(samples)
        for label in groups:
            if n_images and counts.get(label, 0) == n_images:
                found.problems.append(
                    f"label {label!r} is on every image: the model also needs images without it"
                )
        if not groups and found.entries:
            found.problems.append(
                "no labels at all: every image has an empty label list; give each image its "
                "labels (path,label1;label2)"
            )
        return
    if len(groups) == 1:
        only = groups[0]
        if task == "binary":
            found.problems.append(
                f"only one class folder, {only}/: a binary classifier needs a second folder of "
                f"images WITHOUT the object, e.g. no_{only}/ with pictures of the same scenes "
                f"where no {only} is present"
            )
        else:
            found.problems.append(
                f"only one class, {only!r}: a classifier needs at least two. Add a folder of "
                "images that show none of the classes (e.g. background/), or use --task binary "
                f"with a folder of images without {only}"
            )
    elif task == "binary" and len(groups) > 2:
        found.problems.append(
            f"--task binary needs exactly two class folders (with and without the object); "
            f"found {len(groups)}: {', '.join(groups)}. Use --task multiclass, or remove the "
            "extra folders"
        )


def _is_negative_name(name: str) -> bool:
    normal = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return normal in NEGATIVE_NAMES or normal.startswith(NEGATIVE_PREFIXES)


def _output_labels(
    task: str,
    found: _Found,
    samples: list[tuple[Sample, str | None]],
    positive: str | None,
) -> tuple[list[str], dict[str, str | None] | None]:
    """The model's output order (and the pruned taxonomy for hierarchical)."""
    if task == "binary":
        classes = found.classes
        if len(classes) != 2:
            return list(classes), None  # already reported
        if positive is not None:
            if positive not in classes:
                found.problems.append(
                    f"positive class {positive!r} is not one of the class folders "
                    f"({', '.join(classes)})"
                )
                return list(classes), None
        else:
            candidates = [c for c in classes if not _is_negative_name(c)]
            if len(candidates) != 1:
                why = "neither" if len(candidates) == 2 else "both"
                found.problems.append(
                    f"binary: cannot tell which of {classes[0]!r} and {classes[1]!r} is the "
                    f"positive class ({why} is named like a negative: no, not_*, none, empty, "
                    f"background, ...); pass --positive {classes[0]} or --positive {classes[1]}"
                )
                return list(classes), None
            positive = candidates[0]
        negative = next(c for c in classes if c != positive)
        return [negative, positive], None
    if task == "hierarchical":
        assert found.taxonomy is not None or found.problems
        taxonomy = found.taxonomy or {}
        leaves = {s.labels[0] for s, _ in samples} | set(found.classes)
        return _tree_order(taxonomy, leaves)
    return list(found.classes), None


def _tree_order(
    parents: dict[str, str | None], leaves: set[str]
) -> tuple[list[str], dict[str, str | None]]:
    """Leaves depth-first (siblings sorted) and the taxonomy restricted to their ancestors."""
    keep: set[str] = set()
    for leaf in leaves:
        node: str | None = leaf
        while node is not None and node in parents and node not in keep:
            keep.add(node)
            node = parents[node]
    children: dict[str | None, list[str]] = defaultdict(list)
    for node in sorted(keep):
        children[parents.get(node)].append(node)
    order: list[str] = []
    taxonomy: dict[str, str | None] = {}

    def walk(parent: str | None) -> None:
        for node in children.get(parent, []):
            taxonomy[node] = parent
            if node in children:
                walk(node)
            else:
                order.append(node)

    walk(None)
    return [n for n in order if n in leaves], taxonomy


# ---------------------------------------------------------------------------------------------
# Splitting


def _stratum_keys(samples: list[Sample], task: str) -> list[str]:
    if task != "multilabel":
        return [s.labels[0] for s in samples]
    frequency = Counter(label for s in samples for label in s.labels)
    # The rarest label: rare labels then reach every split. "" = images without labels.
    return [min(s.labels, key=lambda x: (frequency[x], x)) if s.labels else "" for s in samples]


def _random_split(
    samples: list[Sample], task: str, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Sample]]:
    """Seeded split, stratified per class (multilabel: per rarest label), listing order kept."""
    rng = np.random.default_rng(seed)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(_stratum_keys(samples, task)):
        strata[key].append(i)
    assignment = ["train"] * len(samples)
    for key in sorted(strata):
        members = strata[key]
        n = len(members)
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
        while n - n_val - n_test < 1:  # always keep one for training
            if n_test >= n_val and n_test > 0:
                n_test -= 1
            else:
                n_val -= 1
        order = rng.permutation(n)
        for rank, j in enumerate(order):
            if rank < n_val:
                assignment[members[j]] = "val"
            elif rank < n_val + n_test:
                assignment[members[j]] = "test"
    out: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for sample, split in zip(samples, assignment, strict=True):
        out[split].append(sample)
    return out


def _make_splits(
    found: _Found,
    samples: list[tuple[Sample, str | None]],
    task: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bases: dict[str | None, Path],
) -> tuple[dict[str, list[Sample]], str]:
    if bases.keys() == {None}:
        splits = _random_split([s for s, _ in samples], task, val_fraction, test_fraction, seed)
        source = f"random, stratified (seed {seed}, val {val_fraction:g}, test {test_fraction:g})"
        return splits, source
    given: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for sample, split in samples:
        given[split or "train"].append(sample)
    missing = [s for s in ("val", "test") if s not in bases]
    if missing:
        fractions = {
            "val": val_fraction if "val" in missing else 0.0,
            "test": test_fraction if "test" in missing else 0.0,
        }
        carved = _random_split(given["train"], task, fractions["val"], fractions["test"], seed)
        for name in SPLITS:
            if name == "train" or name in missing:
                given[name] = carved[name]
        found.warnings.append(
            f"no {' or '.join(f'{m}/' for m in missing)} folder: "
            + ", ".join(f"{m} is {100 * fractions[m]:g}% of train/" for m in missing)
            + f" (seed {seed})"
        )
    present = {name: {label for s in given[name] for label in s.labels} for name in SPLITS}
    for name in ("val", "test"):
        only_there = sorted(present[name] - present["train"])
        if only_there:
            found.problems.append(
                f"classes in {name}/ but not in train/: {', '.join(only_there)} — the model "
                "cannot learn a class it never sees in training"
            )
        absent = sorted(present["train"] - present[name])
        if absent and given[name]:
            found.warnings.append(f"classes with no images in {name}/: {', '.join(_first(absent))}")
    source = "split folders " + ", ".join(f"{b.name}/" for b in bases.values())
    if missing:
        source += f" (+ {', '.join(missing)} carved from train/, seed {seed})"
    return given, source


def _imbalance_warning(
    samples: list[tuple[Sample, str | None]], labels: list[str], task: str, found: _Found
) -> None:
    counts = Counter(label for s, _ in samples for label in s.labels)
    present = {label: counts.get(label, 0) for label in labels}
    if len(present) < 2 or min(present.values()) == 0:
        return
    big = max(present, key=lambda k: present[k])
    small = min(present, key=lambda k: present[k])
    ratio = present[big] / present[small]
    if ratio >= IMBALANCE_RATIO:
        what = "label" if task == "multilabel" else "class"
        found.warnings.append(
            f"{what} imbalance: {big!r} has {present[big]} images, {small!r} has "
            f"{present[small]} ({ratio:.1f}:1); the smaller {what}es are weighted up in "
            "training, but more images of them would help more"
        )


# ---------------------------------------------------------------------------------------------
# Small helpers


def _relative(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            return str(path)
    return rel.as_posix() if str(rel) != "." else ""


def _first(items: Iterable[str], count: int = _LISTED) -> list[str]:
    """The first ``count`` items, and "... and N more" when there are more."""
    items = list(items)
    if len(items) <= count:
        return items
    return [*items[:count], f"... and {len(items) - count} more"]


def _error(root: Path, task: str, problems: list[str]) -> DataError:
    unique = list(dict.fromkeys(problems))
    plural = "s" if len(unique) > 1 else ""
    message = f"cannot use the dataset {root} (--task {task}), {len(unique)} problem{plural}:\n"
    message += "\n".join(f"  - {p}" for p in _first(unique, _LISTED_PROBLEMS))
    return DataError(message, unique)
