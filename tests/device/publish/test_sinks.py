"""The daemon's sinks: an event is durable before the console announces it, and the snapshot
files on disk stay bounded and whole."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import yaml
from broker import free_port
from publisher_helpers import TOPICS, wait_until

from device.config import KestrelConfig, SnapshotConfig
from device.paths import SAMPLES_DIR
from device.publish.outbox import SPOOL_FILE
from device.publish.sinks import ConsoleSink, SnapshotStore
from device.run.daemon import Daemon


def scene_folder(folder: Path, per_scene: int = 4) -> Path:
    """Sample photos in name order: a few cats, then a few cups of coffee (a scene change)."""
    folder.mkdir(parents=True)
    for i in range(per_scene):
        shutil.copy(SAMPLES_DIR / "cat-chelsea.jpg", folder / f"a-cat-{i}.jpg")
        shutil.copy(SAMPLES_DIR / "coffee.jpg", folder / f"b-coffee-{i}.jpg")
    return folder


def spooled_events(state_dir: Path) -> int:
    """Event rows in the on-disk queue, read by a connection of its own (what survives a kill)."""
    with sqlite3.connect(state_dir / SPOOL_FILE) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM messages WHERE topic LIKE '%/event'").fetchone()
    return count


def test_an_event_is_in_the_on_disk_queue_before_the_console_announces_it(tmp_path, monkeypatch):
    state_dir = tmp_path / "state"
    config = KestrelConfig.model_validate(
        {
            "device_id": "barn",
            "state_dir": str(state_dir),
            "console": True,
            # Nobody listens: every event stays in the queue, so the count below is exact.
            "mqtt": {"host": "127.0.0.1", "port": free_port()},
            "snapshots": {"enabled": False},
            "cameras": [
                {
                    "name": "door",
                    "source": str(scene_folder(tmp_path / "frames")),
                    "source_fps": 10,
                    "smoothing": {"min_dwell": 0.0, "alpha": 1.0},
                }
            ],
        }
    )
    # (events announced so far, events on disk) at the moment the console is handed one.
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()
    announce = ConsoleSink.publish_event

    def checked(self: ConsoleSink, camera: str, payload: dict) -> None:
        with lock:
            seen.append((len(seen) + 1, spooled_events(state_dir)))
        announce(self, camera, payload)

    monkeypatch.setattr(ConsoleSink, "publish_event", checked)
    daemon = Daemon(config, console_stream=open(tmp_path / "console.txt", "w"))  # noqa: SIM115
    daemon.start()
    try:
        wait_until(lambda: len(seen) >= 3, timeout=30, what="three events")
    finally:
        daemon.stop()
    assert all(on_disk >= announced for announced, on_disk in seen), seen


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


def full_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) whose buffer is already full: the next write blocks."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 512)
    os.set_blocking(write_end, True)
    return read_end, write_end


def test_a_console_nobody_reads_does_not_stop_inference(tmp_path, mosquitto, make_subscriber):
    folder = scene_folder(tmp_path / "frames")
    config = {
        "device_id": "barn",
        "state_dir": "state",
        "console": True,
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "stats_interval": 0.5},
        "snapshots": {"enabled": False},
        "cameras": [
            {
                "name": "door",
                "source": str(folder),
                "loop": True,
                "source_fps": 10,
                "smoothing": {"min_dwell": 0.0, "alpha": 1.0},
            }
        ],
    }
    path = tmp_path / "kestrel.yaml"
    path.write_text(yaml.safe_dump(config))
    sub = make_subscriber(mosquitto.port, [TOPICS.stats])
    sub.wait_subscribed()
    read_end, write_end = full_pipe()
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "KESTREL_MODEL")}
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "device.cli", "-v", "run", "--config", str(path)],
            cwd=tmp_path,
            env=env,
            stdout=write_end,  # never read by anyone
            stderr=stderr,
        )
    os.close(write_end)
    try:
        # Each scene change is a console line (and so is every source status), all refused by
        # the pipe; inference must go on regardless.
        sub.wait_for(lambda ms: inferences(ms) >= 20, timeout=40)
        first = inferences(sub.received())
        sub.wait_for(lambda ms: inferences(ms) > first, timeout=10)
    finally:
        daemon.kill()
        daemon.wait(10)
        os.close(read_end)
        print((tmp_path / "stderr.txt").read_text(errors="replace")[-3000:])


def inferences(messages: list) -> int:
    """The camera's inference count in the newest stats message."""
    stats = [json.loads(m.payload) for m in messages]
    return max((s["cameras"]["door"]["inferences"] for s in stats), default=0)


def test_console_lines_beyond_its_queue_are_dropped_and_counted():
    read_end, write_end = full_pipe()
    stream = os.fdopen(write_end, "w")
    console = ConsoleSink(stream, max_lines=10)
    status = {"state": "streaming", "reason": ""}
    for _ in range(50):  # each would block on the full pipe if written by the caller
        console.publish_status("door", status)
    kept = 50 - console.dropped
    assert 10 <= kept <= 11  # the queue, and the line its thread waits to write
    os.read(read_end, 65536)  # someone reads again: the queued lines come through
    got = b""
    while got.count(b"\n") < kept:
        got += os.read(read_end, 65536)
    console.close()
    assert b"door: source streaming" in got
    stream.close()
    os.close(read_end)


SAVE_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from device.config import SnapshotConfig
from device.publish.sinks import SnapshotStore

folder, limit = Path(sys.argv[1]), int(sys.argv[2])
store = SnapshotStore(SnapshotConfig(directory=folder), folder)
jpeg = (Path(sys.argv[3])).read_bytes()
store.save("door", 0, jpeg)  # the folder is listed and made before the disk "fills"
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
print(store.save("door", 1, jpeg))
"""


def test_a_snapshot_that_cannot_be_written_leaves_no_file_behind(tmp_path):
    """The disk fills at the open (a zero-byte file) or in the middle of the JPEG."""
    jpeg = SAMPLES_DIR / "cat-chelsea.jpg"
    for limit in (0, 4096):
        folder = tmp_path / f"limit-{limit}"
        done = subprocess.run(
            [sys.executable, "-c", SAVE_UNDER_A_FILE_SIZE_LIMIT, str(folder), str(limit), jpeg],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "None"  # not saved, and said so
        assert "snapshot not saved" in done.stderr and "File too large" in done.stderr
        (kept,) = list(folder.iterdir())  # the first one, whole; nothing of the second
        assert kept.name.endswith("-0.jpg") and kept.read_bytes() == jpeg.read_bytes()


def test_snapshots_are_bounded_in_size_and_zero_byte_leftovers_are_pruned(tmp_path):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for name in ("door-old-1.jpg", "door-old-2.jpg", "door-old-3.jpg.partial"):
        (folder / name).write_bytes(b"")  # what a full disk left behind last time
    jpeg = (SAMPLES_DIR / "cat-chelsea.jpg").read_bytes()
    bound = 3.5 * len(jpeg) / 1e6
    config = SnapshotConfig(directory=folder, max_files=100, max_mb=bound)
    store = SnapshotStore(config, tmp_path)
    saved = [store.save("door", i, jpeg) for i in range(10)]
    left = sorted(folder.iterdir())
    assert left == sorted(saved[-3:])  # the newest three: the most that fit in max_mb
    assert sum(p.stat().st_size for p in left) <= bound * 1e6

    # The next run starts from what is there and keeps the same bound.
    again = SnapshotStore(config, tmp_path)
    newest = again.save("door", 10, jpeg)
    assert sorted(folder.iterdir()) == sorted([*saved[-2:], newest])
