"""``kestrel run`` with ``collect`` on, as users run it: an OpenCV-written video, the shipped
model, frames read back from the folder and the counters from ``/metrics`` (see
daemon_process.py for the stand-ins)."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import cv2
import pytest
from broker import free_port
from daemon_process import (
    NO_REPLAY,
    START_TIMEOUT,
    H,
    W,
    camera,
    scene_frames,
    write_config,
    write_video,
)
from test_collect import SIDECAR_KEYS

pytestmark = pytest.mark.slow

METRIC = re.compile(
    r'^kestrel_(collect_\w+)\{device="testdev",camera="(\w+)"(?:,\w+="(\w+)")?\} (\S+)$', re.M
)


def collect_metrics(port: int) -> dict[tuple[str, str, str], float] | None:
    """``{(metric, camera, reason or why or ""): value}`` from /metrics; None until it answers."""
    http = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with http.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            body = response.read().decode()
    except OSError:
        return None
    return {(m[1], m[2], m[3] or ""): float(m[4]) for m in METRIC.finditer(body)}


def test_a_daemon_collects_pairs_and_an_unwritable_folder_only_costs_frames(
    tmp_path: Path, photos, start_daemon
):
    """Two cameras on one video (cat, a cross-fade, coffee). ``door`` collects into ``frames``:
    JPEG + sidecar pairs, the transitions among them, each JPEG the video's own bytes.
    ``barn`` collects under a regular file (a real ENOTDIR on every write): it goes on
    classifying (its events are printed), its lost frames are counted on /metrics, and the
    failure is logged once."""
    video = write_video(tmp_path / "scene.avi", scene_frames(photos, [("cat", 25), ("coffee", 25)]))
    (tmp_path / "blocked").write_text("a file where a folder should be")
    fast = {"min_dwell": 0.3}
    door = camera(
        "scene.avi",
        reopen=NO_REPLAY,
        smoothing=fast,
        collect={"enabled": True, "directory": "frames"},
    )
    barn = camera(
        "scene.avi",
        name="barn",
        reopen=NO_REPLAY,
        smoothing=fast,
        collect={"enabled": True, "directory": "blocked/frames"},
    )
    port = free_port()
    daemon = start_daemon(write_config(tmp_path, None, [door, barn], metrics_port=port))
    daemon.wait_until(
        lambda: daemon.source_states().count("ended") == 2, START_TIMEOUT + 10, "both ends"
    )
    figures: dict = {}

    def counted() -> bool:
        figures.update(collect_metrics(port) or {})
        saved = sum(
            v for (m, cam, _), v in figures.items() if m == "collect_saved_total" and cam == "door"
        )
        return saved >= 2 and figures.get(("collect_files", "door", "")) == saved

    daemon.wait_until(counted, 10, "door's frames counted on /metrics")
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0

    folder = tmp_path / "frames"
    pictures = sorted(folder.glob("door.*.jpg"))
    kept = [json.loads(p.with_suffix(".json").read_text()) for p in pictures]
    assert len(kept) == figures[("collect_files", "door", "")] == len(list(folder.glob("*.json")))
    assert not list(folder.glob("*.partial"))
    avi = video.read_bytes()
    for picture, sidecar in zip(pictures, kept, strict=True):
        assert list(sidecar) == SIDECAR_KEYS and sidecar["camera"] == "door"
        assert sidecar["image"] == picture.name and sidecar["size"] == [W, H]
        assert cv2.imread(str(picture)).shape == (H, W, 3)
        assert picture.read_bytes() in avi  # the camera's own JPEG, not encoded again
    transitions = [s for s in kept if s["reason"] == "transition"]
    arrived, changed = transitions[:2]  # the cat arrives (a breed of it), then the coffee
    assert "cat" in [x["label"] for x in arrived["hierarchy"]] and arrived["state"], kept
    assert changed["state"] == ["espresso"], kept
    assert changed["guess"] == "espresso"
    by_reason = {
        r: v for (m, cam, r), v in figures.items() if m == "collect_saved_total" and cam == "door"
    }
    assert by_reason["transition"] == len(transitions)

    # barn: classified the whole video all the same, lost every frame it meant to keep.
    assert [e.type for e in daemon.events("barn")][:2] == ["start", "change"]
    assert figures[("collect_dropped_total", "barn", "write_failed")] >= 2
    assert figures[("collect_saved_total", "barn", "transition")] == 0
    failures = [line for line in daemon.stderr if "barn: collect: cannot write frames" in line]
    assert len(failures) == 1, daemon.log_tail(40)
    assert "blocked/frames" in failures[0] and "Not a directory" in failures[0]
