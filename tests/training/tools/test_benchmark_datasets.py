"""The benchmark dataset builders write the real pictures, under the right labels and layouts.

Tiny counts keep these fast; every check compares written pixels with the source files
(Fashion-MNIST's idx files, skimage's LFW subset).
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data import CSV_NAME, read_labels_csv
from training.tools import benchmark_datasets as ds

pytest.importorskip("skimage", reason="training-side test: needs the 'train' extra")


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The installed Fashion-MNIST; CI must have it (deploy/test.sh installs the package)."""
    root = ds.FASHION_MNIST_DIR
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST missing: apt-get install {ds.FASHION_MNIST_PACKAGE}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def _png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def _source_index(path: Path) -> int:
    return int(re.fullmatch(r"(?:train|test|lfw)-(\d+)\.png", path.name).group(1))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


# ----------------------------------------------------------------------------- idx reader


def _write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(ds.read_idx(tmp_path / "a.gz"), array)


def test_read_idx_refuses_bad_files(tmp_path: Path) -> None:
    (tmp_path / "junk.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match=r"junk\.gz: not an idx file"):
        ds.read_idx(tmp_path / "junk.gz")
    _write_idx(tmp_path / "int.gz", np.zeros(4), type_code=0x0C)
    with pytest.raises(ValueError, match=r"int\.gz: idx type code 0x0c"):
        ds.read_idx(tmp_path / "int.gz")
    header = bytes([0, 0, 8, 1]) + np.array([10], ">u4").tobytes()
    (tmp_path / "short.gz").write_bytes(gzip.compress(header + b"\x00" * 7))
    with pytest.raises(ValueError, match=r"short\.gz: .*truncated"):
        ds.read_idx(tmp_path / "short.gz")


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ds.DatasetMissing, match="apt-get install dataset-fashion-mnist"):
        ds.load_fashion_mnist("train", tmp_path)
    assert ds.main(["fashion-mnist", str(tmp_path / "out"), "--fashion-mnist-dir", "nowhere"]) == 2


def test_fashion_mnist_is_the_real_balanced_set(fashion_root: Path) -> None:
    train_images, train_labels = ds.load_fashion_mnist("train", fashion_root)
    test_images, test_labels = ds.load_fashion_mnist("test", fashion_root)
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    # Real, distinct classes: the mean picture of each class differs from every other's.
    means = np.stack([train_images[train_labels == c].mean(0) for c in range(10)])
    distances = np.abs(means[:, None] - means[None]).mean((2, 3))
    assert distances[~np.eye(10, dtype=bool)].min() > 5


# ----------------------------------------------------------------------------- multiclass


def test_multiclass_writes_real_pictures_under_their_class(
    tmp_path: Path, fashion_root: Path
) -> None:
    summary = ds.write_fashion_mnist_multiclass(tmp_path / "fm", 3, 2, seed=1, root=fashion_root)
    assert summary.images == {"train": 30, "test": 20}
    assert summary.counts["train"] == dict.fromkeys(ds.FASHION_MNIST_CLASSES, 3)
    for split, source in (("train", "train"), ("test", "test")):
        images, labels = ds.load_fashion_mnist(source, fashion_root)
        folders = sorted(p.name for p in (tmp_path / "fm" / split).iterdir())
        assert folders == sorted(ds.FASHION_MNIST_CLASSES)
        for path in _files(tmp_path / "fm" / split):
            index = _source_index(path)
            assert path.parent.name == ds.FASHION_MNIST_CLASSES[labels[index]]
            np.testing.assert_array_equal(_png(path), images[index])


def test_multiclass_selection_is_seeded(tmp_path: Path, fashion_root: Path) -> None:
    def names(seed: int, name: str) -> list[str]:
        ds.write_fashion_mnist_multiclass(tmp_path / name, 2, 0, seed=seed, root=fashion_root)
        return [p.relative_to(tmp_path / name).as_posix() for p in _files(tmp_path / name)]

    first = names(5, "a")
    assert first == names(5, "b")
    assert first != names(6, "c")
    assert not (tmp_path / "a" / "test").exists()  # test=0: no test folder


def test_builders_refuse_a_non_empty_folder(tmp_path: Path, fashion_root: Path) -> None:
    (tmp_path / "fm").mkdir()
    (tmp_path / "fm" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        ds.write_fashion_mnist_multiclass(tmp_path / "fm", 1, 0, root=fashion_root)
    ds.write_fashion_mnist_multiclass(tmp_path / "fm", 1, 0, root=fashion_root, overwrite=True)
    assert not (tmp_path / "fm" / "keep.txt").exists()


def test_too_many_per_class_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="asked for 101 items, only 100 exist"):
        ds.write_lfw_binary(tmp_path / "lfw", per_class=101)


# ----------------------------------------------------------------------------- hierarchical


def test_taxonomy_is_the_clothing_tree() -> None:
    taxonomy = ds.FASHION_MNIST_TAXONOMY
    children = {
        node: sorted(k for k, v in taxonomy.items() if v == node)
        for node in taxonomy
        if taxonomy[node] is None
    }
    assert children == {
        "tops": ["coat", "pullover", "shirt", "t-shirt"],
        "bottoms": ["trouser"],
        "footwear": ["ankle-boot", "sandal", "sneaker"],
        "dress": [],
        "bag": [],
    }
    leaves = {n for n in taxonomy if n not in set(taxonomy.values())}
    assert leaves == set(ds.FASHION_MNIST_CLASSES)


