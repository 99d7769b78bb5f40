"""Split folders (training/data/layouts.py, splits.py): used as given, a missing one carved."""

from __future__ import annotations

import shutil

import pytest
from dataset_files import FASHION_NAMES, write_images

from training.data import DataError, load_dataset


def test_multiclass_split_folders_are_used_as_given(tmp_path, fashion):
    for name, images in fashion.items():
        write_images(tmp_path / "train" / name, images[:20])
        write_images(tmp_path / "val" / name, images[20:30])
        write_images(tmp_path / "test" / name, images[30:40])
    # The same image in train/ and test/ is a leak: warned, not fatal.
    shutil.copy(tmp_path / "train/bag/img000.png", tmp_path / "test/bag/leak.png")

    ds = load_dataset(tmp_path, "multiclass", progress=False)

    assert ds.labels == sorted(FASHION_NAMES)
    assert len(ds.train) == 200 and len(ds.val) == 100 and len(ds.test) == 101
    assert all(s.path.relative_to(tmp_path).parts[0] == "train" for s in ds.train)
    assert all(s.path.relative_to(tmp_path).parts[0] == "test" for s in ds.test)
    assert "split folders" in ds.split_source
    [leak] = [w for w in ds.warnings if "several split folders" in w]
    assert "train/bag/img000.png" in leak and "test/bag/leak.png" in leak
    assert ds.summary()["counts"]["val"] == dict.fromkeys(sorted(FASHION_NAMES), 10)


def test_missing_test_folder_is_carved_from_train(tmp_path, digits):
    for d in range(3):
        write_images(tmp_path / "train" / str(d), digits[d][:20])
        write_images(tmp_path / "val" / str(d), digits[d][20:25])

    ds = load_dataset(tmp_path, "multiclass", test_fraction=0.25, progress=False)

    assert len(ds.val) == 15 and len(ds.test) == 15 and len(ds.train) == 45
    assert all(s.path.relative_to(tmp_path).parts[0] == "train" for s in ds.test)
    assert any("no test/ folder" in w for w in ds.warnings)


def test_split_folders_class_missing_from_train_is_an_error(tmp_path, digits):
    for d in range(2):
        write_images(tmp_path / "train" / str(d), digits[d][:10])
        write_images(tmp_path / "test" / str(d), digits[d][10:13])
    write_images(tmp_path / "test" / "9", digits[9][:6])
    write_images(tmp_path / "cats", digits[3][:6])
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, "multiclass", progress=False)
    assert any("in test/ but not in train/: 9" in p for p in info.value.problems)
    assert any("mixes split folders" in p and "cats" in p for p in info.value.problems)


def test_class_named_train_is_not_a_split_folder(tmp_path, digits):
    for d, name in enumerate(("bus", "car", "train")):
        write_images(tmp_path / name, digits[d][:6])
    assert load_dataset(tmp_path, "multiclass", progress=False).labels == ["bus", "car", "train"]
