"""Which images a folder holds, which of them are labeled, and what the model guessed.

The layouts are those ``kestrel train`` reads for a folder per class (:mod:`training.data`):
``DIR/<class>/**/*.jpg``, optionally inside ``train/`` / ``val/`` / ``test/`` split folders.
Images lying directly in ``DIR`` (or directly in a split folder) are *unlabeled*: that is where
``kestrel run``'s collect writes its frames and where ``kestrel label`` takes them from.
Hidden folders (the report, the label log) and tool litter (``__MACOSX``) are never read.

A sidecar is the JSON file next to an image with the same stem (``frame.jpg`` ->
``frame.json``), as collect writes it. The model's guess is read from it: a top-level
``"guess"`` (a label, or ``{"label": ...}``), else ``"label"``, else the best of ``"scores"``
(``{label: score}``), else the ``"state"``'s label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data.layouts import children, images_under, split_folders
from training.data.samples import Found


@dataclass(frozen=True)
class Item:
    """One image file: its class (None when unlabeled) and the model's guess, if any."""

    path: Path
    label: str | None
    guess: str | None = None

    def rel(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


def sidecar_path(image: Path) -> Path:
    """The JSON sidecar of an image (same name, ``.json``)."""
    return image.with_suffix(".json")


def read_guess(image: Path) -> str | None:
    """The model's guess from an image's sidecar; None without a readable one."""
    side = sidecar_path(image)
    if side.is_symlink():  # never followed: it may point anywhere
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return guess_from(data) if isinstance(data, dict) else None


def guess_from(data: dict[str, Any]) -> str | None:
    """The guess in a sidecar's JSON object (see the module docstring for the keys)."""
    for key in ("guess", "label"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("label") or value.get("name")
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and value:
            return value
    scores = data.get("scores")
    if isinstance(scores, dict):
        numeric = {k: v for k, v in scores.items() if isinstance(v, int | float)}
        if numeric:
            return max(numeric, key=lambda k: numeric[k])
    state = data.get("state")
    if isinstance(state, dict):
        return guess_from({k: v for k, v in state.items() if k in ("label", "labels")})
    if isinstance(state, str) and state:
        return state
    return None


def discover(root: Path) -> list[Item]:
    """Every image under ``root``, labeled by its class folder or unlabeled, sorted by path.

    Raises FileNotFoundError / NotADirectoryError for a bad ``root``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    found = Found(root)
    bases = split_folders(root, found)
    items: list[Item] = []
    places = [root] if None in bases else [root, *bases.values()]
    for base in places:
        dirs, files = children(base)
        items.extend(Item(p, None, read_guess(p)) for p in files)
        if base is root and None not in bases:
            continue  # the split folders themselves are not classes
        for folder in dirs:
            items.extend(Item(p, folder.name, read_guess(p)) for p in images_under(folder))
    return sorted(items, key=lambda item: item.path)


def classes_of(root: Path) -> list[str]:
    """The class folders that exist in ``root`` (split folders looked into), sorted."""
    found = Found(root)
    bases = split_folders(root, found)
    names = {folder.name for base in bases.values() for folder in children(base)[0]}
    return sorted(names)
