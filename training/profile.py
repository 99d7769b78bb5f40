"""A look at the data before anything is trained: native image sizes, colour or grayscale,
images per class, number of classes (:func:`profile_dataset`).

The search (:mod:`training.candidates`, :mod:`training.search`) chooses input sizes,
backbones and whether to mirror images (:mod:`training.mirror`) from this profile; the report
shows it, with what was resized and how.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from training.config import DEFAULT_FLIP, FlipMode
from training.data import Dataset
from training.data.checks import parallel_map
from training.mirror import MirrorLook, look_at_mirroring

# How many images are decoded to decide colour vs grayscale (spread over the whole set).
MODE_SAMPLE = 200
# A colour file whose channels differ by at most this much (0..255) is grey in fact.
GREY_TOLERANCE = 3
FEW_SHOT = 20  # images per class (train split) at or below which the data counts as small
TINY = 32  # native size (shorter side, median) at or below which images count as tiny


@dataclass(frozen=True)
class DataProfile:
    """What the defaults adapt to.

    Attributes:
        images: Images in all splits.
        train_images: Images in the train split.
        classes: Labels the model outputs.
        per_class_min, per_class_median: Train images per label (multilabel: positives).
        native_size: Median of every image's shorter side, in pixels.
        smallest, largest: The smallest and largest shorter side.
        sizes: How many distinct (height, width) the images have.
        grayscale: Every sampled image is grey (one channel, or equal channels).
        mixed_modes: Some sampled images are grey and others colour.
        mirror_cost: Points of validation accuracy that mirrored training copies cost a quick
            raw-pixel classifier (None: not measured, e.g. no validation split).
        flip: The random flip the data asks for: ``none`` when left and right matter.
    """

    images: int
    train_images: int
    classes: int
    per_class_min: int
    per_class_median: float
    native_size: int
    smallest: int
    largest: int
    sizes: int
    grayscale: bool
    mixed_modes: bool
    mirror_cost: float | None = None
    flip: FlipMode = DEFAULT_FLIP
    notes: list[str] = field(default_factory=list)

    @property
    def few_shot(self) -> bool:
        return self.per_class_min <= FEW_SHOT

    @property
    def tiny(self) -> bool:
        return self.native_size <= TINY

    def line(self) -> str:
        """One line for the console."""
        mode = "grayscale" if self.grayscale else "colour"
        mode = "mixed grey/colour" if self.mixed_modes else mode
        span = (
            f"{self.native_size} px"
            if self.smallest == self.largest
            else f"{self.smallest}-{self.largest} px (median {self.native_size})"
        )
        return (
            f"data: {self.images} images, {self.classes} labels, {self.per_class_min}-"
            f"{self.per_class_median:g} train images per label (fewest-median), {span}, {mode}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"few_shot": self.few_shot, "tiny": self.tiny}


def _is_grey(path: str) -> bool | None:
    """True for a grey image, False for colour, None when it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    colour = image[..., :3].astype(np.int16)
    spread = np.abs(colour - colour.mean(axis=2, keepdims=True)).max()
    return bool(spread <= GREY_TOLERANCE)


def _per_label_counts(dataset: Dataset) -> list[int]:
    counts = Counter(label for sample in dataset.train for label in sample.labels)
    return [counts.get(label, 0) for label in dataset.labels]


def profile_dataset(dataset: Dataset, *, progress: bool = False) -> DataProfile:
    """The profile of a loaded dataset (sizes from the data check; modes from a sample)."""
    samples = [*dataset.train, *dataset.val, *dataset.test]
    shapes = [dataset.image_sizes[s.path] for s in samples if s.path in dataset.image_sizes]
    shorter = np.array([min(h, w) for h, w in shapes] or [0])
    rng = np.random.default_rng(0)
    picked = rng.permutation(len(samples))[:MODE_SAMPLE]
    modes = [
        m
        for m in parallel_map(lambda i: _is_grey(str(samples[i].path)), picked, progress, "modes")
        if m is not None
    ]
    grey = sum(modes)
    counts = _per_label_counts(dataset)
    grayscale = bool(modes) and grey == len(modes)
    mirror = look_at_mirroring(dataset, grayscale)
    profile = DataProfile(
        images=len(samples),
        train_images=len(dataset.train),
        classes=len(dataset.labels),
        per_class_min=int(min(counts)) if counts else 0,
        per_class_median=float(np.median(counts)) if counts else 0.0,
        native_size=int(np.median(shorter)),
        smallest=int(shorter.min()),
        largest=int(shorter.max()),
        sizes=len(set(shapes)),
        grayscale=grayscale,
        mixed_modes=0 < grey < len(modes),
        mirror_cost=None if mirror is None else round(mirror.cost_points, 2),
        flip=DEFAULT_FLIP if mirror is None else mirror.flip,
    )
    return _with_notes(profile, shapes, mirror)


def _with_notes(
    profile: DataProfile, shapes: list[tuple[int, int]], mirror: MirrorLook | None
) -> DataProfile:
    """Sentences for the report about sizes and modes that differ, small data and mirroring."""
    notes = [] if mirror is None else [mirror.note()]
    if profile.sizes > 1:
        aspect = [w / h for h, w in shapes if h]
        notes.append(
            f"images differ in size: {profile.sizes} distinct sizes, shorter side "
            f"{profile.smallest}-{profile.largest} px, aspect ratio {min(aspect):.2f}-"
            f"{max(aspect):.2f}; every image is centre-cropped to a square and resized to the "
            "model input with area interpolation (as the device does)"
        )
    if profile.largest > 4 * max(profile.smallest, 1):
        notes.append(
            f"the largest images are more than 4x the smallest ({profile.largest} vs "
            f"{profile.smallest} px): small ones are upscaled, large ones downscaled"
        )
    if profile.mixed_modes:
        notes.append(
            "some images are grayscale and others colour: grey images are converted to RGB "
            "(a colour model) as the device does"
        )
    if profile.few_shot:
        notes.append(
            f"small dataset: the fewest images per label in training is {profile.per_class_min} "
            f"(<= {FEW_SHOT}); expect noisy figures, and add images where the learning curve "
            "says it helps"
        )
    return DataProfile(**{**asdict(profile), "notes": notes})


__all__ = ["FEW_SHOT", "TINY", "DataProfile", "profile_dataset"]
