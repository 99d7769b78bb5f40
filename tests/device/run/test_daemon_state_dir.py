"""``kestrel run`` and its ``state_dir``: one daemon per state_dir, and a corrupt queue file
that no longer keeps the camera down (issue 9). Real daemon processes, a real mosquitto."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from daemon_process import DEVICE, STATS, camera, scene_frames, started, write_config, write_video

from device.publish.outbox import SPOOL_FILE
from device.publish.spool import Spool


def _config(folder: Path, port: int, photos, **top) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "door.avi", scene_frames(photos, [("cat", 12)]))
    return write_config(folder, port, [camera("door.avi", loop=True)], **top)


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon
):
    """Two daemons once shared one queue: one sent the other's messages to its broker. The
    second now refuses, exit 1 (systemd restarts it: the first may be gone by then), naming
    the holder; a kill -9 of the holder frees the state_dir."""
    state_dir = tmp_path / "shared-state"
    sub = make_subscriber(mosquitto.port, ["kestrel/#"])
    sub.wait_subscribed()
    first = start_daemon(_config(tmp_path / "a", mosquitto.port, photos, state_dir=str(state_dir)))
    started(first, sub)
    config_b = _config(
        tmp_path / "b", mosquitto.port, photos, state_dir=str(state_dir), device_id="bar"
    )

    second = start_daemon(config_b)
    assert second.wait_exit(30) == 1
    refusal = "\n".join(second.stderr)
    assert f"PID {first.pid}" in refusal and f"device_id {DEVICE}" in refusal, refusal
    assert str(state_dir) in refusal and "Traceback" not in refusal
    assert first.process.poll() is None  # the holder runs on
    assert not [m.topic for m in sub.received() if m.topic.startswith("kestrel/bar/")]

    first.process.kill()  # kill -9: the kernel releases the lock, no stale file blocks
    first.wait_exit()
    third = start_daemon(config_b)
    third.wait_until(
        lambda: any(
            m.topic == "kestrel/bar/available" and m.payload == b"online" for m in sub.received()
        ),
        30,
        "'online' of the daemon that took the state_dir over",
    )
    third.send(signal.SIGTERM)
    assert third.wait_exit() == 0


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is no sqlite file\n" * 200)


def _truncated(path: Path) -> None:
    spool = Spool(path, 1000)
    for i in range(300):
        spool.put("kestrel/testdev/door/event", b"%d" % i + b"x" * 300, 1, False)
    spool.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_a_corrupt_queue_file_is_moved_aside_and_the_daemon_runs(
    tmp_path, photos, mosquitto, make_subscriber, start_daemon, damage
):
    """A corrupt queue made the daemon exit 2, which the shipped systemd unit never restarts.
    Now the file is kept aside, named in the log and in the stats, and a fresh queue runs."""
    config = _config(tmp_path, mosquitto.port, photos)
    queue = tmp_path / "state" / SPOOL_FILE
    queue.parent.mkdir()
    damage(queue)
    original = queue.read_bytes()
    sub = make_subscriber(mosquitto.port, ["kestrel/#"])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)

    (aside,) = queue.parent.glob(f"{SPOOL_FILE}.corrupt-*")
    assert aside.read_bytes() == original
    warning = [line for line in daemon.stderr if "corrupt" in line]
    assert warning and str(queue) in warning[0] and str(aside) in warning[0], daemon.stderr

    def reset_in_stats(messages) -> bool:
        stats = [json.loads(m.payload) for m in messages if m.topic == STATS]
        return any(str(aside) in (s["mqtt"].get("queue_reset") or "") for s in stats)

    sub.wait_for(reset_in_stats, timeout=15)
    daemon.wait_until(
        lambda: any(m.topic.endswith("/door/state") for m in sub.received()), 15, "a state"
    )
    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert "Traceback" not in "\n".join(daemon.stderr)
