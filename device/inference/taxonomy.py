"""Walks of a taxonomy: a mapping of every node to its parent (``None`` at the top level).

The bundle, the decoder, the daemon's label filters and the training metrics all walk the same
tree; they do it through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping

Taxonomy = Mapping[str, str | None]


def lineage(node: str, parents: Taxonomy) -> list[str]:
    """``node`` and its ancestors, nearest first: "bee" -> [bee, insect, animal].

    Raises ValueError on a cycle or on a parent that is not a node, naming it.
    """
    chain = [node]
    parent = parents[node]
    while parent is not None:
        if parent in chain:
            raise ValueError(f"taxonomy: cycle through {parent!r}")
        if parent not in parents:
            raise ValueError(f"taxonomy: parent {parent!r} of {chain[-1]!r} is not a node")
        chain.append(parent)
        parent = parents[parent]
    return chain


def path_from_root(node: str, parents: Taxonomy) -> list[str]:
    """The top-level node down to ``node`` (inclusive): [animal, insect, bee]."""
    return lineage(node, parents)[::-1]


def ancestor_sets(parents: Taxonomy | None) -> dict[str, frozenset[str]]:
    """Every node with itself and its ancestors ("bee" -> {bee, insect, animal})."""
    return {node: frozenset(lineage(node, parents)) for node in parents or {}}
