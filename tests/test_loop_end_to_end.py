"""The whole loop on real pictures, as the README's "Train a model of your own camera" runs it:
``kestrel run`` with ``collect`` on a video of two scenes (the cat and the coffee photos) ->
``kestrel curate`` groups the collected frames -> ``kestrel label``'s API files each group
into a class folder -> ``kestrel train`` (the fastest settings) -> ``kestrel classify`` runs
the bundle on a collected frame."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from device.cli import main
from device.paths import SAMPLES_DIR

pytestmark = pytest.mark.slow
W, H, FPS = 320, 240, 15.0
SCENES = (("cat", "cat-chelsea.jpg", 30), ("coffee", "coffee.jpg", 30))


def _video(path: Path) -> list[str]:
    """An MJPG .avi: each photo held for a while, shifted and noisy from frame to frame (a
    camera never gives the same frame twice). Returns the true scene of every frame."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    truth = []
    for name, photo, count in SCENES:
        image = cv2.resize(cv2.imread(str(SAMPLES_DIR / photo)), (W, H))
        for _ in range(count):
            dx, dy = (int(v) for v in rng.integers(-8, 9, 2))
            moved = cv2.warpAffine(
                image, np.float32([[1, 0, dx], [0, 1, dy]]), (W, H), borderMode=cv2.BORDER_REFLECT
            )
            writer.write(np.clip(moved + rng.normal(0, 4, moved.shape), 0, 255).astype(np.uint8))
            truth.append(name)
    writer.release()
    return truth


def _collect(tmp_path: Path, frames: Path) -> None:
    """``kestrel run`` until the video has ended, then SIGTERM (exit 0)."""
    collect = {
        "enabled": True,
        "directory": str(frames),
        "interval_minutes": 0.001,
        "min_difference": 0.0,
        "max_per_minute": 1000,
    }
    camera = {
        "name": "door",
        "source": "scene.avi",
        "source_fps": FPS,
        "max_fps": FPS,
        "reopen": {"min_delay": 60, "max_delay": 60},
        "collect": collect,
    }
    config = {
        "device_id": "e2e",
        "state_dir": "state",
        "console": True,
        "mqtt": None,
        "cameras": [camera],
    }
    (tmp_path / "kestrel.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KESTREL_MODEL")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "run", "--config", "kestrel.yaml"],
        cwd=tmp_path,
        env=env | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        assert daemon.stdout is not None
        deadline = time.monotonic() + 40
        for line in daemon.stdout:
            lines.append(line)
            if "source ended" in line or time.monotonic() > deadline:
                break
        time.sleep(0.5)  # the writer thread's last frames
    finally:
        daemon.send_signal(signal.SIGTERM)
        output = daemon.communicate(timeout=20)[0]
    assert daemon.returncode == 0, "".join(lines) + output
    assert any("source ended" in line for line in lines), "".join(lines)


def test_camera_to_dataset_to_bundle(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("KESTREL_CACHE_DIR", str(tmp_path / "cache"))
    truth = _video(tmp_path / "scene.avi")
    frames = tmp_path / "frames"
    _collect(tmp_path, frames)
    jpegs = sorted(frames.glob("*.jpg"))
    assert len(jpegs) >= 20, "too few frames collected"
    scene = {}
    for jpeg in jpegs:
        sidecar = json.loads(jpeg.with_suffix(".json").read_text())
        scene[jpeg.name] = truth[sidecar["frame_id"] - 1]  # frame ids count from 1
        assert sidecar["guess"]  # the model's guess travels with the frame
    assert set(scene.values()) == {"cat", "coffee"}

    assert main(["curate", str(frames), "--clusters", "2", "--image-size", "96", "-q"]) == 0
    report = json.loads((frames / ".kestrel-curate" / "curate.json").read_text())

    from starlette.testclient import TestClient

    from training.label.app import create_app

    page = TestClient(create_app(frames, report), base_url="http://127.0.0.1")
    images = page.get("/api/images").json()["images"]
    for group in {i["cluster"] for i in images}:
        members = [i["path"] for i in images if i["cluster"] == group]
        # The person names the group after what its pictures show (most of them).
        name = Counter(scene[m] for m in members).most_common(1)[0][0]
        assert page.post("/api/label", json={"paths": members, "label": name}).status_code == 200
    filed = {p.name: p.parent.name for p in frames.glob("*/*.jpg")}
    assert len(filed) == len(jpegs) and not list(frames.glob("*.jpg"))
    assert np.mean([filed[n] == scene[n] for n in filed]) >= 0.9  # the groups were the scenes

    bundle = tmp_path / "bundle"
    train = ["train", str(frames), "--task", "multiclass", "--out", str(bundle), "-q"]
    train += [
        "--backbone",
        "small-cnn",
        "--image-size",
        "32",
        "--epochs",
        "8",
        "--max-int8-drop",
        "50",
    ]
    assert main(train) == 0
    capsys.readouterr()
    cat = next(frames.glob("cat/*.jpg"))
    assert main(["classify", "--model", str(bundle), "--json", str(cat)]) == 0
    answer = json.loads(capsys.readouterr().out.splitlines()[0])
    assert answer["scores"][0]["label"] == "cat"
