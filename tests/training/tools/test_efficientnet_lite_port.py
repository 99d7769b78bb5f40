"""Known-answer tests for the EfficientNet-Lite0 weights ported from PyTorch.

The torch logits were recorded by training/tools/port_efficientnet_lite.py on the sample photos
(models/backbones/efficientnet-lite0/reference.npz), so these tests need TensorFlow but
not torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training-side test: needs the 'train' extra")

from training.backbones.efficientnet_lite import (
    EFFICIENTNET_LITE0_INPUT_SIZE,
    EFFICIENTNET_LITE0_NORMALIZATION,
    EFFICIENTNET_LITE_SPECS,
    WEIGHTS_DIR,
    WeightsMismatchError,
    build_efficientnet_lite,
    build_efficientnet_lite0,
    keras_weight_arrays,
    load_weights_by_name,
)

LITE0_DIR = WEIGHTS_DIR / "efficientnet-lite0"
IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
TOLERANCE = 1e-3


def _normalize(rgb: np.ndarray) -> np.ndarray:
    mean, std = EFFICIENTNET_LITE0_NORMALIZATION
    return (rgb.astype(np.float32) - mean) / std


def _trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(LITE0_DIR / "reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def lite0():
    return build_efficientnet_lite0()  # weights="imagenet": the committed file


@pytest.fixture(scope="module")
def keras_logits(lite0, reference) -> np.ndarray:
    return np.asarray(lite0(_normalize(reference["inputs"]), training=False))


def test_reference_file_is_what_the_port_recorded(reference):
    assert reference["inputs"].dtype == np.uint8
    assert reference["inputs"].shape == (4, 224, 224, 3)
    assert list(reference["names"]) == [
        "cat-chelsea.jpg",
        "coffee.jpg",
        "astronaut.jpg",
        "rocket.jpg",
    ]
    assert reference["logits"].shape == (4, 1000)
    assert EFFICIENTNET_LITE0_INPUT_SIZE == 224


def test_logits_match_torch(keras_logits, reference):
    torch_logits = reference["logits"]
    max_diff = float(np.abs(keras_logits - torch_logits).max())
    assert max_diff < TOLERANCE, f"max |keras - torch| = {max_diff}"
    np.testing.assert_array_equal(keras_logits.argmax(axis=1), torch_logits.argmax(axis=1))


def test_sample_photos_get_sensible_classes(keras_logits, reference):
    top5 = {
        str(name): set(np.argsort(-logits)[:5].tolist())
        for name, logits in zip(reference["names"], keras_logits, strict=True)
    }
    assert top5["cat-chelsea.jpg"] & IMAGENET_CATS, top5["cat-chelsea.jpg"]
    assert top5["coffee.jpg"] & IMAGENET_COFFEE, top5["coffee.jpg"]


def test_backbone_returns_pooled_features_matching_torch(reference):
    backbone = build_efficientnet_lite0(include_top=False)
    features = np.asarray(backbone(_normalize(reference["inputs"]), training=False))
    assert features.shape == (4, 1280)
    assert float(np.abs(features - reference["features"]).max()) < TOLERANCE


def test_missing_array_in_weights_file_is_named(tmp_path: Path):
    with np.load(LITE0_DIR / "efficientnet-lite0-imagenet.npz") as data:
        arrays = {key: data[key] for key in data.files}
    assert len(arrays) == 247
    del arrays["block3b_dwconv/kernel"]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)  # uncompressed: quicker to write in a test
    with pytest.raises(WeightsMismatchError, match="block3b_dwconv/kernel"):
        build_efficientnet_lite0(weights=broken)


def test_wrong_shape_and_unused_arrays_are_rejected(lite0):
    arrays = keras_weight_arrays(lite0)
    bad_shape = dict(arrays, **{"top_bn/gamma": np.zeros(3, np.float32)})
    with pytest.raises(WeightsMismatchError, match="top_bn/gamma"):
        load_weights_by_name(lite0, bad_shape)
    extra = dict(arrays, **{"renamed_layer/kernel": np.zeros(1, np.float32)})
    with pytest.raises(WeightsMismatchError, match="renamed_layer/kernel"):
        load_weights_by_name(lite0, extra)


def test_imagenet_weights_need_the_imagenet_classifier():
    with pytest.raises(ValueError, match="num_classes"):
        build_efficientnet_lite0(num_classes=10)


# Trainable parameter counts of efficientnet-lite-pytorch 0.1.0's EfficientNet.from_name().
UPSTREAM_PARAMS = {
    "efficientnet-lite0": 4_652_008,
    "efficientnet-lite1": 5_416_680,
    "efficientnet-lite2": 6_092_072,
    "efficientnet-lite3": 8_197_096,
    "efficientnet-lite4": 13_006_568,
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_PARAMS))
def test_spec_registry_matches_upstream_architectures(name, lite0):
    assert set(EFFICIENTNET_LITE_SPECS) == set(UPSTREAM_PARAMS)
    model = lite0 if name == "efficientnet-lite0" else build_efficientnet_lite(name, weights=None)
    assert _trainable_count(model) == UPSTREAM_PARAMS[name]


def test_backbone_module_does_not_import_torch():
    assert "torch" not in sys.modules
