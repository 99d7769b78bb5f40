"""The candidate models of the search, chosen from the data profile, and what each costs.

Candidates (each a set of TrainConfig overrides):

* ``lite0-head``: EfficientNet-Lite0 frozen, a head on cached embeddings (cheap);
* ``lite0-finetune``: the same, then its top blocks fine-tuned on pixels (slow, often best on
  data unlike ImageNet);
* ``small-cnn``: a small CNN from scratch at (near) native resolution, for tiny images
  (native size <= 64 px), grayscale when the data is.

Input sizes come from the data: Lite0 gets about 4x the native size in steps of 32, between
96 and 224 (28 px -> 128, 8 px -> 96: no 8 -> 224 blow-ups); the small CNN gets the native
size itself. Explicit settings (flags or file) win: they filter and fix the candidates.

Costs are estimates in seconds from per-image figures measured on the 2-core machine this
project targets (under load from other jobs, so on the safe side).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from training.config import TrainConfig
from training.models import get_backbone
from training.profile import DataProfile

PRETRAINED = "efficientnet-lite0"
SMALL_CNN = "small-cnn"
SMALL_CNN_MAX_NATIVE = 64  # a small CNN from scratch is a candidate up to this native size

# Per-image costs on the 2-core machine (measured under load from other jobs), milliseconds.
LITE0_FORWARD_MS_224 = 43.0  # one forward pass at 224 px; scales with pixels
FINE_TUNE_FACTOR = 3.0  # forward + backward through the unfrozen blocks vs one forward
SMALL_CNN_STEP_MS_32 = 11.0  # one training step per image at 32 px; scales with pixels
EXPORT_S = 30.0  # int8 + float32 conversion and the device-runtime scoring, per candidate
SCRATCH_EPOCHS_GUESS = 25  # early stopping usually ends a from-scratch fit about here
MIN_SCRATCH_EPOCHS = 5  # fewer than this is not worth training
MANY_PER_CLASS = 200  # median training images per class from which Lite0 gets one copy
DEFAULT_COPIES = TrainConfig().augment_copies


@dataclass(frozen=True)
class Candidate:
    """One model the search may train: a name, its settings, why it is in the list, and the
    estimated seconds of a run on the full training split."""

    name: str
    overrides: dict[str, Any]
    why: str
    seconds: float = 0.0

    def config(self, base: TrainConfig) -> TrainConfig:
        return base.override(source=f"candidate {self.name}", **self.overrides)

    @property
    def size(self) -> int:
        return int(self.overrides["image_size"])


def lite0_size(native: int) -> int:
    """About 4x the native size in steps of 32, within 96..224."""
    return int(min(224, max(96, 32 * math.ceil(4 * native / 32))))


def small_cnn_size(native: int) -> int:
    """The native size, a multiple of 4 (two poolings), within 8..64."""
    return int(min(SMALL_CNN_MAX_NATIVE, max(8, 4 * round(native / 4))))


def _all_candidates(profile: DataProfile, config: TrainConfig) -> list[Candidate]:
    size = config.image_size or lite0_size(profile.native_size)
    base: dict[str, Any] = {"backbone": PRETRAINED, "image_size": size, "grayscale": False}
    if profile.per_class_median >= MANY_PER_CLASS and config.augment_copies == DEFAULT_COPIES:
        # Many images per class: augmented copies of the embeddings cost their time again and
        # gained nothing there (Fashion-MNIST, last round: 3 copies cost 3.4 points).
        base["augment_copies"] = 1
    out = [
        Candidate(
            "lite0-head",
            {**base, "fine_tune": False},
            f"ImageNet features, frozen, at {size} px: cheap, strong on photos and small data",
        ),
        Candidate(
            "lite0-finetune",
            {**base, "fine_tune": True},
            f"the same features adapted to this data (top blocks fine-tuned) at {size} px",
        ),
    ]
    if profile.native_size <= SMALL_CNN_MAX_NATIVE or config.backbone == SMALL_CNN:
        small = config.image_size or small_cnn_size(profile.native_size)
        grey = profile.grayscale if config.grayscale is None else config.grayscale
        out.append(
            Candidate(
                "small-cnn",
                {"backbone": SMALL_CNN, "image_size": small, "grayscale": grey},
                f"tiny images ({profile.native_size} px): a small CNN from scratch at {small} px"
                f"{' grayscale' if grey else ''}, no upscaling",
            )
        )
    return out


def _explicit_only(config: TrainConfig) -> Candidate:
    """A backbone the search does not try (e.g. mobilenetv2): exactly what was asked."""
    spec = get_backbone(config.backbone or PRETRAINED)
    size = config.image_size or spec.default_size
    overrides: dict[str, Any] = {"backbone": spec.name, "image_size": size}
    return Candidate(spec.name, overrides, "chosen with --backbone")


def _allowed(candidate: Candidate, config: TrainConfig) -> bool:
    """Explicit settings win: a candidate that contradicts one is left out."""
    o = candidate.overrides
    if o["image_size"] < get_backbone(o["backbone"]).min_size:
        return False
    if config.backbone is not None and o["backbone"] != config.backbone:
        return False
    if config.fine_tune is not None and o["backbone"] == PRETRAINED:
        return o["fine_tune"] == config.fine_tune
    if config.fine_tune and o["backbone"] != PRETRAINED:
        return False  # fine-tuning asks for a pretrained backbone
    # pretrained weights need colour
    return not (config.grayscale and get_backbone(o["backbone"]).pretrained)


def estimate_seconds(candidate: Candidate, config: TrainConfig, profile: DataProfile) -> float:
    """Seconds of one run of ``candidate`` on the full training split (a rough figure)."""
    o = candidate.overrides
    n_train = profile.train_images
    n_eval = profile.images - n_train
    pixels = (o["image_size"] / 224) ** 2
    if o["backbone"] == PRETRAINED:
        forward = LITE0_FORWARD_MS_224 * pixels / 1000
        copies = int(o.get("augment_copies", config.augment_copies))
        seconds = (n_train * copies + n_eval) * forward
        if o.get("fine_tune"):
            seconds += config.fine_tune_epochs * n_train * forward * FINE_TUNE_FACTOR
        return seconds + EXPORT_S
    step = SMALL_CNN_STEP_MS_32 * (o["image_size"] / 32) ** 2 / 1000
    epochs = min(config.epochs, int(o.get("epochs", SCRATCH_EPOCHS_GUESS)))
    return epochs * n_train * step + EXPORT_S


def minimum_seconds(candidate: Candidate, config: TrainConfig, profile: DataProfile) -> float:
    """The cheapest useful run: a from-scratch fit of MIN_SCRATCH_EPOCHS, one fine-tune epoch."""
    cheap = dataclasses.replace(
        candidate, overrides={**candidate.overrides, "epochs": MIN_SCRATCH_EPOCHS}
    )
    return estimate_seconds(cheap, config.override(fine_tune_epochs=1), profile)


def plan_candidates(profile: DataProfile, config: TrainConfig) -> list[Candidate]:
    """The candidates for this data and these settings, cheapest first, with estimates.

    ``--fast``: only the cheapest one that is not fine-tuned. A backbone outside the search's
    list (``--backbone mobilenetv2``) is the only candidate.
    """
    if config.backbone is not None and config.backbone not in (PRETRAINED, SMALL_CNN):
        found = [_explicit_only(config)]
    else:
        found = [c for c in _all_candidates(profile, config) if _allowed(c, config)]
        if not found:
            found = [_explicit_only(config)]
    if config.flip is None:  # left open: what the data look found (training.mirror)
        found = [
            dataclasses.replace(c, overrides={**c.overrides, "flip": profile.flip}) for c in found
        ]
    found = [dataclasses.replace(c, seconds=estimate_seconds(c, config, profile)) for c in found]
    found.sort(key=lambda c: c.seconds)
    if config.fast and len(found) > 1:
        quick = [c for c in found if not c.overrides.get("fine_tune")] or found
        found = quick[:1]
    return found


__all__ = [
    "Candidate",
    "estimate_seconds",
    "lite0_size",
    "minimum_seconds",
    "plan_candidates",
    "small_cnn_size",
]
