"""Multilabel datasets (training/data/multilabel.py): labels.csv and label folders."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from dataset_files import MULTI, all_samples, mosaics, write_images

from training.data import DataError, load_dataset, read_labels_csv, target_array, write_labels_csv


def test_multilabel_csv(tmp_path, digits):
    rows = ["path,labels"]
    expected: dict[str, tuple[str, ...]] = {}
    for i, (image, labels) in enumerate(mosaics(digits, 60)):
        rel = f"images/m{i:02d}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), image)
        rows.append(f"{rel},{';'.join(labels)}" if i % 20 else rel)  # label column optional
        expected[rel] = labels
    rows.append("images/gone.png,one")  # listed but missing
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cv2.imwrite(str(tmp_path / "images/unlisted.png"), digits[3][0])

    ds = load_dataset(tmp_path, "multilabel", progress=False)

    assert ds.labels == sorted(MULTI)
    assert {s.path.relative_to(tmp_path).as_posix(): s.labels for s in all_samples(ds)} == expected
    assert dict(ds.skipped) == {"images/gone.png": "listed in labels.csv line 62 but not found"}
    assert any("not listed" in w and "images/unlisted.png" in w for w in ds.warnings)
    for split in (ds.val, ds.test):
        assert {label for s in split for label in s.labels} == set(MULTI)
        assert any(not s.labels for s in split)
    targets = target_array(ds.train, ds.labels, "multilabel")
    assert targets.dtype == np.float32 and targets.shape == (len(ds.train), 3)
    for row, sample in zip(targets, ds.train, strict=True):
        assert {ds.labels[j] for j in np.flatnonzero(row)} == set(sample.labels)
    summary = ds.summary()
    assert sum(summary["unlabeled"].values()) == sum(1 for v in expected.values() if not v)

    (tmp_path / "labels.csv").write_text(
        "images/m01.png,one\nimages/m02.png,a,b\nimages/m01.png,two\n"
    )
    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, "multilabel", progress=False)
    assert any("line 2: 3 columns" in p for p in info.value.problems)
    assert any(
        "line 3: images/m01.png is already listed on line 1" in p for p in info.value.problems
    )


@pytest.mark.parametrize("one_csv", [True, False])
def test_multilabel_csv_with_split_folders(tmp_path, digits, one_csv):
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    splits = ["train"] * 6 + ["val", "val", "test", "test"]
    for i, (image, labels) in enumerate(mosaics(digits, 40)):
        split = splits[i % 10]
        (tmp_path / split).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / split / f"m{i:02d}.png"), image)
        lines[split].append(f"m{i:02d}.png,{';'.join(labels)}")
    if one_csv:  # one CSV at the root: the split is the folder each path is in
        rows = [f"{split}/{line}" for split, part in lines.items() for line in part]
        (tmp_path / "labels.csv").write_text("\n".join(rows))
    else:
        for split, part in lines.items():
            (tmp_path / split / "labels.csv").write_text("file,labels\n" + "\n".join(part))

    ds = load_dataset(tmp_path, "multilabel", progress=False)

    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 8, 8)
    assert all(s.path.parent.name == "val" for s in ds.val)
    assert ds.labels == sorted(MULTI)


def test_multilabel_label_folders_merge_identical_files(tmp_path, digits):
    write_images(tmp_path / "cat", digits[0][:8])
    write_images(tmp_path / "dog", digits[1][:8])
    write_images(tmp_path / "none", digits[2][:8])
    # The same picture in both folders: one image with both labels.
    shutil.copy(tmp_path / "cat/img000.png", tmp_path / "dog/img000.png")
    shutil.copy(tmp_path / "cat/img001.png", tmp_path / "dog/both.png")

    ds = load_dataset(tmp_path, "multilabel", progress=False)

    assert ds.labels == ["cat", "dog"]
    by_path = {s.path.relative_to(tmp_path).as_posix(): s.labels for s in all_samples(ds)}
    assert by_path["cat/img000.png"] == ("cat", "dog")
    assert by_path["cat/img001.png"] == ("cat", "dog")
    assert "dog/both.png" not in by_path
    assert by_path["none/img003.png"] == ()
    assert len(by_path) == 8 + 9 + 8 - 2  # dog/ has 9 files, 2 of them copies of cat/ files
    assert ds.skipped == []


def test_multilabel_label_on_every_image_is_an_error(tmp_path, digits):
    write_images(tmp_path / "cat", digits[0][:8])
    with pytest.raises(DataError, match="label 'cat' is on every image"):
        load_dataset(tmp_path, "multilabel", progress=False)


def test_labels_csv_reader_reads_what_the_writer_writes(tmp_path):
    csv_path = tmp_path / "labels.csv"
    write_labels_csv(csv_path, [("a.png", ["dog", "cat"]), ("b.png", []), ("c.png", ["cat"])])
    assert read_labels_csv(csv_path) == {"a.png": ["cat", "dog"], "b.png": [], "c.png": ["cat"]}

    csv_path.write_text("a.png,cat\na.png,dog\n")
    with pytest.raises(DataError, match=r"line 2: a\.png is already listed on line 1"):
        read_labels_csv(csv_path)
