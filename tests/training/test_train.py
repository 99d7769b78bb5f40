"""kestrel train: configuration, models, export through the device runtime, and small real
training runs for each task type (real images: scikit-learn's digits, scikit-image's faces).

The training runs are tiny (a few dozen images, a few epochs) so each takes seconds; they
check the whole path: data -> training -> int8 export -> gate through the device runtime ->
bundle that the device loads and runs, with its report.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.paths import REPO_ROOT

pytest.importorskip("tensorflow", reason="training-side test: needs the 'train' extra")

from device.cli import main as kestrel
from device.inference.bundle import load_bundle, write_bundle
from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from training.cli import config_from_args
from training.config import ConfigError, TrainConfig
from training.data import load_pixels
from training.evaluate import run_bundle
from training.export import batches_of, convert, io_quantization
from training.fit import PixelFit, fit_head, fit_pixels
from training.gate import MIN_LOST_IMAGES
from training.models import (
    BACKBONES,
    HEADS,
    assemble,
    blocks,
    build_embedder,
    build_head,
    input_spec,
    output_activation,
    resolve_input,
    unfreeze_top_blocks,
)
from training.remedies import HEAD_REFIT
from training.train import TrainError, train

# Small, fast settings shared by the training runs.
TINY = {
    "backbone": "small-cnn",
    "image_size": 32,
    "epochs": 12,
    "early_stopping_patience": 4,
    "flip": "none",  # digits are not mirror-symmetric
    "calibration_images": 100,
    "min_images_per_class": 5,
    # A few dozen test images: one image that int8 answers differently moves accuracy by
    # 3-4 points. The gate itself is tested at its default limit with a real int8 loss
    # (calibration on black images) far beyond that noise.
    "max_int8_drop": 15.0,
}


# --------------------------------------------------------------------------------------------
# Real tiny datasets


def _digit_images(classes: tuple[int, ...], per_class: int, size: int = 32):
    """scikit-learn's real 8x8 handwritten digits, upscaled to size x size uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for digit in classes:
        indices = np.flatnonzero(digits.target == digit)[:per_class]
        for i in indices:
            image = (digits.images[i] / 16 * 255).astype(np.uint8)
            yield digit, int(i), cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory) -> Path:
    """Multiclass: 4 digit classes x 40 images, a folder per class."""
    root = tmp_path_factory.mktemp("digits")
    for digit, i, image in _digit_images((0, 1, 2, 3), 40):
        folder = root / f"digit{digit}"
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def hierarchy_root(tmp_path_factory) -> Path:
    """Hierarchical: nested folders, round/{zero,six,eight} and straight/{one,four,seven}."""
    root = tmp_path_factory.mktemp("hierarchy")
    names = {0: "zero", 6: "six", 8: "eight", 1: "one", 4: "four", 7: "seven"}
    for digit, i, image in _digit_images(tuple(names), 30):
        parent = "round" if digit in (0, 6, 8) else "straight"
        folder = root / parent / names[digit]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), image)
    return root


@pytest.fixture(scope="module")
def mosaic_root(tmp_path_factory) -> Path:
    """Multilabel: 2x2 mosaics of real digits (0-3 or blank), labels = the digits present,
    listed in labels.csv."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("mosaics")
    digits = load_digits()
    pool = {d: np.flatnonzero(digits.target == d) for d in range(4)}
    rng = np.random.default_rng(0)
    rows = []
    for n in range(240):
        tiles, present = [], set()
        for _ in range(4):
            digit = int(rng.integers(0, 5))  # 4 = blank tile
            if digit == 4:
                tiles.append(np.zeros((16, 16), np.uint8))
                continue
            image = digits.images[rng.choice(pool[digit])] / 16 * 255
            tiles.append(cv2.resize(image.astype(np.uint8), (16, 16)))
            present.add(f"digit{digit}")
        mosaic = np.vstack([np.hstack(tiles[:2]), np.hstack(tiles[2:])])
        name = f"m{n:03d}.png"
        cv2.imwrite(str(root / name), mosaic)
        rows.append((name, ";".join(sorted(present))))
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "labels"), *rows])
    return root


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory) -> Path:
    """Binary: scikit-image's lfw_subset, 100 real faces vs 100 non-faces (25x25)."""
    from skimage.data import lfw_subset

    root = tmp_path_factory.mktemp("faces")
    for i, image in enumerate(lfw_subset()):
        folder = root / ("face" if i < 100 else "background")
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), (image * 255).round().astype(np.uint8))
    return root


