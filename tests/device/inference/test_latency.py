"""`kestrel bench`'s measurement on the shipped model, with few iterations."""

import pytest
from inference.fake_edgetpu import FakeCoral

from device.inference.engine import Classifier
from device.inference.latency import FRAME_SIZE, camera_frames, format_report, run_benchmark


@pytest.fixture(scope="module")
def classifier(shipped_model) -> Classifier:
    return Classifier(shipped_model, accelerator="cpu", threads=1)


def test_camera_frames_are_decoded_at_the_camera_size(samples_dir):
    frames = camera_frames(sorted(samples_dir.glob("*.jpg"))[:2])
    assert len(frames) == 2
    assert all(frame.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3) for frame in frames)
    with pytest.raises(ValueError, match="at least one"):
        camera_frames([])


def test_run_benchmark_pairs_rounds_and_reports_every_stage(classifier, samples_dir):
    images = sorted(samples_dir.glob("*.jpg"))[:2]
    result = run_benchmark(classifier, images, iterations=3, rounds=2)
    assert len(result.invoke_ms) == len(result.end_to_end_ms) == 2
    assert len(result.preprocess_ms) == len(result.decode_ms) == 6
    assert len(result.file_decode_ms) == 2
    assert result.peak_rss_mb > 0
    report = format_report(result, classifier)
    for stage in ("preprocess", "invoke alone", "decode", "end to end", "peak resident"):
        assert stage in report


def test_on_the_edge_tpu_the_child_process_is_timed(shipped_model, samples_dir, tmp_path):
    """Timing the parent's CPU interpreter while frames go to the Coral would report the wrong
    figure: every timed invoke must run in the child, through the delegate."""
    coral = FakeCoral(tmp_path / "coral")
    classifier = Classifier(
        shipped_model, accelerator="edgetpu", threads=1, runtime_factory=coral.runtime_factory
    )
    try:
        child = classifier.accelerator_process
        assert child is not None
        before = coral.invokes_by_pid.get(child.pid, 0)
        result = run_benchmark(classifier, sorted(samples_dir.glob("*.jpg"))[:1], 4, rounds=2)
        # Per round: one untimed, 4 timed invokes, 4 end to end.
        assert coral.invokes_by_pid[child.pid] - before == 2 * (1 + 4 + 4)
        assert "invoke (Edge TPU child)" in format_report(result, classifier)
    finally:
        classifier.close()
