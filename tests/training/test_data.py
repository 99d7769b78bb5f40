"""Dataset loading and checking (training/data/) on small real datasets written to tmp_path.

Images: scikit-image's ``lfw_subset`` (100 faces, then 100 non-face crops), scikit-learn's
``load_digits``, Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (tests that need it skip
without it) and the photos in ``models/samples``.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.inference.bundle import InputSpec, _check_taxonomy
from device.inference.preprocess import InputQuantizer, prepare, read_image
from training.data import (
    DataError,
    Dataset,
    Sample,
    load_dataset,
    load_pixels,
    target_array,
)
from training.tools.benchmark_datasets import (
    FASHION_MNIST_CLASSES,
    DatasetMissing,
    load_fashion_mnist,
)

FASHION_NAMES = list(FASHION_MNIST_CLASSES)


# ---------------------------------------------------------------------------------------------
# Real images


@pytest.fixture(scope="session")
def lfw() -> tuple[np.ndarray, np.ndarray]:
    """(faces, non-faces), 100 each, 25x25 uint8."""
    import skimage.data

    images = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    return images[:100], images[100:]


@pytest.fixture(scope="session")
def digits() -> dict[int, list[np.ndarray]]:
    """Distinct digits per class, 8x8 upscaled to 32x32 uint8."""
    from sklearn.datasets import load_digits

    data = load_digits()
    out: dict[int, list[np.ndarray]] = {d: [] for d in range(10)}
    seen: set[bytes] = set()
    for image, target in zip(data.images, data.target, strict=True):
        pixels = (image * 255 / 16).round().astype(np.uint8)
        if pixels.tobytes() not in seen:
            seen.add(pixels.tobytes())
            out[int(target)].append(cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_NEAREST))
    return out


@pytest.fixture(scope="session")
def fashion() -> dict[str, np.ndarray]:
    """Fashion-MNIST test set: the first 40 images of each class, keyed by class name."""
    try:
        images, labels = load_fashion_mnist("test")
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    return {name: images[labels == i][:40] for i, name in enumerate(FASHION_NAMES)}


def write_images(folder: Path, images: list[np.ndarray] | np.ndarray, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(str(folder / f"img{i:03d}{ext}"), image)


def rel_paths(samples: list[Sample], root: Path) -> set[str]:
    return {s.path.relative_to(root).as_posix() for s in samples}


def all_samples(ds: Dataset) -> list[Sample]:
    return ds.train + ds.val + ds.test


# ---------------------------------------------------------------------------------------------
# Binary


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


# ---------------------------------------------------------------------------------------------
# Multiclass, split folders, bad files


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


def test_bad_files_are_skipped_with_reasons(tmp_path, digits, samples_dir):
    for d in range(3):
        write_images(tmp_path / str(d), digits[d][:20], ext=".jpg")
    photo = (samples_dir / "coffee.jpg").read_bytes()
    (tmp_path / "0" / "truncated.jpg").write_bytes(photo[: len(photo) // 2])
    (tmp_path / "0" / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "1" / "empty.png").write_bytes(b"")
    png = cv2.imencode(".png", cv2.imread(str(samples_dir / "astronaut.jpg")))[1].tobytes()
    (tmp_path / "1" / "cut.png").write_bytes(png[: len(png) // 3])
    shutil.copy(tmp_path / "1/img000.jpg", tmp_path / "1/img000_copy.jpg")
    # Bytes after the end-of-image marker (phones append videos) are fine.
    (tmp_path / "2" / "trailer.jpg").write_bytes(photo + b"ftypmp42\xff\xda\x00\x10" * 50)
    (tmp_path / "2" / "more").mkdir()
    shutil.copy(samples_dir / "rocket.jpg", tmp_path / "2/more/rocket.jpg")
    (tmp_path / "stray.png").write_bytes((tmp_path / "2/img001.jpg").read_bytes())
    # Ignored silently: hidden files and folders, non-image extensions, macOS debris.
    (tmp_path / "0" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "0" / "._img000.jpg").write_bytes(b"resource fork")
    (tmp_path / "1" / "notes.txt").write_text("camera 3")
    (tmp_path / ".git").mkdir()
    (tmp_path / "__MACOSX" / "0").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "0" / "x.jpg").write_bytes(b"")

    ds = load_dataset(tmp_path, "multiclass", progress=False)

    skipped = dict(ds.skipped)
    assert set(skipped) == {
        "0/truncated.jpg",
        "0/text.jpg",
        "1/empty.png",
        "1/cut.png",
        "1/img000_copy.jpg",
        "stray.png",
    }
    assert "truncated JPEG" in skipped["0/truncated.jpg"]
    assert "not a readable image" in skipped["0/text.jpg"]
    assert skipped["1/empty.png"] == "empty file"
    assert "corrupt or truncated image" in skipped["1/cut.png"]
    assert skipped["1/img000_copy.jpg"] == "duplicate of 1/img000.jpg"
    assert "not in a class folder" in skipped["stray.png"]
    assert ds.labels == ["0", "1", "2"]
    used = rel_paths(all_samples(ds), tmp_path)
    assert len(used) == 62 and "2/trailer.jpg" in used and "2/more/rocket.jpg" in used
    assert not used & set(skipped)
    assert ds.summary()["skipped"][0] == {"path": "0/text.jpg", "reason": skipped["0/text.jpg"]}


def test_too_many_unreadable_files_in_a_class_fail(tmp_path, digits):
    write_images(tmp_path / "a", digits[0][:10])
    write_images(tmp_path / "b", digits[1][:10])
    for i in range(3):
        (tmp_path / "b" / f"broken{i}.jpg").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match=r"class 'b': 3 of 13 files cannot be used") as info:
        load_dataset(tmp_path, "multiclass", progress=False)
    assert "b/broken0.jpg" in str(info.value)


def test_all_problems_are_reported_together(tmp_path, digits):
    write_images(tmp_path / "cat", digits[0][:10])
    write_images(tmp_path / "dog", digits[1][:10])
    write_images(tmp_path / "bird", digits[2][:3])
    shutil.copy(tmp_path / "cat/img004.png", tmp_path / "dog/same.png")

    with pytest.raises(DataError) as info:
        load_dataset(tmp_path, "multiclass", progress=False)

    problems = info.value.problems
    assert len(problems) == 2, problems
    [dupe] = [p for p in problems if "same image" in p]
    assert "cat/img004.png" in dupe and "dog/same.png" in dupe
    [few] = [p for p in problems if "bird" in p]
    assert "has 3 usable images" in few and "at least 5" in few
    assert all(p in str(info.value) for p in problems)


def test_multiclass_single_class_and_min_images(tmp_path, digits):
    write_images(tmp_path / "only", digits[0][:8])
    with pytest.raises(DataError, match=r"only one class, 'only'.*at least two"):
        load_dataset(tmp_path, "multiclass", progress=False)
    write_images(tmp_path / "second", digits[1][:8])
    with pytest.raises(DataError, match="'only' has 8 usable images; at least 10"):
        load_dataset(tmp_path, "multiclass", min_images_per_class=10, progress=False)
    (tmp_path / "third").mkdir()
    with pytest.raises(DataError, match="'third' has 0 usable images"):
        load_dataset(tmp_path, "multiclass", progress=False)


def test_class_imbalance_is_warned(tmp_path, digits):
    write_images(tmp_path / "common", digits[0][:30])
    write_images(tmp_path / "rare", digits[1][:6])
    ds = load_dataset(tmp_path, "multiclass", progress=False)
    assert any("imbalance" in w and "5.0:1" in w for w in ds.warnings)
    assert Counter(s.labels[0] for s in ds.val) == {"common": 4, "rare": 1}
    assert Counter(s.labels[0] for s in ds.test) == {"common": 4, "rare": 1}


def test_wrong_root_and_no_images(tmp_path, digits):
    with pytest.raises(DataError, match="no such folder"):
        load_dataset(tmp_path / "missing", "multiclass", progress=False)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(tmp_path / "file.txt", "multiclass", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path / "empty", "multiclass", progress=False)
    write_images(tmp_path / "flat", digits[0][:6])
    with pytest.raises(DataError, match="not in the expected layout"):
        load_dataset(tmp_path / "flat", "multiclass", progress=False)


def test_bad_arguments(tmp_path, digits):
    write_images(tmp_path / "a", digits[0][:6])
    write_images(tmp_path / "b", digits[1][:6])
    with pytest.raises(DataError, match="leave something for training"):
        load_dataset(tmp_path, "multiclass", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataError, match="only for --task binary"):
        load_dataset(tmp_path, "multiclass", positive="a")
    with pytest.raises(DataError, match="unknown task"):
        load_dataset(tmp_path, "regression")  # type: ignore[arg-type]


def test_progress_bar_goes_to_stderr(tmp_path, digits, capsys):
    write_images(tmp_path / "a", digits[0][:6])
    write_images(tmp_path / "b", digits[1][:6])
    load_dataset(tmp_path, "multiclass", progress=True)
    captured = capsys.readouterr()
    assert "Checking images" in captured.err and captured.out == ""
    load_dataset(tmp_path, "multiclass", progress=False)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# Hierarchical

FASHION_TREE = {
    "tops": ["t-shirt", "pullover"],
    "bottoms": ["trouser"],
    "footwear": ["sandal", "sneaker"],
}


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


# ---------------------------------------------------------------------------------------------
# Multilabel

MULTI = ["two", "one", "zero"]


def mosaics(digits: dict[int, list[np.ndarray]], count: int, seed: int = 0):
    """2x2 mosaics of digits: labels are the digits 0-2 present; 7s fill the empty cells."""
    rng = np.random.default_rng(seed)
    names = {0: "zero", 1: "one", 2: "two"}
    for i in range(count):
        present = [d for d in (0, 1, 2) if rng.random() < 0.4]
        if i % 10 == 0:
            present = []  # all-negative images
        cells = [digits[d][i % 40] for d in present] + [digits[7][(i + k) % 60] for k in range(4)]
        cells = cells[:4]
        image = np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])
        yield image, tuple(sorted(names[d] for d in present))


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


# ---------------------------------------------------------------------------------------------
# Targets and pixels


def test_target_array_single_label_tasks():
    samples = [Sample(Path(f"{i}.png"), (label,)) for i, label in enumerate("bacab")]
    for task in ("binary", "multiclass", "hierarchical"):
        targets = target_array(samples, ["a", "b", "c"], task)
        assert targets.dtype == np.int64
        assert targets.tolist() == [1, 0, 2, 0, 1]
    with pytest.raises(DataError, match="unknown label 'c'"):
        target_array(samples, ["a", "b"], "multiclass")
    with pytest.raises(DataError, match="needs one label"):
        target_array([Sample(Path("x.png"), ())], ["a"], "multiclass")


def test_load_pixels_is_the_device_preprocessing(samples_dir, tmp_path):
    paths = sorted(samples_dir.glob("*.jpg"))
    samples = [Sample(p, ("photo",)) for p in paths]
    for spec in (
        InputSpec(height=40, width=56, dtype="uint8"),
        InputSpec(height=32, width=32, channels=1, dtype="int8", fit="letterbox"),
    ):
        pixels = load_pixels(samples, spec, progress=False)
        assert pixels.dtype == np.uint8
        assert pixels.shape == (len(paths), spec.height, spec.width, spec.channels)
        for path, got in zip(paths, pixels, strict=True):
            device = prepare(read_image(str(path)), spec, InputQuantizer.identity(), "BGR")
            np.testing.assert_array_equal(got, device)
    assert load_pixels([], spec, progress=False).shape == (0, 32, 32, 1)

    broken = tmp_path / "broken.jpg"
    broken.write_text("no")
    with pytest.raises(DataError, match=r"broken\.jpg"):
        load_pixels([*samples, Sample(broken, ("x",))], spec, progress=False)
