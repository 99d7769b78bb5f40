"""Discovery of the folder layouts: split folders, a folder per class, nested (hierarchical)
class folders. Nothing is decoded here; files are listed as :class:`Entry` records."""

from __future__ import annotations

import os
from pathlib import Path

from device.paths import is_image_file
from training.data.samples import Entry, Found, first_few
from training.data.taxonomy_file import node_label

# Folders that tools leave behind and that are never classes.
IGNORED_FOLDERS = frozenset({"__MACOSX", "@eaDir", "__pycache__", "$RECYCLE.BIN"})
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


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name not in IGNORED_FOLDERS


def children(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible subfolders and image files of a folder, sorted by name."""
    dirs: list[Path] = []
    files: list[Path] = []
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if not _visible(child):
            continue
        if child.is_dir():
            dirs.append(child)
        elif child.is_file() and is_image_file(child):
            files.append(child)
    return dirs, files


def images_under(folder: Path, seen: set[str] | None = None) -> list[Path]:
    """Image files in a folder and its subfolders (symlinks followed, loops cut), sorted."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in seen:
        return []
    seen.add(real)
    dirs, files = children(folder)
    for sub in dirs:
        files.extend(images_under(sub, seen))
    return files


def split_folders(root: Path, found: Found) -> dict[str | None, Path]:
    """``{"train": root/train, ...}`` when the root holds split folders, else ``{None: root}``."""
    dirs, _ = children(root)
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


def _loose_images(base: Path, found: Found, what: str) -> None:
    """Images lying next to the class folders belong to no class: skip them, with a warning."""
    _, files = children(base)
    for path in files:
        found.skip(path, f"not in a {what} folder")
    if files:
        found.warnings.append(
            f"{len(files)} images directly in {found.rel(base) or '.'}/ are not in a {what} "
            f"folder and were left out: {', '.join(first_few(found.rel(p) for p in files))}"
        )


def discover_class_folders(root: Path, bases: dict[str | None, Path], found: Found) -> None:
    """A folder per class (per label for multilabel), in each split folder."""
    found.layout = "class folders"
    classes: set[str] = set()
    for split, base in bases.items():
        if split is None:
            _loose_images(root, found, "class")
        else:
            _loose_images(base, found, "class")
        dirs, _ = children(base)
        for folder in dirs:
            classes.add(folder.name)
            images = images_under(folder)
            found.files_per_class[folder.name] += len(images)
            for path in images:
                found.entries.append(Entry(path, (folder.name,), split, found.rel(path)))
    if bases.keys() != {None}:
        _loose_images(root, found, "split")
    found.classes = sorted(classes)


class _NestedFolders:
    """Hierarchical: nested folders; inner folders are taxonomy nodes, the others leaves."""

    def __init__(self, found: Found) -> None:
        self.found = found
        self.parents: dict[str, str | None] = {}
        self.where: dict[str, str] = {}  # node -> first folder that defined it

    def visit(self, folder: Path, parent: str | None, split: str | None) -> None:
        found, name, rel = self.found, folder.name, self.found.rel(folder)
        if name in self.parents and self.parents[name] != parent:
            found.problems.append(
                f"folder name {name!r} is used twice in the taxonomy, under "
                f"{node_label(self.parents[name])} ({self.where[name]}/) and under "
                f"{node_label(parent)} ({rel}/): node names must be unique, rename one"
            )
            return
        self.parents.setdefault(name, parent)
        self.where.setdefault(name, rel)
        dirs, files = children(folder)
        if not dirs:
            found.files_per_class[name] += len(files)
            for path in files:
                found.entries.append(Entry(path, (name,), split, found.rel(path)))
            return
        if files:
            found.problems.append(
                f"{len(files)} images directly in the inner folder {rel}/ (it has "
                f"subfolders, so it is a taxonomy node, not a class): "
                f"{', '.join(first_few(found.rel(p) for p in files))} — move them into a leaf "
                f"subfolder (e.g. {rel}/other_{name}/) or delete them"
            )
        for sub in dirs:
            self.visit(sub, name, split)

    def finish(self) -> None:
        """Leaves become the classes; a node that is a leaf in one split and inner in another
        is an error."""
        found = self.found
        inner = set(self.parents.values())
        leaves = [n for n in self.parents if n not in inner]
        clashing = sorted({e.labels[0] for e in found.entries} & inner)
        for name in clashing:
            found.problems.append(
                f"{name!r} holds images in one place and subfolders in another "
                f"({self.where[name]}/): a node is either a class (images) or an inner node "
                "(subfolders)"
            )
        found.classes = sorted(leaves)
        found.taxonomy = self.parents
        if not inner and len(leaves) > 1:
            found.warnings.append(
                "the folders are not nested, so the taxonomy is flat (every class is top "
                "level): this is a multiclass problem; nest folders (root/insect/aphid/) or "
                "pass a taxonomy file"
            )


def discover_nested(root: Path, bases: dict[str | None, Path], found: Found) -> None:
    """Hierarchical: nested folders; inner folders are taxonomy nodes, the others leaves."""
    found.layout = "nested folders"
    tree = _NestedFolders(found)
    for split, base in bases.items():
        _loose_images(base, found, "class")
        for top in children(base)[0]:
            tree.visit(top, None, split)
    if bases.keys() != {None}:
        _loose_images(root, found, "split")
    tree.finish()
