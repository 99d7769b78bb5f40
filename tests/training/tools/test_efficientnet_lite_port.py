"""Known-answer tests for the EfficientNet-Lite0 weights ported from PyTorch.

The torch logits were recorded by training/tools/port_efficientnet_lite.py on the sample photos
(models/backbones/efficientnet-lite0/reference.npz), so these tests need TensorFlow but
not torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training-side test: needs the 'train' extra")

from device.paths import REPO_ROOT
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


# A stand-in for an installed torch: importing it succeeds (so a `try: import torch` fallback
# is caught too) and leaves a record naming who imported it.
FAKE_TORCH = """
import os, traceback
with open(os.environ["FAKE_TORCH_RECORD"], "a") as record:
    record.write("".join(traceback.format_stack()))
__version__ = "0.0-fake"
"""

# What a user of the shipped weights runs: the port's own preprocessing of the sample photos,
# the backbone through the training registry, pooled features compared with torch's recorded
# ones (the port's verification, without torch).
WITHOUT_TORCH = """
import json, sys
import numpy as np
from device.paths import SAMPLES_DIR
from training.backbones.efficientnet_lite import WEIGHTS_DIR
from training.models import build_embedder, get_backbone
from training.tools import port_efficientnet_lite as port

with np.load(WEIGHTS_DIR / "efficientnet-lite0" / "reference.npz") as data:
    reference = {key: data[key] for key in data.files}
name = str(reference["names"][0])
pixels = port.load_sample(SAMPLES_DIR / name)[None]
spec = get_backbone("efficientnet-lite0")
embedder = build_embedder(spec, spec.build(224, 3), 224, 3)
features = np.asarray(embedder(pixels.astype(np.float32), training=False))
print(json.dumps({
    "same_inputs": bool(np.array_equal(pixels[0], reference["inputs"][0])),
    "feature_diff": float(np.abs(features[0] - reference["features"][0]).max()),
    "torch_in_sys_modules": "torch" in sys.modules,
}))
"""


def _run_with_fake_torch(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``code`` in a fresh interpreter that finds the fake torch first on sys.path;
    returns the process and what the fake recorded (empty: torch was never imported)."""
    fake_site = tmp_path / "site"
    (fake_site / "torch").mkdir(parents=True, exist_ok=True)
    (fake_site / "torch" / "__init__.py").write_text(FAKE_TORCH)
    record = tmp_path / "torch-imports.txt"
    record.write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake_site), str(REPO_ROOT)]),
        "FAKE_TORCH_RECORD": str(record),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc, record.read_text()


def test_fake_torch_records_an_import(tmp_path: Path):
    """The trap works: with the fake on the path, an import of torch is seen."""
    proc, imports = _run_with_fake_torch(tmp_path, "import torch; print(torch.__version__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0.0-fake"
    assert "<string>" in imports  # the record names the importer


def test_shipped_backbone_and_port_verification_need_no_torch(tmp_path: Path):
    """Users need no torch: with a torch importable, building the ported backbone, the port's
    preprocessing and the comparison with torch's recorded features never import it."""
    proc, imports = _run_with_fake_torch(tmp_path, WITHOUT_TORCH)
    assert proc.returncode == 0, proc.stderr
    assert imports == "", f"torch was imported:\n{imports}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["torch_in_sys_modules"] is False
    assert result["same_inputs"] is True  # the port's preprocessing, reproduced
    assert result["feature_diff"] < TOLERANCE  # the work really ran, on the real weights
