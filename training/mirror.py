"""Does a mirrored image keep its label? Asked of the data before anything is trained.

Random horizontal flips are the classic augmentation for photos, and wrong for data whose
left and right matter (digits, text, arrows) or whose images all face one way (a fixed camera,
Fashion-MNIST's shoes). :func:`look_at_mirroring` fits a quick classifier (ridge regression on
raw pixels at 16 px) on a sample of the training split twice, once as it is and once with a
mirrored copy of every image, and scores both on the validation split. When the mirrored copies
cost at least ``MIN_COST_POINTS`` and more than chance explains (a paired sign test on the
validation decisions), the search trains without flips; ``--flip`` given explicitly wins.

Measured by this look: digits 5.0 points, Fashion-MNIST 2.8 (flips off); the same digits
mirrored at random and skimage's faces gain (flips kept). With it, the defaults took 8 px
digits from 0.976 to 0.996 and 32 px digits from 0.988 to 0.996 (``python
bench/train_defaults.py --only tiny8``). On Fashion-MNIST 600/class, Lite0 fine-tuned for 4
epochs scored the same without flips and with them (0.8770 and 0.8762 on 10,000 test images):
a flip the look turns off there costs nothing measurable (bench/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import RidgeClassifier

from training.config import DEFAULT_FLIP, FlipMode
from training.data import Dataset
from training.data.pixels import load_pixels, target_array
from training.models import input_spec

MIRROR_SIZE = 16  # raw pixels per side: enough to tell left from right, cheap to fit
MAX_TRAIN = 3000  # training images sampled for the look
MAX_VAL = 2000  # validation images sampled for the look
MIN_COST_POINTS = 1.0  # mirrored copies must cost at least this many points to turn flips off
SIGN_TEST_Z = 2.0  # ... and more than this many standard errors of the paired difference


@dataclass(frozen=True)
class MirrorLook:
    """What mirrored training copies did to a quick classifier's validation decisions.

    Attributes:
        lost: Validation decisions right without the mirrored copies, wrong with them (for
            multilabel, one decision per image and label).
        gained: The reverse.
        decisions: All validation decisions compared.
    """

    lost: int
    gained: int
    decisions: int

    @property
    def cost_points(self) -> float:
        """Points of validation accuracy the mirrored copies cost (negative: they gained)."""
        return 100.0 * (self.lost - self.gained) / max(self.decisions, 1)

    @property
    def hurts(self) -> bool:
        changed = self.lost + self.gained
        beyond_chance = self.lost - self.gained > SIGN_TEST_Z * math.sqrt(changed)
        return beyond_chance and self.cost_points >= MIN_COST_POINTS

    @property
    def flip(self) -> FlipMode:
        return "none" if self.hurts else DEFAULT_FLIP

    def note(self) -> str:
        """One sentence for the console and the report."""
        effect = (
            f"cost {self.cost_points:.1f} points"
            if self.cost_points >= 0
            else f"gained {-self.cost_points:.1f} points"
        )
        if self.hurts:
            verdict = "left and right matter here: training without random flips"
        elif self.cost_points >= MIN_COST_POINTS:
            verdict = "within chance on so few images: training with random horizontal flips"
        else:
            verdict = "training with random horizontal flips"
        return (
            f"mirrored training copies {effect} for a quick raw-pixel classifier on validation "
            f"({self.lost} decisions lost, {self.gained} gained of {self.decisions}): {verdict}"
        )


def mirror_effect(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> MirrorLook:
    """Fit ridge classifiers on ``x_train`` ((N, H, W, C) pixels) without and with mirrored
    copies and compare their decisions on ``x_val``; ``y`` is (N,) labels or (N, L) 0/1."""
    mirrored = x_train[:, :, ::-1]
    plain = _right(_fit(x_train, y_train), x_val, y_val)
    with_copies = _right(
        _fit(np.concatenate([x_train, mirrored]), np.concatenate([y_train, y_train])),
        x_val,
        y_val,
    )
    return MirrorLook(
        lost=int(np.sum(plain & ~with_copies)),
        gained=int(np.sum(~plain & with_copies)),
        decisions=int(plain.size),
    )


def _flat(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0


def _fit(x: np.ndarray, y: np.ndarray) -> RidgeClassifier:
    return RidgeClassifier(alpha=1.0).fit(_flat(x), y)


def _right(model: RidgeClassifier, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which validation decisions are right: per image, or per image and label."""
    return np.asarray(model.predict(_flat(x)) == y)


def look_at_mirroring(dataset: Dataset, grayscale: bool, seed: int = 0) -> MirrorLook | None:
    """The mirror look on a sample of the dataset's training and validation splits (None when
    a split is empty or the training sample has a single label)."""
    rng = np.random.default_rng(seed)
    train = [dataset.train[i] for i in rng.permutation(len(dataset.train))[:MAX_TRAIN]]
    val = [dataset.val[i] for i in rng.permutation(len(dataset.val))[:MAX_VAL]]
    task = "multilabel" if dataset.task == "multilabel" else "multiclass"
    if not train or not val:
        return None
    y_train = target_array(train, dataset.labels, task)
    if y_train.ndim == 1 and len(np.unique(y_train)) < 2:
        return None
    spec = input_spec(MIRROR_SIZE, 1 if grayscale else 3, "uint8")
    return mirror_effect(
        load_pixels(train, spec, progress=False),
        y_train,
        load_pixels(val, spec, progress=False),
        target_array(val, dataset.labels, task),
    )


__all__ = ["MIN_COST_POINTS", "MirrorLook", "look_at_mirroring", "mirror_effect"]