def _check_bundle(path: Path, task: str, sample_image: Path) -> dict:
    """The bundle loads, runs on the device engine, and carries its report."""
    bundle = load_bundle(path)
    assert bundle.manifest.task == task
    for name in ("report.json", "report.md"):
        assert (path / name).is_file(), name
    report = json.loads((path / "report.json").read_text())
    assert report["gate"]["passed"] is True
    assert report["int8"]["scheme"] == "int8"
    assert report["baselines"]
    classifier = Classifier(bundle, accelerator="cpu")
    prediction = classifier.classify(read_image(str(sample_image)))
    assert prediction.task == task
    manifest = bundle.manifest
    assert manifest.quantization.scheme == "int8"
    assert manifest.input.dtype == "uint8"
    assert manifest.metrics["gate"]["passed"] is True
    assert "/" not in manifest.metrics["dataset"]["root"]  # no machine paths in the bundle
    return report


# --------------------------------------------------------------------------------------------
# Configuration


def test_config_defaults_are_valid_and_documented():
    config = TrainConfig()
    config.validate()
    # Model, input size and fine-tuning are left to the search (issue 10), within 15 minutes.
    assert (config.backbone, config.image_size, config.fine_tune) == (None, None, None)
    assert config.time_budget == 15.0 and config.fast is False
    assert config.export_format == "int8" and config.max_int8_drop == 1.0
    assert 100 <= config.calibration_images <= 1000
    source = REPO_ROOT / "training" / "config.py"
    text = source.read_text()
    lines = [line.strip() for line in text.splitlines()]
    for name in TrainConfig.field_names():  # every field: a default, then its docstring
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{name}:"))
        assert "=" in lines[i], f"{name} has no default"
        assert lines[i + 1].startswith('"""'), f"{name} is not documented"


def test_config_from_yaml_reads_a_subset(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("task: binary\nepochs: 7\nfine-tune: true\nlearning_rate: 0.01\n")
    config = TrainConfig.from_yaml(path)
    assert (config.task, config.epochs, config.fine_tune) == ("binary", 7, True)
    assert config.learning_rate == 0.01
    assert config.batch_size == TrainConfig().batch_size


def test_config_unknown_key_names_the_key_and_the_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 3\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: unknown setting\(s\) learning_rat"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: many\n", "epochs must be int"),
        ("epochs: 0\n", "epochs must be at least 1"),
        ("val_fraction: 0.6\ntest_fraction: 0.5\n", "val_fraction \\+ test_fraction < 1"),
        ("task: regression\n", "task must be one of"),
        ("- epochs\n", "expected a mapping"),
        ("epochs: [\n", "not valid YAML"),
    ],
)
def test_config_bad_values_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        TrainConfig.from_yaml(path)
    assert "bad.yaml" in str(info.value)


def test_config_overrides_ignore_flags_not_given():
    config = TrainConfig(epochs=9).override(epochs=None, seed=4, backbone="small-cnn")
    assert (config.epochs, config.seed, config.backbone) == (9, 4, "small-cnn")
    with pytest.raises(ConfigError, match="unknown setting"):
        TrainConfig().override(epoch=3)


