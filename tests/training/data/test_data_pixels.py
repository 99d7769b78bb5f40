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
