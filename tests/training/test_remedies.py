"""The int8 remedies tried before the gate refuses a bundle (:mod:`training.remedies`), on
real digit images through the real converter and the device's TFLite runtime."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training import remedies
from training.config import TrainConfig
from training.export import batches_of, convert
from training.models import assemble, build_embedder, build_head, get_backbone
from training.train import train


def _black_first(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first int8 export is calibrated on black images (a real, large int8 loss); every
    later call picks real training images. Returns the list of calls."""
    import training.export as export_module

    real = export_module.representative_pixels
    calls: list[int] = []

    def black_first(*args, **kwargs):
        calls.append(1)
        images = real(*args, **kwargs)
        return np.zeros_like(images) if len(calls) == 1 else images

    monkeypatch.setattr(export_module, "representative_pixels", black_first)
    return calls


SMALL = {"task": "multiclass", "backbone": "small-cnn", "flip": "none", "epochs": 12,
         "calibration_images": 60}  # fmt: skip


def test_int8_remedies_recalibrate_before_the_gate_refuses(tiny_digits, tmp_path, monkeypatch):
    """The first remedy, real training images, passes the gate and is the bundle written."""
    calls = _black_first(monkeypatch)
    result = train(tiny_digits, tmp_path / "b", TrainConfig(**SMALL), progress=False)
    tried = result.report["int8_remedies"]
    assert tried[0]["remedy"].startswith("more calibration images") and tried[0]["passed"]
    assert len(tried) == 1 and len(calls) == 2
    assert result.passed and result.bundle_path is not None
    assert "int8 remedies tried" in (result.bundle_path / "report.md").read_text()


def _digit_pixels(root: Path) -> np.ndarray:
    paths = sorted(root.rglob("*.png"))
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[..., None] for p in paths])


def test_int8_embeddings_are_what_the_int8_model_feeds_its_head(tiny_digits):
    """The int8 embedder's dequantized outputs are the features the whole int8 model's
    head works on: the float head on them ranks as the int8 model does."""
    import keras

    keras.utils.set_random_seed(0)
    spec = get_backbone("small-cnn")
    embedder = build_embedder(spec, spec.build(8, 1), 8, 1)
    head = build_head("multiclass", 5, spec.embedding_size, 0.0)
    model = assemble(embedder, head, "none")
    pixels = _digit_pixels(tiny_digits)
    int8_embedder = convert(embedder, "int8", batches_of(pixels[::3]))
    embedded = remedies.int8_embeddings(int8_embedder, pixels)
    exact = embedder.predict(pixels.astype(np.float32), verbose=0)
    assert embedded.shape == exact.shape == (len(pixels), spec.embedding_size)
    cosine = (
        (embedded * exact).sum(1) / np.linalg.norm(embedded, axis=1) / np.linalg.norm(exact, axis=1)
    )
    assert np.median(cosine) > 0.95
    norms = np.linalg.norm(embedded, axis=1) / np.linalg.norm(exact, axis=1)
    assert 0.8 < np.median(norms) < 1.25  # dequantized, not raw uint8 codes

    int8_model = convert(model, "int8", batches_of(pixels[::3]))
    from_model = remedies.int8_embeddings(int8_model, pixels)  # its (dequantized) logits
    from_head = np.asarray(head(embedded))
    assert (from_model.argmax(1) == from_head.argmax(1)).mean() >= 0.9


def test_the_head_refit_on_int8_embeddings_is_a_remedy_of_its_own(
    tiny_digits, tmp_path, monkeypatch
):
    """With recalibration out of the way, the head is trained again on the int8 backbone's
    embeddings; the model then exported (int8 and its float reference) is the one gated and
    written, and the report says so."""
    _black_first(monkeypatch)
    monkeypatch.setattr(remedies, "_calibration_sets", lambda data, config: iter(()))
    refits = []
    real_refit = remedies._head_refit

    def counted(trained, *args):
        before = trained.model.get_layer("head").get_weights()
        exported = real_refit(trained, *args)
        after = trained.model.get_layer("head").get_weights()
        refits.append(any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)))
        return exported

    monkeypatch.setattr(remedies, "_head_refit", counted)
    result = train(tiny_digits, tmp_path / "b", TrainConfig(**SMALL), progress=False)
    tried = result.report["int8_remedies"]
    assert [row["remedy"] for row in tried] == [remedies.HEAD_REFIT]
    assert tried[0]["passed"] and refits == [True]  # the head's weights changed
    assert result.passed and result.bundle_path is not None
    assert remedies.HEAD_REFIT in (result.bundle_path / "report.md").read_text()
    assert result.report["int8"]["accuracy"] >= 0.8  # chance: 0.2