def test_cli_flags_override_the_yaml_file(tmp_path):
    import argparse

    from training.cli import register

    path = tmp_path / "train.yaml"
    path.write_text("task: multilabel\nepochs: 7\nseed: 3\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "data", "--out", "m", "--config", str(path), "--seed", "5"])
    config = config_from_args(args)
    assert (config.task, config.epochs, config.seed) == ("multilabel", 7, 5)
    args = parser.parse_args(["train", "data", "--out", "m"])
    with pytest.raises(ConfigError, match="--task is required"):
        config_from_args(args)


# --------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_builds_with_its_embedding_size(name):
    spec = BACKBONES[name]
    size, channels = resolve_input(spec, 32, None)
    embedder = build_embedder(spec, spec.build(size, channels), size, channels)
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, channels))
    out = np.asarray(embedder(pixels.astype(np.float32), training=False))
    assert out.shape == (2, spec.embedding_size)
    assert np.all(np.isfinite(out))
    assert blocks(spec, embedder.layers[-1])  # grouped for fine-tuning


def test_pretrained_backbones_refuse_grayscale_and_tiny_inputs():
    spec = BACKBONES["efficientnet-lite0"]
    with pytest.raises(ValueError, match="colour"):
        resolve_input(spec, 64, True)
    with pytest.raises(ValueError, match="at least 32"):
        resolve_input(spec, 16, None)
    assert resolve_input(BACKBONES["small-cnn"], None, True) == (64, 1)
    assert resolve_input(spec, None, None) == (224, 3)


def test_unfreeze_top_blocks_keeps_batch_norm_frozen():
    import keras

    spec = BACKBONES["efficientnet-lite0"]
    backbone = spec.build(32, 3)
    unfreeze_top_blocks(spec, backbone, 2)
    trainable = {layer.name for layer in backbone.layers if layer.trainable and layer.weights}
    assert trainable and all(n.startswith(("top_", "block7a_")) for n in trainable)
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        for layer in backbone.layers
    )


@pytest.mark.parametrize(
    ("task", "units", "activation"),
    [
        ("binary", 1, "sigmoid"),
        ("multiclass", 4, "softmax"),
        ("multilabel", 4, "sigmoid"),
        ("hierarchical", 4, "none"),  # logits: an int8 softmax would zero small leaves
    ],
)
def test_heads_per_task(task, units, activation):
    assert output_activation(task) == activation
    spec = BACKBONES["small-cnn"]
    embedder = build_embedder(spec, spec.build(16, 1), 16, 1)
    model = assemble(embedder, build_head(task, 4, spec.embedding_size, 0.2), activation)
    out = np.asarray(model(np.full((3, 16, 16, 1), 128.0, np.float32)))
    assert out.shape == (3, units) and HEADS[task].units(4) == units
    if activation == "softmax":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    if activation == "sigmoid":
        assert np.all((out > 0) & (out < 1))
    assert output_activation(task, "logits") == "none"


@pytest.mark.slow
def test_exported_float_and_int8_models_agree_through_the_device_runtime(tmp_path, digits_root):
    """A small CNN (random weights) exported both ways runs in the device engine; int8 is
    calibrated on real digits and gives the float model's answers on most of them."""
    import keras

    keras.utils.set_random_seed(1)
    spec = BACKBONES["small-cnn"]
    embedder = build_embedder(spec, spec.build(32, 1), 32, 1)
    model = assemble(embedder, build_head("multiclass", 4, spec.embedding_size, 0.0), "softmax")
    from training.data import Sample

    paths = sorted(digits_root.rglob("*.png"))
    pixels = load_pixels([Sample(p, ()) for p in paths], input_spec(32, 1, "uint8"), progress=False)
    probs = {}
    for scheme, dtype in (("float32", "float32"), ("int8", "uint8")):
        model_bytes = convert(model, scheme, batches_of(pixels[::2]) if scheme == "int8" else None)
        fields = {
            "name": f"cnn-{scheme}",
            "task": "multiclass",
            "labels": ["a", "b", "c", "d"],
            "input": input_spec(32, 1, dtype).model_dump(),
            "output": {"activation": "softmax", "size": 4},
            "quantization": {"scheme": scheme, **io_quantization(model_bytes)},
        }
        bundle = write_bundle(tmp_path / scheme, model_bytes, fields)
        probs[scheme] = run_bundle(bundle, pixels[1::2], progress=False).probs
        Classifier(bundle, accelerator="cpu").classify(read_image(str(paths[0])))
    np.testing.assert_allclose(probs["float32"].sum(axis=1), 1.0, rtol=1e-4)
    expected = np.asarray(model(pixels[1::2].astype(np.float32)))
    np.testing.assert_allclose(probs["float32"], expected, atol=1e-4)
    agreement = np.mean(probs["float32"].argmax(1) == probs["int8"].argmax(1))
    assert agreement >= 0.9
    assert np.abs(probs["float32"] - probs["int8"]).max() < 0.1


