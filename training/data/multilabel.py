"""Multilabel layouts: the ``labels.csv`` format (its one reader and one writer) and label
folders, where the same image may sit in several folders."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data.layouts import discover_class_folders, images_under
from training.data.samples import DataError, Entry, Found, first_few

CSV_NAME = "labels.csv"
CSV_HEADER_NAMES = frozenset({"path", "file", "filename", "file_name", "filepath", "image"})
# Multilabel folder layout: a folder with these names holds images that have none of the labels.
UNLABELED_FOLDERS = frozenset({"none", "nothing", "empty", "background", "negative", "no_labels"})


# ---------------------------------------------------------------------------------------------
# The labels.csv format


@dataclass(frozen=True)
class LabelsRow:
    """One row of a labels CSV."""

    line: int
    text: str  # the path as written in the CSV
    path: Path  # that path, relative to the CSV's folder
    labels: tuple[str, ...]  # sorted, without duplicates; () is an all-negative image


def parse_labels_csv(
    csv_path: Path, name: str | None = None
) -> tuple[list[LabelsRow], list[tuple[int, str]]]:
    """Rows ``path,label1;label2`` (header optional, ``#`` comments, blank lines skipped).

    Returns the rows and ``(line, problem)`` for each bad row; problems name the file as
    ``name`` (default: ``csv_path``). Raises :class:`DataError` if the file cannot be read.
    """
    name = str(csv_path) if name is None else name
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"labels CSV {csv_path}: cannot be read ({exc})") from None
    parsed: list[LabelsRow] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[Path, int] = {}
    header_seen = False
    for number, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not header_seen:
            header_seen = True
            if row[0].strip().lower() in CSV_HEADER_NAMES:
                continue
        if len(row) > 2:
            problems.append(
                (
                    number,
                    f"{name} line {number}: {len(row)} columns, expected path,labels (separate "
                    "labels with ';')",
                )
            )
            continue
        text = row[0].strip()
        path = csv_path.parent / text
        labels = tuple(sorted({p.strip() for p in (row[1] if len(row) > 1 else "").split(";")}))
        resolved = path.resolve()
        if resolved in first_line:
            problems.append(
                (
                    number,
                    f"{name} line {number}: {text} is already listed on line "
                    f"{first_line[resolved]}; put all its labels on one line, separated by ';'",
                )
            )
            continue
        first_line[resolved] = number
        parsed.append(LabelsRow(number, text, path, tuple(label for label in labels if label)))
    return parsed, problems


def read_labels_csv(path: Path) -> dict[str, list[str]]:
    """A labels CSV as ``{path as written: its labels}``; raises :class:`DataError` on a bad row."""
    rows, problems = parse_labels_csv(path)
    if problems:
        messages = [message for _, message in problems]
        raise DataError(f"labels CSV {path}: " + "; ".join(first_few(messages)), messages)
    return {row.text: list(row.labels) for row in rows}


def write_labels_csv(path: Path, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    """A multilabel CSV: header ``path,labels``, labels joined with ``;``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels"])
        for rel, labels in rows:
            writer.writerow([rel, ";".join(labels)])


# ---------------------------------------------------------------------------------------------
# Discovery


def discover_multilabel(
    root: Path, bases: dict[str | None, Path], labels_csv: Path | None, found: Found
) -> None:
    """A labels CSV (given, at the root, or one per split folder), else label folders."""
    csv_files = _csv_files(root, bases, labels_csv, found)
    if not csv_files:
        _discover_label_folders(root, bases, found)
        return
    found.layout = "labels CSV"
    listed: set[Path] = set()
    for csv_path, split in csv_files:
        _add_csv_entries(csv_path, split, bases, found, listed)
    # Labels seen only on missing files count too: they are then reported as too rare.
    found.classes = sorted(label for label in found.files_per_class if label)
    unlisted = [p for b in bases.values() for p in images_under(b) if p.resolve() not in listed]
    if unlisted:
        found.warnings.append(
            f"{len(unlisted)} images under {root} are not listed in the labels CSV and were "
            f"left out: {', '.join(first_few(found.rel(p) for p in unlisted))}"
        )


def _csv_files(
    root: Path, bases: dict[str | None, Path], labels_csv: Path | None, found: Found
) -> list[tuple[Path, str | None]]:
    """The labels CSVs to read, each with its split folder (None: the split is not given)."""
    if labels_csv is not None:
        if not Path(labels_csv).is_file():
            raise DataError(f"labels CSV {labels_csv}: no such file")
        return [(Path(labels_csv), None)]
    if (root / CSV_NAME).is_file():
        return [(root / CSV_NAME, None)]
    csv_files: list[tuple[Path, str | None]] = []
    if bases.keys() != {None} and any((b / CSV_NAME).is_file() for b in bases.values()):
        for split, base in bases.items():
            if (base / CSV_NAME).is_file():
                csv_files.append((base / CSV_NAME, split))
            else:
                found.problems.append(
                    f"{found.rel(base)}/ has no {CSV_NAME} while other split folders have one"
                )
    return csv_files


def _discover_label_folders(root: Path, bases: dict[str | None, Path], found: Found) -> None:
    discover_class_folders(root, bases, found)
    found.layout = "label folders"
    # A "none" folder holds all-negative images: it is not a label.
    found.classes = [c for c in found.classes if c.lower() not in UNLABELED_FOLDERS]
    for entry in found.entries:
        if entry.labels[0].lower() in UNLABELED_FOLDERS:
            entry.labels = ()
    for name in [c for c in found.files_per_class if c.lower() in UNLABELED_FOLDERS]:
        found.files_per_class[""] += found.files_per_class.pop(name)


def _add_csv_entries(
    csv_path: Path,
    split: str | None,
    bases: dict[str | None, Path],
    found: Found,
    listed: set[Path],
) -> None:
    """The rows of one CSV -> entries; problems name the file and line, in line order."""
    name = found.rel(csv_path)
    rows, problems = parse_labels_csv(csv_path, name)
    split_dirs = {b.resolve(): s for s, b in bases.items() if s is not None}
    for row in rows:
        resolved = row.path.resolve()
        listed.add(resolved)
        entry_split = split
        if split is None and split_dirs:
            entry_split = next(
                (s for d, s in split_dirs.items() if resolved.is_relative_to(d)), None
            )
            if entry_split is None:
                problems.append(
                    (
                        row.line,
                        f"{name} line {row.line}: {row.text} is in none of the split folders "
                        f"({', '.join(b.name for b in bases.values())})",
                    )
                )
                continue
        for label in row.labels or ("",):
            found.files_per_class[label] += 1
        if not row.path.is_file():
            reason = f"listed in {name} line {row.line} but not found"
            found.skip(row.path, reason)
            for label in row.labels or ("",):
                found.bad[label].append((found.rel(row.path), reason))
            continue
        found.entries.append(Entry(row.path, row.labels, entry_split, f"{name} line {row.line}"))
    found.problems.extend(message for _, message in sorted(problems, key=lambda p: p[0]))
