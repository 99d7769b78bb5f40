"""The shipped int8 bundle through the real runtime: known answers, accelerator fallback."""

import logging

import cv2
import numpy as np
import pytest

from device.inference.engine import Classifier
from device.inference.preprocess import read_image


@pytest.fixture(scope="module")
def classifier(shipped_model) -> Classifier:
    return Classifier(shipped_model, accelerator="cpu", top_k=5)


CAT_CLASSES = {
    "tabby cat",
    "a cat having a striped coat",
    "Persian cat",
    "Siamese cat",
    "Egyptian Mau",
}


def test_cat_photo(classifier, samples_dir):
    prediction = classifier.classify(read_image(str(samples_dir / "cat-chelsea.jpg")))
    assert CAT_CLASSES & {x.label for x in prediction.scores}
    assert [x.label for x in prediction.path][:3] == ["animal", "mammal", "cat"]
    assert prediction.label == "cat"  # breeds disagree, so it backs off to "cat"


def test_coffee_photo(classifier, samples_dir):
    prediction = classifier.classify(read_image(str(samples_dir / "coffee.jpg")))
    assert {"espresso", "tea cup", "coffee mug"} & {x.label for x in prediction.scores}
    assert prediction.label == "espresso"
    assert prediction.path[0].label == "food"


def test_bgr_rgb_and_yuv_frames_agree(classifier, samples_dir):
    bgr = cv2.resize(read_image(str(samples_dir / "cat-chelsea.jpg")), (640, 480))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    frames = ((bgr, "BGR"), (rgb, "RGB"), (yuv, "YUV420"))
    results = [classifier.classify(frame, fmt) for frame, fmt in frames]
    assert results[0] == results[1]  # identical tensors
    for prediction in results:  # YUV420 differs slightly (chroma subsampling)
        assert [x.label for x in prediction.path][:3] == ["animal", "mammal", "cat"]


def test_roi_selects_part_of_the_frame(classifier, samples_dir):
    cat = cv2.resize(read_image(str(samples_dir / "cat-chelsea.jpg")), (320, 240))
    coffee = cv2.resize(read_image(str(samples_dir / "coffee.jpg")), (320, 240))
    frame = np.hstack([cat, coffee])
    assert classifier.classify(frame, roi=(0.0, 0.0, 0.5, 1.0)).label == "cat"
    assert classifier.classify(frame, roi=(0.5, 0.0, 0.5, 1.0)).label == "espresso"


def test_timings_are_recorded(classifier, samples_dir):
    classifier.classify(read_image(str(samples_dir / "coffee.jpg")))
    t = classifier.timings
    assert t.invoke_ms > 0 and t.preprocess_ms > 0 and t.decode_ms > 0


class FakeDelegateLoader:
    """Stands in for libedgetpu: fails like a missing library, or returns a usable delegate."""

    def __init__(self, error: Exception | None):
        self.error = error
        self.calls: list[str] = []

    def __call__(self, library, options):
        self.calls.append(library)
        if self.error:
            raise self.error
        return None  # replaced below by a runtime whose interpreter ignores delegates


def test_edgetpu_missing_falls_back_to_cpu_with_one_warning(shipped_model, caplog):
    loader = FakeDelegateLoader(OSError("libedgetpu.so.1: cannot open shared object file"))
    with caplog.at_level(logging.WARNING, logger="device.inference.runtime"):
        classifier = Classifier(shipped_model, accelerator="edgetpu", delegate_loader=loader)
    assert loader.calls == ["libedgetpu.so.1"]
    assert classifier.accelerator == "cpu"
    assert "cannot open shared object file" in classifier.fallback_reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running on the CPU" in warnings[0].getMessage()


def test_auto_without_edgetpu_is_quiet(shipped_model, caplog):
    loader = FakeDelegateLoader(OSError("not found"))
    with caplog.at_level(logging.WARNING, logger="device.inference.runtime"):
        classifier = Classifier(shipped_model, accelerator="auto", delegate_loader=loader)
    assert classifier.accelerator == "cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cpu_never_touches_the_delegate(shipped_model):
    loader = FakeDelegateLoader(None)
    Classifier(shipped_model, accelerator="cpu", delegate_loader=loader)
    assert loader.calls == []


def test_edgetpu_delegate_that_loads_is_used(shipped_model):
    """With a delegate that loads, the interpreter is built with it and reports edgetpu."""
    from device.inference.runtime import Runtime, find_runtime

    real = find_runtime()
    seen = {}

    class RecordingInterpreter(real.interpreter_class):
        def __init__(self, *args, experimental_delegates=None, **kwargs):
            seen["delegates"] = experimental_delegates
            super().__init__(*args, **kwargs)

    sentinel = object()
    runtime = Runtime("fake", RecordingInterpreter, lambda lib, opts: sentinel)
    classifier = Classifier(shipped_model, accelerator="edgetpu", runtime=runtime)
    assert classifier.accelerator == "edgetpu" and seen["delegates"] == [sentinel]


def test_edgetpu_failing_mid_run_moves_to_the_cpu_and_loses_no_frame(
    shipped_model, samples_dir, caplog, fake_coral
):
    coral = fake_coral
    classifier = Classifier(shipped_model, accelerator="edgetpu", runtime=coral.runtime)
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    on_tpu = classifier.classify(cat)
    assert classifier.accelerator == "edgetpu"

    coral.plugged = False
    with caplog.at_level(logging.WARNING, logger="device.inference.engine"):
        on_cpu = classifier.classify(cat)  # the same frame is answered, on the CPU
    assert classifier.accelerator == "cpu" and classifier.accelerator_failures == 1
    assert on_cpu.label == on_tpu.label and on_cpu.labels[0].score == on_tpu.labels[0].score
    assert "USB transfer error" in classifier.fallback_reason
    assert "switching to the CPU" in caplog.text

    # While it is unplugged, a retry finds nothing (quietly) and the CPU keeps working.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert classifier.accelerator_candidate() is None
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert classifier.classify(cat).label == on_tpu.label

    coral.plugged = True
    candidate = classifier.accelerator_candidate()
    assert candidate is not None and candidate.accelerator == "edgetpu"
    classifier.adopt(candidate)
    assert classifier.accelerator == "edgetpu" and classifier.accelerator_recoveries == 1
    assert classifier.fallback_reason == ""
    assert classifier.classify(cat).label == on_tpu.label
    assert classifier.accelerator_candidate() is None  # already there


def test_cpu_classifiers_never_look_for_an_edgetpu(shipped_model, fake_coral):
    classifier = Classifier(shipped_model, accelerator="cpu", runtime=fake_coral.runtime)
    assert classifier.accelerator_candidate() is None


def test_a_cpu_failure_is_not_mistaken_for_the_edgetpu(shipped_model, monkeypatch):
    """A RuntimeError on the CPU is a real error: raised, not retried elsewhere."""
    classifier = Classifier(shipped_model, accelerator="cpu")

    def broken():
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(classifier.interpreter, "invoke", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        classifier.infer(np.zeros((224, 224, 3), np.uint8))
    assert classifier.accelerator == "cpu" and classifier.accelerator_failures == 0