# --------------------------------------------------------------------------------------------
# Training runs, one per task type


@pytest.mark.slow
def test_train_multiclass_small_cnn(tmp_path, digits_root, monkeypatch):
    """With pixels read from disk batch by batch, as a dataset too large for memory gets them
    (the other training tests hold theirs in memory): training, export and gate from files."""
    from training.data import Pixels

    monkeypatch.setattr("training.data.pixels.PIXEL_MEMORY_BYTES", 0)
    kinds: list[bool] = []
    load = Pixels.load

    def recording(*args, **kwargs):
        pixels = load(*args, **kwargs)
        kinds.append(pixels.in_memory)
        return pixels

    monkeypatch.setattr(Pixels, "load", recording)
    config = TrainConfig(task="multiclass", **TINY)
    result = train(digits_root, tmp_path / "digits", config, progress=False)
    assert kinds and not any(kinds)
    assert result.passed and result.bundle_path == tmp_path / "digits"
    report = _check_bundle(result.bundle_path, "multiclass", next(digits_root.rglob("*.png")))
    assert report["float"]["accuracy"] >= 0.85  # chance: 0.25
    assert report["int8"]["accuracy"] >= 0.85
    assert (result.bundle_path / "confusion.png").is_file()
    assert set(result.timings) >= {"data", "train", "export", "gate", "baselines", "total"}
    manifest = load_bundle(result.bundle_path).manifest
    assert manifest.output.activation == "softmax"
    assert manifest.labels == ["digit0", "digit1", "digit2", "digit3"]
    assert manifest.created_by.command.startswith("kestrel train ")


@pytest.mark.long  # by hand: pytest -m long (see README, Development)
def test_train_binary_pretrained_with_fine_tuning(tmp_path, faces_root):
    """The default backbone (pretrained EfficientNet-Lite0) on real faces vs non-faces:
    cached embeddings, head, one epoch of fine-tuning, int8 export."""
    config = TrainConfig(
        task="binary",
        image_size=48,
        epochs=20,
        fine_tune=True,
        fine_tune_epochs=1,
        augment_copies=2,
        calibration_images=100,
        max_int8_drop=TINY["max_int8_drop"],
    )
    result = train(faces_root, tmp_path / "faces", config, progress=False)
    report = _check_bundle(result.bundle_path, "binary", next(faces_root.rglob("*.png")))
    manifest = load_bundle(result.bundle_path).manifest
    assert manifest.labels == ["background", "face"]
    assert manifest.output.size == 1 and manifest.output.activation == "sigmoid"
    assert 0 < manifest.thresholds.binary < 1
    assert report["int8"]["accuracy"] >= 0.85  # chance: 0.5
    # Fine-tuning ran and compared itself with the head alone on validation data.
    assert "validation loss" in report["training"]["fine_tune"]
    assert "fine_tune" in result.timings


