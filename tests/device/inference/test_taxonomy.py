"""Taxonomy walks: order, cycles and dangling parents."""

import pytest

from device.inference.taxonomy import ancestor_sets, lineage, path_from_root

TREE = {
    "animal": None,
    "plant": None,
    "insect": "animal",
    "bird": "animal",
    "bee": "insect",
    "aphid": "insect",
    "robin": "bird",
    "fern": "plant",
}


def test_lineage_is_the_node_then_its_ancestors_nearest_first():
    assert lineage("bee", TREE) == ["bee", "insect", "animal"]
    assert lineage("fern", TREE) == ["fern", "plant"]
    assert lineage("animal", TREE) == ["animal"]


def test_path_from_root_runs_from_the_top_level_down():
    assert path_from_root("bee", TREE) == ["animal", "insect", "bee"]
    assert path_from_root("plant", TREE) == ["plant"]


def test_ancestor_sets_cover_every_node_with_itself():
    sets = ancestor_sets(TREE)
    assert set(sets) == set(TREE)
    assert sets["robin"] == frozenset({"robin", "bird", "animal"})
    assert sets["plant"] == frozenset({"plant"})
    assert all(node in members for node, members in sets.items())


def test_ancestor_sets_of_no_taxonomy_is_empty():
    assert ancestor_sets(None) == {}
    assert ancestor_sets({}) == {}


@pytest.mark.parametrize(
    "parents",
    [
        {"a": "b", "b": "a"},
        {"a": "a"},
        {"leaf": "a", "a": "b", "b": "c", "c": "a"},
    ],
)
def test_a_cycle_is_refused_naming_a_node_on_it(parents):
    with pytest.raises(ValueError, match="cycle through") as info:
        lineage(next(iter(parents)), parents)
    assert any(repr(node) in str(info.value) for node in parents)


def test_a_cycle_anywhere_breaks_ancestor_sets():
    with pytest.raises(ValueError, match="cycle through 'a'"):
        ancestor_sets({"top": None, "a": "b", "b": "a"})


def test_a_dangling_parent_is_named_with_its_child():
    with pytest.raises(ValueError, match="parent 'insect' of 'bee' is not a node"):
        lineage("bee", {"bee": "insect"})
    with pytest.raises(ValueError, match="parent 'ghost' of 'insect' is not a node"):
        path_from_root("bee", {"bee": "insect", "insect": "ghost"})


def test_an_unknown_node_is_a_key_error():
    with pytest.raises(KeyError):
        lineage("whale", TREE)
