"""int8 remedies tried before the gate refuses a bundle.

When the int8 model loses more than the gate allows against the float model, the trainer
re-quantizes the same trained model with other calibration data, cheapest first, and keeps
the first export that passes (each measured exactly as the first one: through the device
runtime, thresholds refitted on validation):

1. *more calibration images*: every training image (up to :data:`MORE_IMAGES`), un-augmented;
2. *different calibration images*: training and validation images together, reshuffled;
3. *the head refitted on int8 embeddings*: the backbone alone is converted to int8 (with the
   first export's calibration images) and the head is trained again, from its weights, on the
   embeddings that int8 backbone computes through the device runtime, the features the device
   will see. Measured on few-shot Fashion-MNIST (13 images per class, Lite0 at 128 px;
   ``python bench/train_defaults.py --only fewshot``): the recalibrations leave a 1.7 and
   1.6-point drop, the refit int8 model 0.717 against the trained float model's 0.718; a
   one-off diagnosis put the loss in the int8 embeddings (the float head on them: 0.718 ->
   0.697; cosine to the float ones 0.97).

Every remedy is judged against the float model as trained, never against its own float twin:
a refitted head can make both poor (int8 calibrated on black images: float and int8 both at
chance, a "drop" of 0) and would pass.

Another input size is tried by the search itself (every candidate's int8 model is scored on
validation before a winner is chosen), so a model that only works in float does not win.
Quantization-aware training was checked and is not used: tensorflow-model-optimization 0.8.1
installs with TensorFlow 2.21 (it pulls tf-keras 2.21), but ``quantize_model`` refuses Keras 3
models ("`to_quantize` can only either be a keras Sequential or Functional model"); it works
only on tf-keras (Keras 2) models, and Kestrel's models, the EfficientNet-Lite0 port included,
are Keras 3. The gate itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from training import export as export_mod
from training.config import TrainConfig
from training.data import Pixels
from training.export import Exported, augmented_pixels, batches_of, convert
from training.fit import EMBEDDING_BATCH, class_weights, encode_targets, fit_head
from training.phases import DecodedData, Trained, say
from training.runtime import workstation_runtime

MORE_IMAGES = 1000
HEAD_REFIT = "the head refitted on the int8 backbone's embeddings"

QAT_NOTE = (
    "quantization-aware training: not available (tensorflow-model-optimization 0.8.1 works "
    "only on tf-keras models, not Keras 3)"
)


def _calibration_sets(data: DecodedData, config: TrainConfig) -> Iterator[tuple[str, np.ndarray]]:
    """The remedies' calibration images, built only when the one before did not pass."""
    rng = np.random.default_rng(config.seed + 1)
    train = data.train_px
    # Through the export module's picker, as the first export (tests replace it).
    pick = export_mod.representative_pixels
    more = train[rng.permutation(len(train))[:MORE_IMAGES]]
    yield (
        f"more calibration images ({len(more)} training images, un-augmented)",
        pick(more, len(more), None, config.seed),
    )
    both = Pixels.join(train, data.val_px)
    different = both[rng.permutation(len(both))[: max(config.calibration_images, MORE_IMAGES)]]
    yield (
        f"different calibration images ({len(different)} training + validation images)",
        pick(different, len(different), None, config.seed + 1),
    )


def _requantized(trained: Trained, exported: Exported, images: np.ndarray) -> Exported:
    """The same trained model, quantized again with other calibration images."""
    with export_mod._quiet_conversion():
        model = convert(trained.model, exported.format_name, batches_of(images))
    return Exported(exported.format_name, model, exported.reference, len(images))