def _digit_arrays(per_class: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    items = list(_digit_images((0, 1, 2, 3), per_class, size))
    pixels = np.stack([np.repeat(image[..., None], 3, axis=2) for _, _, image in items])
    return pixels, np.array([digit for digit, _, _ in items])


@pytest.mark.parametrize(("learning_rate", "kept"), [(3e-3, True), (50.0, False)])
def test_fine_tuning_keeps_its_weights_only_when_validation_loss_falls(learning_rate, kept):
    """A sane learning rate lowers the validation loss of an untrained model: its weights are
    kept. An absurd one wrecks the model: every weight is put back as it was."""
    import keras

    keras.utils.set_random_seed(0)
    pixels, y = _digit_arrays(30)
    onehot = np.eye(4, dtype=np.float32)[y]
    spec = BACKBONES["small-cnn"]
    backbone = spec.build(32, 3)
    embedder = build_embedder(spec, backbone, 32, 3)
    head = build_head("multiclass", 4, spec.embedding_size, 0.0)
    before = [w.copy() for w in embedder.get_weights() + head.get_weights()]
    config = TrainConfig(task="multiclass", batch_size=16, early_stopping_patience=0)
    fit = fit_pixels(
        embedder,
        head,
        None,
        (pixels[::2], onehot[::2], np.ones(len(y[::2]), np.float32)),
        (pixels[1::2], onehot[1::2]),
        config,
        epochs=3,
        learning_rate=learning_rate,
        desc="fine-tune",
        progress=False,
        keep_if_worse=True,
    )
    after = embedder.get_weights() + head.get_weights()
    assert fit.kept is kept
    assert fit.val_loss_before is not None and fit.val_loss_after is not None
    assert (fit.val_loss_after < fit.val_loss_before) is kept
    unchanged = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert unchanged is not kept
    assert ("were kept" in fit.describe()) is not kept


def test_a_fit_stops_after_the_epoch_that_reaches_its_deadline():
    """Given a deadline, the head and the end-to-end fit stop at it (after the epoch that
    would leave too little time for another), and say so; without one they run their epochs."""
    import time

    import keras

    keras.utils.set_random_seed(0)
    pixels, y = _digit_arrays(10)
    onehot = np.eye(4, dtype=np.float32)[y]
    config = TrainConfig(task="multiclass", batch_size=16, early_stopping_patience=0)
    spec = BACKBONES["small-cnn"]
    embedder = build_embedder(spec, spec.build(32, 3), 32, 3)
    head = build_head("multiclass", 4, spec.embedding_size, 0.0)
    train_set = (pixels, onehot, np.ones(len(y), np.float32))

    def fit(deadline):
        return fit_pixels(embedder, head, None, train_set, (pixels[:8], onehot[:8]), config,
                          epochs=4, learning_rate=1e-3, desc="t", progress=False,
                          deadline=deadline)  # fmt: skip

    assert fit(None) == PixelFit(epochs=4)
    stopped = fit(time.perf_counter())
    assert stopped.epochs == 1 and stopped.at_deadline
    assert "all the time allowed" in stopped.describe()
    embeddings = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    small_head = build_head("multiclass", 4, 8, 0.0)
    head_set = (embeddings, onehot, np.ones(len(y), np.float32))
    head_config = config.override(epochs=5)
    assert fit_head(small_head, head_set, (embeddings[:8], onehot[:8]), head_config,
                    progress=False, deadline=time.perf_counter()) == 1  # fmt: skip
    assert fit_head(small_head, head_set, (embeddings[:8], onehot[:8]), head_config,
                    progress=False) == 5  # fmt: skip


def test_a_head_stops_on_its_training_loss_when_validation_is_too_small_to_tell():
    import keras

    from training.fit import HEAD_MIN_VAL_IMAGES

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    embeddings = (np.eye(4)[y] * 3 + rng.normal(size=(40, 4))).astype(np.float32)
    onehot = np.eye(4, dtype=np.float32)[y]
    wrong = np.roll(onehot, 1, axis=1)  # validation labels the training data contradicts
    config = TrainConfig(task="multiclass", epochs=12, early_stopping_patience=1)

    def epochs(val_images: int) -> int:
        head = build_head("multiclass", 4, 4, 0.0)
        rows = np.arange(val_images) % 40
        val = (embeddings[rows], wrong[rows])
        return fit_head(head, (embeddings, onehot, np.ones(40, np.float32)), val, config,
                        progress=False)  # fmt: skip

    assert epochs(HEAD_MIN_VAL_IMAGES) < 12  # its validation loss rises: stopped early
    assert epochs(HEAD_MIN_VAL_IMAGES - 1) == 12  # too few to tell: the training loss falls


@pytest.mark.long  # by hand: pytest -m long (see README, Development)
def test_train_multilabel_from_csv(tmp_path, mosaic_root):
    config = TrainConfig(task="multilabel", **TINY)
    result = train(mosaic_root, tmp_path / "mosaics", config, progress=False)
    report = _check_bundle(result.bundle_path, "multilabel", mosaic_root / "m000.png")
    manifest = load_bundle(result.bundle_path).manifest
    assert manifest.output.activation == "sigmoid"
    assert set(manifest.thresholds.per_label) == set(manifest.labels)
    assert report["int8"]["map"] >= 0.8  # chance: the label frequency, about 0.4


@pytest.mark.long  # by hand: pytest -m long (see README, Development)
def test_train_hierarchical_nested_folders(tmp_path, hierarchy_root):
    config = TrainConfig(task="hierarchical", **TINY)
    result = train(hierarchy_root, tmp_path / "shapes", config, progress=False)
    report = _check_bundle(result.bundle_path, "hierarchical", next(hierarchy_root.rglob("*.png")))
    manifest = load_bundle(result.bundle_path).manifest
    assert manifest.output.activation == "none"  # logits; the device applies softmax
    assert manifest.taxonomy["zero"] == "round" and manifest.taxonomy["round"] is None
    level1 = next(row for row in report["int8"]["levels"] if row["level"] == 1)
    assert level1["accuracy"] >= 0.9  # chance: 0.5
    assert report["int8"]["accuracy"] >= 0.7  # leaves; chance: 1/6


# --------------------------------------------------------------------------------------------
# The gate, the command line, refusals


def _calibrate_on_black(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 calibrated on all-black images (as many as the real ones): every activation range
    is measured on pictures unlike the data, so real digits saturate and int8 loses its accuracy
    for real (float is unchanged)."""
    import training.export as export_module  # where the trainer picks calibration images

    real = export_module.representative_pixels

    def black(*args, **kwargs):
        return np.zeros_like(real(*args, **kwargs))

    monkeypatch.setattr(export_module, "representative_pixels", black)


@pytest.fixture
def black_calibration(monkeypatch):
    _calibrate_on_black(monkeypatch)


@pytest.mark.slow
def test_gate_failure_writes_no_bundle_unless_forced(
    tmp_path, digits_root, capsys, black_calibration
):
    out = tmp_path / "gated"
    tiny = {key: value for key, value in TINY.items() if key != "max_int8_drop"}
    config = TrainConfig(task="multiclass", **{**tiny, "epochs": 3})
    assert config.max_int8_drop == TrainConfig().max_int8_drop  # the normal limit
    result = train(digits_root, out, config, progress=False)
    assert not result.passed and result.bundle_path is None
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left behind either
    gate = result.gate
    # A real loss, far beyond chance: not a limit set below what any model achieves.
    assert gate["drop_points"] > config.max_int8_drop and not gate["within_chance"]
    assert gate["lost_images"] >= MIN_LOST_IMAGES
    # Remedies were tried before refusing (all calibrated on black here, so all fail).
    tried = [row["remedy"] for row in result.report["int8_remedies"]]
    assert tried[0].startswith("more calibration") and tried[1].startswith("different")
    assert tried[2] == HEAD_REFIT and "quantization-aware" in tried[3]
    assert result.report["float"]["accuracy"] >= 0.8  # chance: 0.25
    # The report names the classes int8 lost most on, each with its F1 drop.
    worst = [row["label"] for row in gate["worst_classes"]]
    assert worst and set(worst) <= {"digit0", "digit1", "digit2", "digit3"}
    assert all(row["drop"] > 0 for row in gate["worst_classes"])
    err = capsys.readouterr().err
    assert "GATE FAILED" in err and "1-point limit" in err and "--force" in err
    assert all(label in err.split("most on:")[-1] for label in worst)  # the last verdict

    first = result
    result = train(digits_root, out, config, force=True, progress=False)
    assert result.bundle_path == out

    # Same seed, same data: the same model and figures (training is deterministic).
    def figures(run):
        return {k: v for k, v in run.report["int8"].items() if k != "latency_ms"}

    assert figures(result) == figures(first)
    manifest = load_bundle(out).manifest
    assert manifest.metrics["gate"]["passed"] is False
    assert manifest.metrics["gate"]["forced"] is True
    report_md = (out / "report.md").read_text()
    assert "FAILED" in report_md and all(label in report_md for label in worst)


@pytest.mark.slow
def test_cli_train_eval_and_exit_codes(tmp_path, digits_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # kestrel eval's default report folder lands here
    out = tmp_path / "models" / "digits"
    base = ["train", str(digits_root), "--task", "multiclass", "--out", str(out), "-q"]
    tiny = ["--backbone", "small-cnn", "--image-size", "32", "--epochs", "3"]
    with monkeypatch.context() as patched:  # int8 calibrated on black images: a real loss
        _calibrate_on_black(patched)
        assert kestrel([*base, *tiny]) == 3
    assert not out.exists()
    assert "GATE FAILED" in capsys.readouterr().err
    # Calibrated on its own images, the same run passes the same (default) limit.
    assert kestrel([*base, *tiny]) == 0
    load_bundle(out)
    report_dir = tmp_path / "eval"
    everything = ["--split", "all", "--report-dir", str(report_dir)]
    assert kestrel(["eval", str(out), str(digits_root), *everything]) == 0
    evaluated = json.loads((report_dir / "report.json").read_text())
    assert evaluated["kind"] == "eval" and evaluated["int8"]["n"] == 160  # every image
    assert kestrel(["eval", str(out), str(digits_root), "-q"]) == 0  # default: the test split
    trained = json.loads((out / "report.json").read_text())
    tested = json.loads(Path(f"eval-digits-{digits_root.name}/report.json").read_text())
    # The same test split and thresholds as in training: the same figures.
    assert tested["int8"]["n"] == trained["int8"]["n"]
    assert tested["int8"]["accuracy"] == trained["int8"]["accuracy"]

    capsys.readouterr()
    single = tmp_path / "single"
    (single / "cats").mkdir(parents=True)
    for i, (_, _, image) in enumerate(_digit_images((0,), 6)):
        cv2.imwrite(str(single / "cats" / f"{i}.png"), image)
    assert kestrel(["train", str(single), "--task", "binary", "--out", str(tmp_path / "x")]) == 2
    assert "kestrel:" in capsys.readouterr().err
    assert kestrel([*base, "--backbone", "efficientnet-lite0", "--image-size", "8"]) == 2
    assert "at least 32" in capsys.readouterr().err


def test_train_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path, digits_root):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not a bundle")
    with pytest.raises(TrainError, match="not a Kestrel bundle"):
        train(digits_root, precious, TrainConfig(task="multiclass", **TINY), progress=False)
    with pytest.raises(TrainError, match="outside the data folder"):
        train(digits_root, digits_root / "out", TrainConfig(**TINY), progress=False)
    assert (precious / "holiday.jpg").read_bytes() == b"not a bundle"


@pytest.mark.slow
def test_train_other_export_format(tmp_path, digits_root):
    """float16 (and dynamic / float32) bundles take float input; the gate compares them with
    the float32 reference the same way."""
    config = TrainConfig(task="multiclass", export_format="float16", **{**TINY, "epochs": 3})
    result = train(digits_root, tmp_path / "f16", config, progress=False)
    manifest = load_bundle(result.bundle_path).manifest
    assert manifest.quantization.scheme == "float16"
    assert manifest.input.dtype == "float32" and manifest.quantization.input is None
    assert result.report["int8"]["scheme"] == "float16"
    assert abs(result.gate["drop_points"]) <= 1.0
    Classifier(result.bundle_path, accelerator="cpu").classify(
        read_image(str(next(digits_root.rglob("*.png"))))
    )
