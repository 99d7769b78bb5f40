"""Several models on one Coral (a cascade's stages, a model update being tried): one child
process serves them all. With a child per model, the second would open the USB Coral again
and the first would abort (the fake does what libedgetpu does then)."""

from __future__ import annotations

import shutil

import pytest
from inference.fake_edgetpu import FakeCoral

from device.inference.engine import Classifier
from device.inference.preprocess import read_image


@pytest.fixture
def two_models(shipped_model, tmp_path):
    second = tmp_path / "breed"
    shutil.copytree(shipped_model, second)
    return shipped_model, second


def on_coral(bundle, coral: FakeCoral) -> Classifier:
    return Classifier(bundle, accelerator="edgetpu", runtime_factory=coral.runtime_factory)


def test_two_models_share_one_child_and_neither_aborts(two_models, tmp_path, samples_dir):
    coral = FakeCoral(tmp_path / "coral")
    main, breed = (on_coral(bundle, coral) for bundle in two_models)
    try:
        assert main.accelerator == breed.accelerator == "edgetpu"
        assert main.accelerator_process.pid == breed.accelerator_process.pid
        cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
        for _ in range(3):  # a cascade: one after the other, frame after frame
            assert main.classify(cat).label == breed.classify(cat).label == "cat"
        assert main.accelerator_failures == breed.accelerator_failures == 0
        assert coral.delegate_pids == {main.accelerator_process.pid}

        main.close()  # one model leaves (a swapped-out update): the other goes on
        assert breed.classify(cat).label == "cat" and breed.accelerator == "edgetpu"
    finally:
        main.close()
        breed.close()


def test_when_the_child_aborts_every_model_on_it_moves_and_comes_back_together(
    two_models, tmp_path, samples_dir
):
    coral = FakeCoral(tmp_path / "coral")
    main, breed = (on_coral(bundle, coral) for bundle in two_models)
    try:
        cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
        first = main.accelerator_process.pid
        coral.plugged = False  # pulled: the child aborts at its next invoke
        assert main.classify(cat).label == breed.classify(cat).label == "cat"  # on the CPU
        assert main.accelerator == breed.accelerator == "cpu"
        assert main.accelerator_failures == breed.accelerator_failures == 1
        coral.plugged = True
        for classifier in (main, breed):  # what the daemon's retry loop does
            classifier.adopt(classifier.accelerator_candidate())
        assert main.accelerator_process.pid == breed.accelerator_process.pid != first
        assert main.classify(cat).label == breed.classify(cat).label == "cat"
        assert main.accelerator == breed.accelerator == "edgetpu"
    finally:
        main.close()
        breed.close()
