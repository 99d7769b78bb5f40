"""The mirror look: does a mirrored image keep its label? Real images: scikit-learn's 8x8
handwritten digits (left and right matter), and the same digits each mirrored or not at random
(images that face either way, as photos of animals do)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="training-side test: needs the 'train' extra")

from training.candidates import plan_candidates
from training.config import TrainConfig
from training.data import load_dataset
from training.mirror import MirrorLook, mirror_effect
from training.profile import profile_dataset

TRAIN = 1200  # of the 1,797 digits; the rest is the validation split


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16 * 255).astype(np.uint8)[..., None], data.target


def test_digits_are_not_mirrored(digits):
    x, y = digits
    look = mirror_effect(x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:])
    assert look.decisions == len(y) - TRAIN
    assert look.lost > look.gained and look.cost_points >= 1.0
    assert look.hurts and look.flip == "none"
    assert "left and right matter" in look.note()


def test_images_that_face_either_way_keep_their_flips(digits):
    x, y = digits
    mirrored = np.random.default_rng(0).random(len(x)) < 0.5
    either = np.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
    look = mirror_effect(either[:TRAIN], y[:TRAIN], either[TRAIN:], y[TRAIN:])
    assert not look.hurts and look.flip == "horizontal"
    assert "with random horizontal flips" in look.note()


def test_multilabel_compares_one_decision_per_image_and_label(digits):
    x, y = digits
    labels = np.stack([y % 2 == 0, y >= 5], axis=1).astype(np.float32)
    look = mirror_effect(x[:TRAIN], labels[:TRAIN], x[TRAIN:], labels[TRAIN:])
    assert look.decisions == 2 * (len(y) - TRAIN)


def test_a_cost_within_chance_keeps_the_flips():
    # 6 lost against 2 gained of 100: 4 points, but 4 < 2 * sqrt(8) standard errors.
    assert not MirrorLook(lost=6, gained=2, decisions=100).hurts
    assert "within chance" in MirrorLook(lost=6, gained=2, decisions=100).note()
    assert MirrorLook(lost=12, gained=2, decisions=100).hurts
    # Significant but tiny: 30 of 10,000 decisions is 0.3 points, below the 1-point floor.
    assert not MirrorLook(lost=40, gained=10, decisions=10_000).hurts


def _write(root: Path, images: np.ndarray, labels: np.ndarray, per_class: int) -> Path:
    for digit in range(10):
        (root / f"digit{digit}").mkdir(parents=True)
        for i in np.flatnonzero(labels == digit)[:per_class]:
            cv2.imwrite(str(root / f"digit{digit}" / f"{i}.png"), images[i])
    return root


def test_the_profile_turns_flips_off_for_digits_and_explicit_flip_wins(digits, tmp_path):
    profile = profile_dataset(
        load_dataset(_write(tmp_path, *digits, per_class=80), "multiclass", progress=False)
    )
    assert profile.flip == "none" and profile.mirror_cost >= 1.0
    assert any("left and right matter" in note for note in profile.notes)
    base = TrainConfig(task="multiclass")
    assert {c.overrides["flip"] for c in plan_candidates(profile, base)} == {"none"}
    explicit = plan_candidates(profile, base.override(flip="horizontal"))
    assert all("flip" not in c.overrides for c in explicit)  # the config's own flip stays
    assert all(c.config(base.override(flip="horizontal")).flip == "horizontal" for c in explicit)
