"""Checking: every listed file is read and decoded once (JPEG truncation caught), byte-identical
files are one image, and the counts per class must allow training."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from training.data.samples import Entry, Found, Sample, first_few

MAX_BAD_FRACTION = 0.2  # more unreadable files than this in a class fails the run
IMBALANCE_RATIO = 3.0  # warn when the largest class is this many times the smallest

CheckResult = tuple[str, tuple[int, int]] | str  # (sha256, (height, width)) or the reason
# One (sample, the split folder it came from) per distinct image and split.
SplitSamples = list[tuple[Sample, str | None]]

_T = TypeVar("_T")

# A marker that ends entropy-coded data: 0xFF followed by anything but a stuffed 0x00, a restart
# marker or another fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


# ---------------------------------------------------------------------------------------------
# Reading and decoding


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


def _check_file(path: Path) -> CheckResult:
    """Read, hash and decode one file (decoder flags as in
    ``device.inference.preprocess.read_image``)."""
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


def parallel_map(
    fn: Callable[[_T], Any], items: Iterable[_T], progress: bool, desc: str
) -> Iterator[Any]:
    """``map(fn, items)`` in a thread pool, in order, with a tqdm bar on stderr (OpenCV
    releases the GIL, so decoding runs in parallel)."""
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


def check_files(paths: list[Path], progress: bool) -> dict[Path, CheckResult]:
    """Every file read and decoded once: its hash and size, or why it cannot be used."""
    results = parallel_map(_check_file, paths, progress, "Checking images")
    return dict(zip(paths, results, strict=True))


def image_sizes(
    samples: SplitSamples, checked: dict[Path, CheckResult]
) -> dict[Path, tuple[int, int]]:
    """(height, width) of every kept image."""
    sizes: dict[Path, tuple[int, int]] = {}
    for sample, _ in samples:
        result = checked[sample.path]
        if not isinstance(result, str):
            sizes[sample.path] = result[1]
    return sizes


# ---------------------------------------------------------------------------------------------
# From checked files to samples


def deduplicate(found: Found, checked: dict[Path, CheckResult], task: str) -> SplitSamples:
    """Drop unreadable files and duplicates; one (sample, split) per distinct image and split.

    Identical bytes are one image. Same labels: keep the first file. Multilabel label folders:
    merge the labels. Different labels otherwise: an error naming both files.
    """
    by_hash: dict[str, list[Entry]] = defaultdict(list)
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
        _label_conflicts(group, merge, task, found)
        by_split: dict[str | None, list[Entry]] = defaultdict(list)
        for entry in group:
            by_split[entry.split].append(entry)
        for split, entries in by_split.items():
            first = entries[0]
            kept[position[id(first)]] = (_one_sample(entries, merge), split)
            _skip_duplicates(entries, found)
        if len(by_split) > 1:
            found.warnings.append(
                "the same image is in several split folders (test figures are optimistic when "
                "test images are also training images): "
                + ", ".join(entries[0].where for entries in by_split.values())
            )
    return [kept[i] for i in sorted(kept)]


def _label_conflicts(group: list[Entry], merge: bool, task: str, found: Found) -> None:
    """The same bytes listed with different labels: an error, unless label folders merge."""
    first_with: dict[tuple[str, ...], Entry] = {}
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


def _one_sample(entries: list[Entry], merge: bool) -> Sample:
    """The sample of identical files in one split: the first file, labels merged if asked."""
    first = entries[0]
    labels = tuple(sorted({x for e in entries for x in e.labels})) if merge else None
    return Sample(first.path, labels or first.labels)


def _skip_duplicates(entries: list[Entry], found: Found) -> None:
    seen: dict[tuple[str, ...], Entry] = {}
    for entry in entries:
        if entry.labels in seen:
            found.skip(entry.path, f"duplicate of {seen[entry.labels].where}")
        else:
            seen[entry.labels] = entry


def _labels_text(labels: tuple[str, ...]) -> str:
    return ";".join(labels) if labels else "no labels"


# ---------------------------------------------------------------------------------------------
# Counts


def check_counts(found: Found, samples: SplitSamples, task: str, min_images: int) -> None:
    """Too many unreadable files, too few images, a single class (or label on every image)."""
    counts = Counter(label for sample, _ in samples for label in sample.labels)
    _check_bad_fraction(found, task)
    _check_min_images(found, counts, task, min_images)
    if task == "multilabel":
        _check_multilabel_counts(found, counts, len(samples))
    else:
        _check_class_count(found, task)


def _check_bad_fraction(found: Found, task: str) -> None:
    what = "label" if task == "multilabel" else "class"
    for label in [*found.classes, ""]:
        bad = found.bad.get(label, [])
        total = found.files_per_class.get(label, 0)
        if bad and total and len(bad) > MAX_BAD_FRACTION * total:
            name = f"{what} {label!r}" if label else "images without labels"
            found.problems.append(
                f"{name}: {len(bad)} of {total} files cannot be used "
                f"({100 * len(bad) / total:.0f}%, more than {100 * MAX_BAD_FRACTION:.0f}% "
                "suggests a copy or export problem): "
                + "; ".join(first_few(f"{p}: {r}" for p, r in bad))
            )


def _check_min_images(found: Found, counts: Counter[str], task: str, min_images: int) -> None:
    what = "label" if task == "multilabel" else "class"
    for label in found.classes:  # class folders, or every label listed (multilabel)
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


def _check_multilabel_counts(found: Found, counts: Counter[str], n_images: int) -> None:
    for label in found.classes:
        if n_images and counts.get(label, 0) == n_images:
            found.problems.append(
                f"label {label!r} is on every image: the model also needs images without it"
            )
    if not found.classes and found.entries:
        found.problems.append(
            "no labels at all: every image has an empty label list; give each image its "
            "labels (path,label1;label2)"
        )


def _check_class_count(found: Found, task: str) -> None:
    groups = found.classes
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


def imbalance_warning(samples: SplitSamples, labels: list[str], task: str, found: Found) -> None:
    """Warn when the largest class has :data:`IMBALANCE_RATIO` times the smallest's images."""
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
