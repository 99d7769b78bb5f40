"""Edge TPU failover and recovery at the daemon's level, with a fake USB Coral (the real model
on the real runtime; only the delegate and the unplugging are faked)."""

from __future__ import annotations

import functools

import pytest

from device.config import KestrelConfig
from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from device.publish import prometheus
from device.run import daemon as daemon_module
from device.run.daemon import Daemon


@pytest.fixture
def coral_daemon(tmp_path, fake_coral, monkeypatch) -> Daemon:
    monkeypatch.setattr(
        daemon_module, "Classifier", functools.partial(Classifier, runtime=fake_coral.runtime)
    )
    config = KestrelConfig.model_validate(
        {
            "device_id": "barn",
            "accelerator": "edgetpu",
            "mqtt": None,
            "console": False,
            "state_dir": str(tmp_path / "state"),
            "cameras": [{"name": "door", "source": "demo"}],
        }
    )
    return Daemon(config)


def test_daemon_reports_the_fallback_and_moves_back_when_the_coral_returns(
    coral_daemon, fake_coral, samples_dir
):
    daemon = coral_daemon
    stage = daemon.stages["door"][0]
    cat = read_image(str(samples_dir / "cat-chelsea.jpg"))
    assert daemon.stats()["accelerator"] == "edgetpu"

    fake_coral.plugged = False
    with stage.lock:
        assert stage.classifier.classify(cat).label  # answered, on the CPU now
    stats = daemon.stats()
    assert stats["accelerator"] == "cpu" and stats["accelerator_failures"] == 1
    assert "USB transfer error" in stats["accelerator_reason"]
    assert daemon.retry_accelerators() == 0  # still unplugged

    fake_coral.plugged = True
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


def test_a_retry_that_breaks_is_logged_and_the_cpu_goes_on(
    coral_daemon, fake_coral, monkeypatch, caplog
):
    daemon = coral_daemon
    classifier = daemon.stages["door"][0].classifier

    def broken():
        raise OSError("device busy")

    monkeypatch.setattr(classifier, "accelerator_candidate", broken)
    assert daemon.retry_accelerators() == 0
    assert "Edge TPU retry failed" in caplog.text
