"""Binary datasets (training/data/): a folder with and one without the object."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from dataset_files import all_samples, write_images

from training.data import DataError, load_dataset


def test_binary_random_split_is_stratified_complete_and_seeded(tmp_path, lfw):
    faces, others = lfw
    write_images(tmp_path / "face", faces)
    write_images(tmp_path / "no_face", others)

    ds = load_dataset(tmp_path, "binary", progress=False)

    assert ds.task == "binary"
    assert ds.labels == ["no_face", "face"]  # [negative, positive]
    assert ds.taxonomy is None
    assert (len(ds.train), len(ds.val), len(ds.test)) == (140, 30, 30)
    for split in (ds.val, ds.test):
        assert Counter(s.labels for s in split) == {("face",): 15, ("no_face",): 15}
    paths = [s.path for s in all_samples(ds)]
    assert len(set(paths)) == 200  # each image in exactly one split
    assert all(s.labels == (s.path.parent.name,) for s in all_samples(ds))
    assert ds.skipped == [] and ds.warnings == []
    assert "random" in ds.split_source

    again = load_dataset(tmp_path, "binary", progress=False)
    assert (again.train, again.val, again.test) == (ds.train, ds.val, ds.test)
    other_seed = load_dataset(tmp_path, "binary", seed=1, progress=False)
    assert set(other_seed.test) != set(ds.test)

    summary = json.loads(json.dumps(ds.summary()))
    assert summary["counts"]["test"] == {"no_face": 15, "face": 15}
    assert summary["images"] == {"train": 140, "val": 30, "test": 30}
    assert summary["image_size"]["max"] == [25, 25]


@pytest.mark.parametrize(
    ("folders", "expected"),
    [
        (("person", "empty"), ["empty", "person"]),
        (("not_cat", "cat"), ["not_cat", "cat"]),
        (("Background", "deer"), ["Background", "deer"]),
        (("aphid", "no-aphid"), ["no-aphid", "aphid"]),
    ],
)
def test_binary_positive_is_the_class_not_named_like_a_negative(
    tmp_path, digits, folders, expected
):
    for i, name in enumerate(folders):
        write_images(tmp_path / name, digits[i][:6])
    assert load_dataset(tmp_path, "binary", progress=False).labels == expected


@pytest.mark.parametrize("folders", [("cat", "dog"), ("none", "background")])
def test_binary_ambiguous_positive_asks_for_positive(tmp_path, digits, folders):
    for i, name in enumerate(folders):
        write_images(tmp_path / name, digits[i][:6])
    with pytest.raises(DataError, match="--positive") as info:
        load_dataset(tmp_path, "binary", progress=False)
    assert all(name in str(info.value) for name in folders)

    chosen = load_dataset(tmp_path, "binary", positive=folders[0], progress=False)
    assert chosen.labels == [folders[1], folders[0]]
    with pytest.raises(DataError, match="'cow' is not one of the class folders"):
        load_dataset(tmp_path, "binary", positive="cow", progress=False)


def test_binary_single_class_explains_the_negative_folder(tmp_path, lfw):
    write_images(tmp_path / "face", lfw[0][:20])
    with pytest.raises(DataError, match="WITHOUT the object") as info:
        load_dataset(tmp_path, "binary", progress=False)
    assert "no_face/" in str(info.value)


def test_binary_with_three_classes_suggests_multiclass(tmp_path, digits):
    for d in range(3):
        write_images(tmp_path / f"digit{d}", digits[d][:6])
    with pytest.raises(DataError, match=r"exactly two class folders.*--task multiclass"):
        load_dataset(tmp_path, "binary", progress=False)
