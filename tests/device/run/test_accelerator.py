"""Edge TPU failover and recovery at the daemon's level, with a fake USB Coral that fails as
libedgetpu does (the real model on the real runtime; only the delegate and its aborts are
faked): a pulled Coral aborts the child process that runs it, never the daemon."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
from inference.fake_edgetpu import FakeCoral, add_usb_device

from device.config import KestrelConfig
from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from device.publish import prometheus
from device.run import daemon as daemon_module
from device.run.daemon import Daemon


@pytest.fixture
def coral(tmp_path) -> FakeCoral:
    return FakeCoral(tmp_path / "coral")


@pytest.fixture
def make_daemon(tmp_path, coral, monkeypatch):
    monkeypatch.setattr(
        daemon_module,
        "Classifier",
        functools.partial(
            Classifier, runtime_factory=coral.runtime_factory, sysfs_root=tmp_path / "sys"
        ),
    )
    made: list[Daemon] = []

    def make(**settings) -> Daemon:
        config = KestrelConfig.model_validate(
            {
                "device_id": "barn",
                "accelerator": "edgetpu",
                "mqtt": None,
                "console": False,
                "state_dir": str(tmp_path / "state"),
                "cameras": [{"name": "door", "source": "demo", "source_fps": 20, "max_fps": 20}],
            }
            | settings
        )
        made.append(Daemon(config))
        return made[-1]

    yield make
    for daemon in made:
        for classifiers in daemon.stages.values():
            for stage in classifiers:
                stage.classifier.close()


def test_daemon_reports_the_fallback_and_moves_back_when_the_coral_returns(
    make_daemon, coral, samples_dir
):
    daemon = make_daemon(accelerator_device="usb")
    stage = daemon.stages["door"][0]
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    assert daemon.stats()["accelerator"] == "edgetpu"
    assert coral.options == [{"device": "usb"}]  # the config's choice reaches libedgetpu

    coral.plugged = False
    with stage.lock:
        assert stage.classifier.classify(cat).label  # answered, on the CPU now
    stats = daemon.stats()
    assert stats["accelerator"] == "cpu" and stats["accelerator_failures"] == 1
    assert "died (SIGABRT)" in stats["accelerator_reason"]
    assert daemon.retry_accelerators() == 0  # still unplugged

    coral.plugged = True
    assert daemon.retry_accelerators() == 1
    stats = daemon.stats()
    assert stats["accelerator"] == "edgetpu" and stats["accelerator_recoveries"] == 1
    assert stats["accelerator_reason"] == ""
    metrics = prometheus.render(stats)
    assert 'kestrel_accelerator_failures_total{device="barn"} 1' in metrics
    assert 'kestrel_accelerator_recoveries_total{device="barn"} 1' in metrics
    assert 'kestrel_accelerator_info{device="barn",accelerator="edgetpu"' in metrics
    with stage.lock:
        assert stage.classifier.classify(cat).label
    assert daemon.retry_accelerators() == 0  # nothing left to move


def test_a_running_daemon_loses_no_frame_when_the_coral_aborts(make_daemon, coral):
    """The demo camera at 20 fps; the child aborts on its 5th invoke (the 4th frame); the retry
    loop (every 0.3 s) puts a new child on the Edge TPU. Every frame the worker took was
    answered, and frames ran on the new child."""
    daemon = make_daemon(accelerator_retry=0.3)
    coral.abort_on_invoke(5)
    daemon.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            invokes = coral.invokes_by_pid
            back = daemon.stats()["accelerator_recoveries"] == 1
            if back and len(invokes) == 2 and min(invokes.values()) >= 3:
                break  # the new child ran its warm-up and two frames
            time.sleep(0.1)
    finally:
        stats = daemon.stats()  # before stop, which ends the child (the CPU answers then)
        daemon.stop()
    door = stats["cameras"]["door"]
    assert stats["accelerator_failures"] == 1 and stats["accelerator_recoveries"] == 1
    assert stats["accelerator"] == "edgetpu"
    assert door["errors"] == 0 and door["inferences"] >= 5
    pids = coral.delegate_pids
    assert len(pids) == 2 and os.getpid() not in pids  # the aborted child and its successor
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)  # stop ended the child too


def test_a_coral_on_usb2_is_published_in_the_stats(make_daemon, tmp_path, caplog):
    add_usb_device(tmp_path / "sys", "1-1.3", "18d1", "9302", "480")
    daemon = make_daemon()
    assert daemon.stats()["accelerator_usb_speed_mbps"] == 480
    assert "USB 2 port" in caplog.text


def test_a_malformed_accelerator_device_is_refused_by_the_config():
    with pytest.raises(ValueError, match="accelerator_device"):
        KestrelConfig.model_validate({"accelerator_device": "usb1"})


def test_a_retry_that_breaks_is_logged_and_the_cpu_goes_on(make_daemon, monkeypatch, caplog):
    daemon = make_daemon()
    classifier = daemon.stages["door"][0].classifier

    def broken():
        raise OSError("device busy")

    monkeypatch.setattr(classifier, "accelerator_candidate", broken)
    assert daemon.retry_accelerators() == 0
    assert "Edge TPU retry failed" in caplog.text
