"""int8 remedies tried before the gate refuses a bundle.

When the int8 model loses more than the gate allows against the float model, the trainer
re-quantizes the same trained model with other calibration data, cheapest first, and keeps
the first export that passes (each measured exactly as the first one: through the device
runtime, thresholds refitted on validation):

1. *more calibration images*: every training image (up to :data:`MORE_IMAGES`), un-augmented;
2. *different calibration images*: training and validation images together, reshuffled.

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

import numpy as np

from training import export as export_mod
from training.config import TrainConfig
from training.data import Pixels
from training.export import Exported, batches_of, convert
from training.phases import DecodedData, Trained, say

MORE_IMAGES = 1000

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


def try_remedies(
    trained: Trained,
    data: DecodedData,
    config: TrainConfig,
    exported: Exported,
    judge: Callable[[Exported], tuple[Any, dict[str, Any]]],
    *,
    progress: bool,
) -> tuple[Exported, Any, list[dict[str, Any]]]:
    """Re-quantize until ``judge`` (export -> (evaluation, gate)) passes or nothing is left.

    Returns the export to keep (the last one tried when none passed: its figures are what
    the refusal reports), its evaluation, and what was tried, in order."""
    tried: list[dict[str, Any]] = []
    result = None
    for name, images in _calibration_sets(data, config):
        if progress:
            say(f"int8 remedy: {name}")
        with export_mod._quiet_conversion():
            model = convert(trained.model, exported.format_name, batches_of(images))
        candidate = Exported(exported.format_name, model, exported.reference, len(images))
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


__all__ = ["MORE_IMAGES", "QAT_NOTE", "try_remedies"]
