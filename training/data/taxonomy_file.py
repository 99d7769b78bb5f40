"""Hierarchical from flat class folders: reading a taxonomy file (JSON or text paths), its cycle
check, and fitting the class folders to it."""

from __future__ import annotations

import json
from pathlib import Path

from training.data.samples import DataError, Found, first_few


def node_label(node: str | None) -> str:
    """A taxonomy parent for messages: the node's name, or "the top level"."""
    return "the top level" if node is None else repr(node)


def _read_taxonomy_file(path: Path) -> tuple[dict[str, str | None], list[str]]:
    """Parse a taxonomy file: JSON ``{node: parent | null}`` or text lines ``a/b/c``."""
    if not path.is_file():
        raise DataError(f"taxonomy file {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        parents, problems = _parse_json(path, text)
    else:
        parents, problems = _parse_text(path, text)
    problems.extend(f"taxonomy file {path}: {p}" for p in _cycles(parents))
    return parents, problems


def _parse_json(path: Path, text: str) -> tuple[dict[str, str | None], list[str]]:
    """``{"node": "parent" | null}``; every parent must be a node too."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"taxonomy file {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f'taxonomy file {path}: expected an object {{"node": "parent" | null}}')
    problems: list[str] = []
    parents: dict[str, str | None] = {}
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
    return parents, problems


def _parse_text(path: Path, text: str) -> tuple[dict[str, str | None], list[str]]:
    """One path from a top-level node down per line (``animal/insect/aphid``; ``#`` comments)."""
    problems: list[str] = []
    parents: dict[str, str | None] = {}
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
                    f"{node_label(parent)} here but under {node_label(parents[node])} on line "
                    f"{line_of[node]}"
                )
            else:
                parents.setdefault(node, parent)
                line_of.setdefault(node, number)
    return parents, problems


def _cycles(parents: dict[str, str | None]) -> list[str]:
    """Every node whose chain of parents loops, once per loop.

    Its own walk rather than ``device.inference.taxonomy.lineage``: that stops at the first
    cycle it meets, and this reports each loop, with its members, once.
    """
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


def apply_taxonomy_file(path: Path, found: Found) -> None:
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
                f"{', '.join(first_few(children))}): images must be in leaf folders"
            )
    leaves = [n for n in parents if n not in inner]
    unused = [n for n in leaves if n not in found.classes]
    if unused:
        found.warnings.append(
            f"{len(unused)} leaves of the taxonomy have no image folder and are left out of the "
            f"model: {', '.join(first_few(unused))}"
        )
    found.taxonomy = parents