def int8_embeddings(
    embedder_bytes: bytes, pixels: Any, augmenter: keras.Sequential | None = None
) -> np.ndarray:
    """What an int8 embedder computes for ``pixels`` (uint8, augmented first when an
    ``augmenter`` is given), dequantized, through the workstation's TFLite runtime."""
    interpreter = workstation_runtime().interpreter_class(model_content=embedder_bytes)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = target["quantization"]
    out = []
    for start in range(0, len(pixels), EMBEDDING_BATCH):
        batch = np.asarray(pixels[start : start + EMBEDDING_BATCH])
        if augmenter is not None:
            batch = augmented_pixels(augmenter, batch)
        for image in batch:
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            out.append(interpreter.get_tensor(target["index"])[0].astype(np.float32))
    vectors = np.stack(out)
    return (vectors - zero_point) * scale if scale else vectors


def _head_refit(
    trained: Trained, data: DecodedData, config: TrainConfig, exported: Exported
) -> Exported:
    """The head trained again on the int8 backbone's embeddings of the training images (and
    their augmented copies), then the whole model exported again to int8. The first export's
    calibration images throughout; the reference stays the float model as trained, which
    every remedy is judged against."""
    images = export_mod.representative_pixels(
        data.train_px, config.calibration_images, trained.augmenter, config.seed
    )
    embedder, head = trained.model.get_layer("embedder"), trained.model.get_layer("head")
    with export_mod._quiet_conversion():
        embedder_int8 = convert(embedder, exported.format_name, batches_of(images))
    copies = config.augment_copies if trained.augmenter is not None else 1
    augmented = [trained.augmenter] * (copies - 1)  # the originals, then augmented copies
    x_train = np.concatenate(
        [int8_embeddings(embedder_int8, data.train_px, aug) for aug in [None, *augmented]]
    )
    n_labels = len(data.dataset.labels)
    targets = encode_targets(data.y_train, config.task, n_labels)
    weights = class_weights(data.y_train, config.task, n_labels, config.class_weighting)
    val = (int8_embeddings(embedder_int8, data.val_px),
           encode_targets(data.y_val, config.task, n_labels))  # fmt: skip
    train = (x_train, np.concatenate([targets] * copies), np.tile(weights, copies))
    fit_head(head, train, val, config, progress=False)
    with export_mod._quiet_conversion():
        model = convert(trained.model, exported.format_name, batches_of(images))
    return Exported(exported.format_name, model, exported.reference, len(images))


def _remedies(
    trained: Trained, data: DecodedData, config: TrainConfig, exported: Exported
) -> Iterator[tuple[str, Callable[[], Exported]]]:
    """Each remedy's name and how to make its export, cheapest first."""
    for name, images in _calibration_sets(data, config):
        yield name, lambda images=images: _requantized(trained, exported, images)
    yield HEAD_REFIT, lambda: _head_refit(trained, data, config, exported)


def try_remedies(
    trained: Trained,
    data: DecodedData,
    config: TrainConfig,
    exported: Exported,
    judge: Callable[[Exported], tuple[Any, dict[str, Any]]],
    *,
    progress: bool,
) -> tuple[Exported, Any, list[dict[str, Any]]]:
    """Re-export until ``judge`` (export -> (evaluation, gate)) passes or nothing is left.

    Returns the export to keep (the last one tried when none passed: its figures are what
    the refusal reports), its evaluation, and what was tried, in order. The head refit
    changes ``trained.model`` in place (the export kept is always of the model as it is)."""
    tried: list[dict[str, Any]] = []
    result = None
    for name, make in _remedies(trained, data, config, exported):
        if progress:
            say(f"int8 remedy: {name}")
        candidate = make()
        evaluation, gate = judge(candidate)
        tried.append({"remedy": name, "drop_points": gate.get("drop_points"),
                      "passed": bool(gate.get("passed"))})  # fmt: skip
        result = (candidate, evaluation)
        if gate.get("passed"):
            break
    if not tried[-1]["passed"]:
        tried.append({"remedy": QAT_NOTE, "drop_points": None, "passed": False})
    assert result is not None
    return result[0], result[1], tried


__all__ = ["HEAD_REFIT", "MORE_IMAGES", "QAT_NOTE", "int8_embeddings", "try_remedies"]
