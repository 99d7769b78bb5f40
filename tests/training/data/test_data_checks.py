"""Checking datasets (training/data/checks.py, load.py): bad files, counts, arguments."""

from __future__ import annotations

import shutil
from collections import Counter

import cv2
import pytest
from dataset_files import all_samples, rel_paths, write_images

from training.data import DataError, load_dataset


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