def test_hierarchical_nests_the_same_pictures(tmp_path: Path, fashion_root: Path) -> None:
    ds.write_fashion_mnist_multiclass(tmp_path / "flat", 2, 1, seed=3, root=fashion_root)
    ds.write_fashion_mnist_hierarchical(tmp_path / "tree", 2, 1, seed=3, root=fashion_root)
    flat = {p.name: p.parent.name for p in _files(tmp_path / "flat")}
    tree = {p.name: p.relative_to(tmp_path / "tree") for p in _files(tmp_path / "tree")}
    assert set(flat) == set(tree)
    for name, rel in tree.items():
        _split, *folders = rel.parent.parts
        assert folders[-1] == flat[name]
        assert Path(*folders) == ds.class_folder(flat[name], ds.FASHION_MNIST_TAXONOMY)
    top_level = sorted(p.name for p in (tmp_path / "tree" / "train").iterdir())
    assert top_level == ["bag", "bottoms", "dress", "footwear", "tops"]
    # Dress and bag are leaves at the top: their pictures sit directly in the folder.
    assert [p.parent.name for p in _files(tmp_path / "tree" / "train" / "dress")] == ["dress"] * 2
    assert (tmp_path / "tree" / "test" / "tops" / "shirt").is_dir()


# ----------------------------------------------------------------------------- multilabel


def test_multilabel_mosaics_are_labelled_with_the_classes_present(
    tmp_path: Path, fashion_root: Path
) -> None:
    summary = ds.write_fashion_mnist_multilabel(tmp_path / "ml", 4, 2, seed=2, root=fashion_root)
    assert summary.images == {"train": 10, "test": 5}  # 40 and 20 items, four per mosaic
    for split in ("train", "test"):
        images, labels = ds.load_fashion_mnist(split, fashion_root)
        rows = read_labels_csv(tmp_path / "ml" / split / CSV_NAME)
        assert sorted(rows) == sorted(p.name for p in (tmp_path / "ml" / split).glob("*.png"))
        used: list[int] = []
        for name, row_labels in rows.items():
            mosaic = _png(tmp_path / "ml" / split / name)
            assert mosaic.shape == (56, 56)
            sources = [int(x) for x in name[:-4].split("-")[2:]]
            assert len(sources) == 4
            tiles = [mosaic[:28, :28], mosaic[:28, 28:], mosaic[28:, :28], mosaic[28:, 28:]]
            for tile, index in zip(tiles, sources, strict=True):
                np.testing.assert_array_equal(tile, images[index])
            expected = {ds.FASHION_MNIST_CLASSES[labels[i]] for i in sources}
            assert set(row_labels) == expected and len(row_labels) == len(expected)
            used += sources
        assert len(used) == len(set(used))  # each chosen item in exactly one mosaic
        per_class = 4 if split == "train" else 2
        assert np.bincount(labels[used], minlength=10).tolist() == [per_class] * 10


def test_multilabel_csv_format(tmp_path: Path, fashion_root: Path) -> None:
    ds.write_fashion_mnist_multilabel(tmp_path / "ml", 2, 0, seed=0, root=fashion_root)
    lines = (tmp_path / "ml" / "train" / "labels.csv").read_text().splitlines()
    assert lines[0] == "path,labels"
    assert len(lines) == 1 + 5
    for line in lines[1:]:
        path, labels = line.split(",")
        assert path.endswith(".png") and "/" not in path
        assert all(label in ds.FASHION_MNIST_CLASSES for label in labels.split(";"))


# ----------------------------------------------------------------------------- LFW


def test_lfw_faces_and_non_faces(tmp_path: Path) -> None:
    import skimage.data

    source = skimage.data.lfw_subset()
    summary = ds.write_lfw_binary(tmp_path / "lfw")
    assert summary.counts == {"all": {"no-face": 100, "face": 100}}
    for path in _files(tmp_path / "lfw"):
        index = _source_index(path)
        assert path.parent.name == ("face" if index < 100 else "no-face")
        pixels = _png(path)
        assert pixels.shape == (25, 25) and pixels.dtype == np.uint8
        np.testing.assert_allclose(pixels / 255.0, source[index], atol=0.5 / 255 + 1e-9)


def test_lfw_held_out_split_is_disjoint_and_stratified(tmp_path: Path) -> None:
    summary = ds.write_lfw_binary(tmp_path / "lfw", seed=4, per_class=30, test_per_class=10)
    assert summary.counts == {
        "train": {"no-face": 20, "face": 20},
        "test": {"no-face": 10, "face": 10},
    }
    train = {p.name for p in _files(tmp_path / "lfw" / "train")}
    test = {p.name for p in _files(tmp_path / "lfw" / "test")}
    assert len(train) == 40 and len(test) == 20 and not train & test


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_each_dataset(tmp_path: Path, fashion_root: Path, capsys) -> None:
    for name in ds.BUILDERS:
        out = tmp_path / name
        assert ds.main([name, str(out), "--per-class", "4", "--test-per-class", "1"]) == 0
        assert _files(out)
    printed = capsys.readouterr().out
    assert "train: 40 (t-shirt 4" in printed
    assert "train: 10 (" in printed  # 40 items -> 10 mosaics
    assert "train: 6 (no-face 3, face 3)" in printed  # lfw: 4 per class, 1 held out
