"""Splitting: the given split folders (a missing val/ or test/ carved out of train/), or a
seeded random split stratified by class (multilabel: by each image's rarest label)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from training.data.checks import SplitSamples
from training.data.layouts import SPLITS
from training.data.samples import Found, Sample, first_few


def _stratum_keys(samples: list[Sample], task: str) -> list[str]:
    if task != "multilabel":
        return [s.labels[0] for s in samples]
    frequency = Counter(label for s in samples for label in s.labels)
    # The rarest label: rare labels then reach every split. "" = images without labels.
    return [min(s.labels, key=lambda x: (frequency[x], x)) if s.labels else "" for s in samples]


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Images of one stratum for val and test: one each when there are enough, and always at
    least one left for training."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
    while n - n_val - n_test < 1:  # always keep one for training
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def random_split(
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
        n_val, n_test = _split_sizes(len(members), val_fraction, test_fraction)
        order = rng.permutation(len(members))
        for rank, j in enumerate(order):
            if rank < n_val:
                assignment[members[j]] = "val"
            elif rank < n_val + n_test:
                assignment[members[j]] = "test"
    out: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for sample, split in zip(samples, assignment, strict=True):
        out[split].append(sample)
    return out


def make_splits(
    found: Found,
    samples: SplitSamples,
    task: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bases: dict[str | None, Path],
) -> tuple[dict[str, list[Sample]], str]:
    """The train / val / test samples, and how the split was made (for the report)."""
    if bases.keys() == {None}:
        splits = random_split([s for s, _ in samples], task, val_fraction, test_fraction, seed)
        source = f"random, stratified (seed {seed}, val {val_fraction:g}, test {test_fraction:g})"
        return splits, source
    given: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for sample, split in samples:
        given[split or "train"].append(sample)
    missing = [s for s in ("val", "test") if s not in bases]
    if missing:
        _carve_missing(given, missing, found, task, val_fraction, test_fraction, seed)
    _check_split_classes(given, found)
    source = "split folders " + ", ".join(f"{b.name}/" for b in bases.values())
    if missing:
        source += f" (+ {', '.join(missing)} carved from train/, seed {seed})"
    return given, source


def _carve_missing(
    given: dict[str, list[Sample]],
    missing: list[str],
    found: Found,
    task: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> None:
    """A missing val/ or test/ folder: that split is carved out of train/, with a warning."""
    fractions = {
        "val": val_fraction if "val" in missing else 0.0,
        "test": test_fraction if "test" in missing else 0.0,
    }
    carved = random_split(given["train"], task, fractions["val"], fractions["test"], seed)
    for name in SPLITS:
        if name == "train" or name in missing:
            given[name] = carved[name]
    found.warnings.append(
        f"no {' or '.join(f'{m}/' for m in missing)} folder: "
        + ", ".join(f"{m} is {100 * fractions[m]:g}% of train/" for m in missing)
        + f" (seed {seed})"
    )


def _check_split_classes(given: dict[str, list[Sample]], found: Found) -> None:
    """A class only in val/ or test/ is an error; a class missing from them, a warning."""
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
            found.warnings.append(
                f"classes with no images in {name}/: {', '.join(first_few(absent))}"
            )
