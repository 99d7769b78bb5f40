"""Hierarchical datasets (training/data/): nested folders, or class folders + a taxonomy file."""

from __future__ import annotations

import json

import pytest
from dataset_files import FASHION_TREE, all_samples, write_images

from device.inference.bundle import _check_taxonomy
from training.data import DataError, load_dataset


def test_hierarchical_nested_folders(tmp_path, fashion):
    for parent, leaves in FASHION_TREE.items():
        for leaf in leaves:
            write_images(tmp_path / parent / leaf, fashion[leaf][:10])
    write_images(tmp_path / "bag", fashion["bag"][:10])  # a top-level leaf

    ds = load_dataset(tmp_path, "hierarchical", progress=False)

    assert ds.labels == ["bag", "trouser", "sandal", "sneaker", "pullover", "t-shirt"]
    assert ds.taxonomy == {
        "bag": None,
        "bottoms": None,
        "trouser": "bottoms",
        "footwear": None,
        "sandal": "footwear",
        "sneaker": "footwear",
        "tops": None,
        "pullover": "tops",
        "t-shirt": "tops",
    }
    _check_taxonomy(ds.labels, ds.taxonomy)  # what the bundle will accept
    assert all(s.labels == (s.path.parent.name,) for s in all_samples(ds))
    assert {s.labels[0] for s in ds.test} == set(ds.labels)
    assert ds.summary()["taxonomy"] == ds.taxonomy


def test_hierarchical_nested_folders_in_split_folders(tmp_path, fashion):
    for split, part in (("train", slice(0, 10)), ("val", slice(10, 13)), ("test", slice(13, 16))):
        for parent, leaves in FASHION_TREE.items():
            for leaf in leaves:
                write_images(tmp_path / split / parent / leaf, fashion[leaf][part])
    ds = load_dataset(tmp_path, "hierarchical", progress=False)
    assert ds.labels == ["trouser", "sandal", "sneaker", "pullover", "t-shirt"]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 15, 15)
    assert ds.taxonomy is not None and ds.taxonomy["sandal"] == "footwear"


def test_hierarchical_images_in_inner_folder_and_duplicate_names(tmp_path, fashion):
    for parent, leaves in FASHION_TREE.items():
        for leaf in leaves:
            write_images(tmp_path / parent / leaf, fashion[leaf][:6])
    write_images(tmp_path / "tops", fashion["shirt"][:2])  # images in an inner folder
    write_images(tmp_path / "footwear" / "other", fashion["ankle-boot"][:6])
    write_images(tmp_path / "tops" / "other", fashion["coat"][:6])  # "other" twice

    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, "hierarchical", progress=False)

    problems = info.value.problems
    [inner] = [p for p in problems if "inner folder" in p]
    assert "tops/img000.png" in inner and "tops/img001.png" in inner
    [twice] = [p for p in problems if "used twice" in p]
    assert "footwear/other/" in twice and "tops/other/" in twice


@pytest.mark.parametrize("kind", ["json", "text"])
def test_hierarchical_flat_folders_and_taxonomy_file(tmp_path, fashion, kind):
    data = tmp_path / "data"
    for leaves in FASHION_TREE.values():
        for leaf in leaves:
            write_images(data / leaf, fashion[leaf][:6])
    taxonomy = {
        "clothing": None,
        "tops": "clothing",
        "bottoms": "clothing",
        "footwear": None,
        "dress": "clothing",  # a leaf without images: left out, with a warning
        **{leaf: parent for parent, leaves in FASHION_TREE.items() for leaf in leaves},
    }
    taxonomy["footwear"] = "clothing"
    if kind == "json":
        file = tmp_path / "taxonomy.json"
        file.write_text(json.dumps(taxonomy))
    else:
        file = tmp_path / "taxonomy.txt"
        file.write_text(
            "# fashion\nclothing/tops/t-shirt\nclothing/tops/pullover\nclothing/bottoms/trouser\n"
            "clothing/footwear/sandal\nclothing/footwear/sneaker  # shoes\n\nclothing/dress\n"
        )

    ds = load_dataset(data, "hierarchical", taxonomy_file=file, progress=False)

    assert ds.labels == ["trouser", "sandal", "sneaker", "pullover", "t-shirt"]
    assert ds.taxonomy is not None and "dress" not in ds.taxonomy
    assert ds.taxonomy["tops"] == "clothing" and ds.taxonomy["clothing"] is None
    assert ds.taxonomy["sneaker"] == "footwear"
    _check_taxonomy(ds.labels, ds.taxonomy)
    assert any("dress" in w for w in ds.warnings)

    write_images(data / "hat", fashion["shirt"][:6])  # not in the taxonomy
    write_images(data / "tops", fashion["coat"][:6])  # an inner node
    with pytest.raises(DataError) as info:
        load_dataset(data, "hierarchical", taxonomy_file=file, progress=False)
    assert any("hat/ is not in the taxonomy file" in p for p in info.value.problems)
    assert any("tops/ is an inner node" in p for p in info.value.problems)


def test_taxonomy_file_errors(tmp_path, digits):
    for d in range(2):
        write_images(tmp_path / "data" / f"d{d}", digits[d][:6])
    bad_json = tmp_path / "t.json"
    bad_json.write_text(json.dumps({"d0": "x", "d1": "y", "y": "d1"}))
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path / "data", "hierarchical", taxonomy_file=bad_json, progress=False)
    assert any("parent 'x' of 'd0' is not a node" in p for p in info.value.problems)
    assert any("cycle" in p for p in info.value.problems)
    bad_text = tmp_path / "t.txt"
    bad_text.write_text("a/d0\nb/d0\na/d1\n")
    with pytest.raises(DataError, match="line 2: 'd0' is under 'b' here but under 'a' on line 1"):
        load_dataset(tmp_path / "data", "hierarchical", taxonomy_file=bad_text, progress=False)
