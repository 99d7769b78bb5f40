"""Bundles through the real device runtime: the shipped ImageNet model on the sample photos, and
a tiny binary model trained here on real faces (skimage's lfw_subset), exported to int8."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from device.inference.bundle import BundleError, InputSpec, load_bundle, write_bundle
from device.inference.preprocess import InputQuantizer, prepare, read_image
from training.evaluate import evaluate_bundle, evaluate_pixels, run_bundle

CAT_CLASSES = {"tabby cat", "a cat having a striped coat", "Persian cat", "Siamese cat"}
PHOTOS = ["cat-chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"]


@pytest.fixture(scope="module")
def shipped_pixels(shipped_model, samples_dir) -> np.ndarray:
    spec = load_bundle(shipped_model).manifest.input
    identity = InputQuantizer.identity()
    return np.stack([prepare(read_image(str(samples_dir / p)), spec, identity) for p in PHOTOS])


def test_shipped_model_through_the_runtime(shipped_model, shipped_pixels):
    run = run_bundle(shipped_model, shipped_pixels, progress=False, threads=2)
    labels = load_bundle(shipped_model).labels
    assert run.probs.shape == (4, 1000)
    np.testing.assert_allclose(run.probs.sum(axis=1), 1.0, atol=1e-4)
    assert labels[int(run.probs[0].argmax())] in CAT_CLASSES
    latency = run.latency_ms
    assert latency["images"] == 4 and latency["threads"] == 2
    assert 0 < latency["p50"] <= latency["p90"] and latency["mean"] > 0


def test_shipped_model_hierarchical_figures(shipped_model, shipped_pixels):
    bundle = load_bundle(shipped_model)
    labels = bundle.labels
    targets = np.array([labels.index("tabby cat"), labels.index("espresso")])
    section = evaluate_pixels(bundle, shipped_pixels[:2], targets, progress=False)
    assert section["scheme"] == "int8" and section["n"] == 2
    assert section["levels"][0] == {"level": 1, "accuracy": 1.0}  # animal, food
    # The cat's breeds disagree, so the device backs off to "cat": still correct.
    assert section["backoff"]["accuracy"] == 1.0
    assert section["backoff"]["leaf_rate"] < 1.0
    assert section["latency_ms"]["images"] == 2
    assert set(section["confusion_labels"]) >= {"tabby cat", "espresso"}
    assert len(section["confusion_labels"]) < 10  # 1000 labels: only those that occur


def test_pixels_of_the_wrong_shape_are_refused(shipped_model):
    with pytest.raises(ValueError, match=r"expected \(N, 224, 224, 3\) uint8"):
        run_bundle(shipped_model, np.zeros((2, 16, 16, 3), np.uint8), progress=False)


# ---- a tiny binary model trained on real faces ----------------------------------------------

SPEC = InputSpec(height=16, width=16, channels=1, dtype="uint8", fit="stretch")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """skimage's 200 real 25x25 crops as a binary dataset folder: face/ and no_face/."""
    import skimage.data

    root = tmp_path_factory.mktemp("faces")
    images = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)
    for i, image in enumerate(images):
        folder = root / ("face" if i < 100 else "no_face")
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return root


def _pixels(paths: list[Path]) -> np.ndarray:
    identity = InputQuantizer.identity()
    return np.stack([prepare(read_image(str(p)), SPEC, identity) for p in paths])


@pytest.fixture(scope="module")
def face_bundle(faces, tmp_path_factory):
    """A small CNN trained for a few seconds, exported to full int8 on real images."""
    import keras

    from training.export import batches_of, convert, io_quantization

    paths = sorted(faces.glob("*/*.png"))
    targets = np.array([p.parent.name == "face" for p in paths], dtype=np.int64)
    pixels = _pixels(paths)
    order = np.random.default_rng(0).permutation(len(paths))
    train, test = order[:140], order[140:]

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(pixels[train].astype(np.float32), targets[train], epochs=40, verbose=0)
    float_probs = model.predict(pixels[test].astype(np.float32), verbose=0)[:, 0]

    model_bytes = convert(model, "int8", batches_of(pixels[train]))
    quant = io_quantization(model_bytes)
    bundle = write_bundle(
        tmp_path_factory.mktemp("bundles") / "faces",
        model_bytes,
        {
            "name": "faces",
            "task": "binary",
            "labels": ["no_face", "face"],
            "input": SPEC.model_dump(),
            "output": {"activation": "sigmoid", "size": 1},
            "quantization": {"scheme": "int8", **quant},
            "thresholds": {"binary": 0.5},
        },
    )
    return bundle, pixels[test], targets[test], float_probs


@pytest.mark.slow
def test_tiny_int8_model_matches_its_float_model(face_bundle):
    bundle, pixels, targets, float_probs = face_bundle
    run = run_bundle(bundle, pixels, progress=False)
    assert run.probs.shape == (len(pixels), 2)  # one sigmoid -> [1 - p, p]
    np.testing.assert_allclose(run.probs.sum(axis=1), 1.0, atol=1e-6)
    # int8 stays close to float: the output is quantized in steps of 1/256.
    assert np.abs(run.probs[:, 1] - float_probs).max() < 0.05
    section = evaluate_pixels(bundle, pixels, targets, progress=False)
    float_accuracy = np.mean((float_probs >= 0.5) == targets)
    assert section["accuracy"] >= 0.8
    assert abs(section["accuracy"] - float_accuracy) <= 0.05
    assert section["confusion_matrix"][0][0] + section["confusion_matrix"][1][1] == round(
        section["accuracy"] * len(targets)
    )
    assert section["roc_auc"] > 0.85


@pytest.mark.slow
def test_evaluate_bundle_on_a_labeled_folder(face_bundle, faces, tmp_path):
    bundle = face_bundle[0]
    report = evaluate_bundle(bundle.path, faces, split="all", progress=False)
    assert report["kind"] == "eval" and report["task"] == "binary"
    section = report["int8"]
    assert section["n"] == 200  # split "all": every image
    assert section["accuracy"] >= 0.8  # includes the 140 training images
    assert [row["support"] for row in section["per_class"]] == [100, 100]
    assert report["dataset"]["images"]["train"] == 200

    test_only = evaluate_bundle(bundle.path, faces, progress=False)  # the default: test
    assert test_only["split"] == "test" and 0 < test_only["int8"]["n"] < 100

    # A folder with a class the bundle does not know: the error names it and the missing one.
    wrong = tmp_path / "wrong"
    (wrong / "face").mkdir(parents=True)
    (wrong / "cat").mkdir()
    for i, p in enumerate(sorted((faces / "face").glob("*.png"))[:5]):
        (wrong / "face" / p.name).write_bytes(p.read_bytes())
        cv2.imwrite(str(wrong / "cat" / f"{i}.png"), np.full((25, 25), 40 * i, np.uint8))
    with pytest.raises(
        BundleError, match=r"labels \['cat'\] are not labels of the bundle.*no_face"
    ):
        evaluate_bundle(bundle.path, wrong, progress=False)
    with pytest.raises(BundleError, match="binary model, asked to evaluate it as multiclass"):
        evaluate_bundle(bundle.path, faces, task="multiclass", progress=False)
