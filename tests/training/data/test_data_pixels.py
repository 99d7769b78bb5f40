"""Targets and pixels (training/data/pixels.py): the device's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device.inference.bundle import InputSpec
from device.inference.preprocess import InputQuantizer, prepare, read_image
from training.data import DataError, Sample, load_pixels, target_array


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


def test_pixels_read_from_disk_are_the_pixels_held_in_memory(samples_dir, tmp_path):
    """A split too large for memory is decoded per access; every way a reader takes it (one
    image, a slice, rows in any order, a subset, two splits joined) gives the same numbers."""
    from training.data import Pixels, batches
    from training.data.pixels import fits_in_memory

    samples = [Sample(p, ("photo",)) for p in sorted(samples_dir.glob("*.jpg"))]
    spec = InputSpec(height=24, width=24, dtype="uint8")
    held = Pixels.load(samples, spec, in_memory=True, progress=False)
    disk = Pixels.load(samples, spec, in_memory=False, progress=False)
    assert held.in_memory and not disk.in_memory
    assert disk.shape == held.shape == (len(samples), 24, 24, 3) and disk.dtype == np.uint8
    rows = np.array([2, 0, 1, 2])
    for index in (1, slice(1, 3), slice(None), rows):
        np.testing.assert_array_equal(disk[index], held[index])
    np.testing.assert_array_equal(disk.subset([2, 1])[:], held[[2, 1]])
    np.testing.assert_array_equal(Pixels.join(disk, held)[:], np.concatenate([held[:]] * 2))
    np.testing.assert_array_equal(np.concatenate(list(batches(disk, 2))), held[:])
    assert fits_in_memory(10, spec, limit=10 * 24 * 24 * 3)
    assert not fits_in_memory(11, spec, limit=10 * 24 * 24 * 3)

    gone = tmp_path / "gone.jpg"
    gone.write_bytes(samples[0].path.read_bytes())
    later = Pixels.load([Sample(gone, ("x",))], spec, in_memory=False, progress=False)
    gone.unlink()  # removed after the data check: named when it is read
    with pytest.raises(DataError, match=r"gone\.jpg"):
        later[0:1]
