"""The model's output labels: binary's [negative, positive], the hierarchical leaves in tree
order (with the taxonomy pruned to them), else the sorted classes."""

from __future__ import annotations

import re
from collections import defaultdict

from device.inference.taxonomy import lineage
from training.data.checks import SplitSamples
from training.data.samples import Found

NEGATIVE_NAMES = frozenset(
    {"no", "none", "empty", "background", "negative", "negatives", "nothing", "clear", "other"}
    | {"others", "neg", "bg"}
)
NEGATIVE_PREFIXES = ("no_", "not_", "non_", "without_")


def _is_negative_name(name: str) -> bool:
    normal = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return normal in NEGATIVE_NAMES or normal.startswith(NEGATIVE_PREFIXES)


def output_labels(
    task: str, found: Found, samples: SplitSamples, positive: str | None
) -> tuple[list[str], dict[str, str | None] | None]:
    """The model's output order (and the pruned taxonomy for hierarchical)."""
    if task == "binary":
        return _binary_labels(found, positive), None
    if task == "hierarchical":
        assert found.taxonomy is not None or found.problems
        taxonomy = found.taxonomy or {}
        leaves = {s.labels[0] for s, _ in samples} | set(found.classes)
        return tree_order(taxonomy, leaves)
    return list(found.classes), None


def _binary_labels(found: Found, positive: str | None) -> list[str]:
    """``[negative, positive]``; the folders as found when that cannot be told (reported)."""
    classes = found.classes
    if len(classes) != 2:
        return list(classes)  # already reported
    if positive is not None:
        if positive not in classes:
            found.problems.append(
                f"positive class {positive!r} is not one of the class folders "
                f"({', '.join(classes)})"
            )
            return list(classes)
    else:
        candidates = [c for c in classes if not _is_negative_name(c)]
        if len(candidates) != 1:
            why = "neither" if len(candidates) == 2 else "both"
            found.problems.append(
                f"binary: cannot tell which of {classes[0]!r} and {classes[1]!r} is the "
                f"positive class ({why} is named like a negative: no, not_*, none, empty, "
                f"background, ...); pass --positive {classes[0]} or --positive {classes[1]}"
            )
            return list(classes)
        positive = candidates[0]
    negative = next(c for c in classes if c != positive)
    return [negative, positive]


def tree_order(
    parents: dict[str, str | None], leaves: set[str]
) -> tuple[list[str], dict[str, str | None]]:
    """Leaves depth-first (siblings sorted) and the taxonomy restricted to their ancestors."""
    keep: set[str] = set()
    for leaf in leaves:
        if leaf in parents:
            keep.update(lineage(leaf, parents))
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
