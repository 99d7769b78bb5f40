"""The shipped int8 bundle through the real runtime: known answers, accelerator fallback."""

import logging
import os

import cv2
import numpy as np
import pytest
from inference.fake_edgetpu import FakeCoral, add_usb_device

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


@pytest.fixture
def coral(tmp_path) -> FakeCoral:
    """A plugged-in fake USB Coral; ``plugged = False`` pulls it out (its process aborts)."""
    return FakeCoral(tmp_path / "coral")


def on_coral(model, coral: FakeCoral, accelerator="edgetpu", **kwargs) -> Classifier:
    return Classifier(
        model, accelerator=accelerator, runtime_factory=coral.runtime_factory, **kwargs
    )


def test_edgetpu_library_missing_falls_back_to_cpu_with_one_warning(shipped_model, coral, caplog):
    coral.installed = False
    with caplog.at_level(logging.WARNING, logger="device.inference.engine"):
        classifier = on_coral(shipped_model, coral)
    assert classifier.accelerator == "cpu"
    assert "cannot open shared object file" in classifier.fallback_reason
    assert coral.delegate_pids == set() and coral.options == []  # no child for nothing
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running on the CPU" in warnings[0].getMessage()


def test_no_coral_plugged_is_a_value_error_and_the_cpu_runs(shipped_model, coral, samples_dir):
    """libedgetpu loads but finds no device: ValueError in the child, the CPU here."""
    coral.plugged = False
    classifier = on_coral(shipped_model, coral)
    assert classifier.accelerator == "cpu"
    assert "Failed to load delegate from libedgetpu.so.1" in classifier.fallback_reason
    assert classifier.classify(read_image(str(samples_dir / "cat-chelsea.jpg"))).label == "cat"


def test_auto_without_edgetpu_is_quiet(shipped_model, coral, caplog):
    coral.installed = False
    with caplog.at_level(logging.WARNING):
        classifier = on_coral(shipped_model, coral, accelerator="auto")
    assert classifier.accelerator == "cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cpu_never_touches_the_delegate(shipped_model, coral):
    classifier = on_coral(shipped_model, coral, accelerator="cpu")
    assert classifier.accelerator_candidate() is None
    assert coral.options == [] and coral.delegate_pids == set()


def test_the_edgetpu_runs_in_a_child_process(shipped_model, coral, samples_dir, classifier):
    tpu = on_coral(shipped_model, coral, accelerator="auto")
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    assert tpu.accelerator == "edgetpu" and tpu.fallback_reason == ""
    assert tpu.classify(cat) == classifier.classify(cat)
    pids = coral.delegate_pids
    assert len(pids) == 1 and os.getpid() not in pids
    assert coral.options == [{}]  # no device asked for: libedgetpu takes the first
    tpu.close()
    assert tpu.accelerator == "cpu"


def test_a_pulled_coral_aborts_its_process_not_ours(shipped_model, samples_dir, caplog, coral):
    classifier = on_coral(shipped_model, coral)
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    on_tpu = classifier.classify(cat)
    assert classifier.accelerator == "edgetpu"

    coral.plugged = False
    with caplog.at_level(logging.WARNING, logger="device.inference.engine"):
        on_cpu = classifier.classify(cat)  # the child aborts; the same frame, on the CPU
    assert classifier.accelerator == "cpu" and classifier.accelerator_failures == 1
    assert on_cpu == on_tpu
    assert "SIGABRT" in classifier.fallback_reason
    assert "switching to the CPU" in caplog.text

    # While it is unplugged, a retry finds nothing (quietly) and the CPU keeps working.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert classifier.accelerator_candidate() is None
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    assert classifier.classify(cat) == on_tpu

    coral.plugged = True
    candidate = classifier.accelerator_candidate()
    assert candidate is not None and candidate.accelerator == "edgetpu"
    classifier.adopt(candidate)
    assert classifier.accelerator == "edgetpu" and classifier.accelerator_recoveries == 1
    assert classifier.fallback_reason == ""
    assert classifier.classify(cat) == on_tpu
    assert classifier.accelerator_candidate() is None  # already there
    assert len(coral.delegate_pids) == 2  # a new child after the retry
    classifier.close()


def test_an_abort_mid_stream_loses_no_frame(shipped_model, samples_dir, coral, classifier):
    """The child aborts on its 4th invoke (the warm-up is the 1st): every frame is answered,
    as the CPU answers it, one failure counted; after the retry, a new child goes on."""
    photos = [read_image(str(samples_dir / n)) for n in ("cat-chelsea.jpg", "coffee.jpg")]
    frames = [photos[i % 2] for i in range(8)]
    expected = [classifier.classify(f) for f in frames]
    tpu = on_coral(shipped_model, coral)
    coral.abort_on_invoke(4)
    answers, where = [], []
    for frame in frames:
        answers.append(tpu.classify(frame))
        where.append(tpu.accelerator)
    assert answers == expected
    assert where == ["edgetpu"] * 2 + ["cpu"] * 6  # the 3rd frame met the abort
    assert tpu.accelerator_failures == 1 and "SIGABRT" in tpu.fallback_reason
    tpu.adopt(tpu.accelerator_candidate())
    assert [tpu.classify(f) for f in frames] == expected and tpu.accelerator == "edgetpu"
    assert tpu.accelerator_failures == 1 and tpu.accelerator_recoveries == 1
    tpu.close()


def test_the_chosen_coral_is_passed_to_libedgetpu(shipped_model, coral):
    tpu = on_coral(shipped_model, coral, accelerator_device="usb:0")
    assert tpu.accelerator == "edgetpu" and coral.options == [{"device": "usb:0"}]
    tpu.close()
    absent = on_coral(shipped_model, coral, accelerator_device="pci:1")
    assert absent.accelerator == "cpu" and "Failed to load delegate" in absent.fallback_reason


def test_a_malformed_device_string_is_refused_by_name(shipped_model, coral):
    with pytest.raises(ValueError, match=r"accelerator_device: expected .*'usb1'"):
        on_coral(shipped_model, coral, accelerator_device="usb1")


def test_a_usb2_coral_is_reported_and_warned_about(shipped_model, coral, tmp_path, caplog):
    sysfs = tmp_path / "sys"
    add_usb_device(sysfs, "1-1.3", "18d1", "9302", "480")
    with caplog.at_level(logging.WARNING, logger="device.inference.engine"):
        tpu = on_coral(shipped_model, coral, sysfs_root=sysfs)
    assert tpu.usb_speed_mbps == 480 and "USB 2 port" in caplog.text
    tpu.close()
    add_usb_device(sysfs, "1-1.3", "18d1", "9302", "5000")
    tpu = on_coral(shipped_model, coral, sysfs_root=sysfs)
    assert tpu.usb_speed_mbps == 5000
    tpu.close()
    assert (
        on_coral(shipped_model, coral, accelerator="cpu", sysfs_root=sysfs).usb_speed_mbps is None
    )


def test_a_cpu_failure_is_not_mistaken_for_the_edgetpu(shipped_model, monkeypatch):
    """A RuntimeError on the CPU is a real error: raised, not retried elsewhere."""
    classifier = Classifier(shipped_model, accelerator="cpu")

    def broken():
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(classifier.interpreter, "invoke", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        classifier.infer(np.zeros((224, 224, 3), np.uint8))
    assert classifier.accelerator == "cpu" and classifier.accelerator_failures == 0
