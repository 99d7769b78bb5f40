"""``kestrel classify`` and the daemon decide alike (the README says so): every sample photo,
through the demo source, the camera worker (motion gate, cascade stage, smoother) and the
state payload, ends in the label ``kestrel classify --json`` gives the same photo.

The daemon's decision path runs in-process here, with the frame clock of the demo's pacing
passed in (seconds of holding each photo cost no wall time); test_daemon_zero_setup.py runs
the demo for real. ``unknown`` is classify's word for "no confident label", which the daemon
publishes as the empty state (``label: ""``).
"""

from __future__ import annotations

import dataclasses

import pytest
from daemon_process import classify_labels
from test_worker import Recorder

from device.capture import open_source
from device.config import KestrelConfig
from device.paths import SAMPLES_DIR, is_image_file
from device.run.daemon import Daemon, inference_min_size
from device.run.worker import CameraWorker


@pytest.mark.parametrize("motion", [False, True], ids=["every-frame", "motion-gated"])
def test_the_demo_daemon_publishes_what_classify_says_for_every_sample_photo(tmp_path, motion):
    photos = sorted(p for p in SAMPLES_DIR.iterdir() if is_image_file(p))  # the demo's order
    assert len(photos) >= 4
    expected = classify_labels(photos)
    config = KestrelConfig.model_validate(
        {
            "mqtt": None,
            "console": False,
            "state_dir": str(tmp_path / "state"),
            "cameras": [{"name": "demo", "source": "demo", "motion": {"enabled": motion}}],
        }
    )
    daemon = Daemon(config)
    (camera,) = config.cameras
    stages = daemon.stages["demo"]
    source = open_source(camera, min_size=inference_min_size(camera, stages))
    recorder = Recorder()
    worker = CameraWorker(camera, stages, None, [recorder], None)  # type: ignore[arg-type]
    worker.publish_initial_state()
    source.open()
    published: dict[str, str] = {}
    at = 0.0
    try:
        for photo in photos:
            for _ in range(source.repeat):  # the frames the demo holds this photo for
                frame = source.read()
                assert frame is not None
                worker.process(dataclasses.replace(frame, monotonic=at))
                at += source.frame_interval
            published[photo.name] = recorder.of("state")[-1]["label"]
    finally:
        source.close()
        daemon.state_lock.release()
    print({name: (published[name], expected[name]) for name in expected})
    assert published == expected
