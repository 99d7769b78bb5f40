"""``kestrel run`` and its signals: SIGTERM at any moment of start-up, SIGINT, and systemd's
sd_notify protocol over a real ``NOTIFY_SOCKET`` (see daemon_process.py)."""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_process import (
    AVAILABLE,
    DEVICE,
    camera,
    scene_frames,
    started,
    write_config,
    write_video,
)

pytestmark = pytest.mark.slow

# What systemd and deploy/run.sh start (device.run.launch: the handlers come first).
KESTREL = Path(sys.executable).with_name("kestrel")


def catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``sig`` (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def has_loaded(pid: int, package: str) -> bool:
    """Whether process ``pid`` has mapped a shared library of ``package`` (e.g. numpy's)."""
    return f"/{package}/" in Path(f"/proc/{pid}/maps").read_text()


def wait_for_handler(process: subprocess.Popen, sig: int, timeout: float = 20.0) -> float:
    """Seconds until ``process`` catches ``sig``; polled every millisecond."""
    t0 = time.monotonic()
    while not catches(process.pid, sig):
        assert process.poll() is None, f"exited {process.returncode} before catching {sig}"
        assert time.monotonic() - t0 < timeout, f"no handler for {sig} after {timeout} s"
        time.sleep(0.001)
    return time.monotonic() - t0


# Seconds after the first moment a handler can exist (launch.py's first lines: Python itself
# cannot run one earlier, so no signal before it can end in exit 0): at once, during the
# imports, and into the daemon's start-up.
@pytest.mark.parametrize("after_handler", [0.0, 0.1, 0.2, 0.4])
def test_sigterm_in_the_first_moments_of_start_up_exits_0(tmp_path, photos, after_handler):
    """A stop asked for while Python is still importing (systemd stopping a unit it has just
    started) ends the process cleanly, exit 0, instead of killing it by the signal (-15)."""
    if not KESTREL.exists():
        pytest.skip(f"{KESTREL} is not installed (pip install -e .)")
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 5)]))
    config = write_config(tmp_path, None, [camera("door.avi", loop=True)])
    process = subprocess.Popen(
        [str(KESTREL), "run", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_handler(process, signal.SIGTERM)
        # The handler must come before the slow imports (numpy, OpenCV, the runtime), or a stop
        # during them would kill the process by the signal.
        assert after_handler > 0 or not has_loaded(process.pid, "numpy"), "handler came late"
        time.sleep(after_handler)  # not a wait for something: the moment is the test
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, (
        f"exit {process.returncode} after SIGTERM at {after_handler} s\n{err}"
    )
    assert "Traceback" not in err, err


def test_sigint_says_offline_and_exits_0(
    tmp_path, photos, debug_mosquitto, make_subscriber, start_daemon
):
    """Ctrl-C in a terminal: the same clean stop as SIGTERM (exit 0, retained ``offline``
    published by the daemon itself, see test_sigterm_says_offline_and_exits_0_within_2_s)."""
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 20)]))
    config = write_config(tmp_path, debug_mosquitto.port, [camera("door.avi", loop=True)])
    sub = make_subscriber(debug_mosquitto.port, [AVAILABLE])
    sub.wait_subscribed()
    daemon = start_daemon(config)
    started(daemon, sub)
    daemon.send(signal.SIGINT)
    assert daemon.wait_exit(timeout=10) == 0, daemon.log_tail()
    sub.wait_for(lambda ms: ms[-1].payload == b"offline")
    # The daemon's own goodbye, before its DISCONNECT (after which no will is ever sent).
    sent = debug_mosquitto.packets_from(f"kestrel-{DEVICE}")
    assert [p for p in sent if AVAILABLE in p or p == "DISCONNECT"] == [
        f"PUBLISH {AVAILABLE} {len(b'online')}",
        f"PUBLISH {AVAILABLE} {len(b'offline')}",
        "DISCONNECT",
    ], sent
    assert "Traceback" not in daemon.log_tail(200)


@pytest.fixture
def notify_socket(tmp_path):
    """A unix datagram socket bound where systemd would have NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


def _datagrams(sock: socket.socket, until, timeout: float) -> list[tuple[float, str]]:
    """(monotonic time, message) received until ``until(messages)`` holds."""
    got: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while not until([m for _, m in got]):
        if time.monotonic() > deadline:
            raise AssertionError(f"sd_notify: only {got} in {timeout} s")
        with contextlib.suppress(TimeoutError):
            got.append((time.monotonic(), sock.recv(4096).decode()))
    return got


def test_sd_notify_ready_watchdog_at_half_watchdogsec_and_stopping(
    tmp_path, photos, notify_socket, start_daemon
):
    """Under systemd (Type=notify, WatchdogSec=2): READY=1 once running, WATCHDOG=1 every
    second (half of WatchdogSec, so one late ping never gets it restarted), STOPPING=1 at
    SIGTERM, and nothing after it."""
    path, sock = notify_socket
    write_video(tmp_path / "door.avi", scene_frames(photos, [("cat", 20)]))
    config = write_config(tmp_path, None, [camera("door.avi", loop=True)])
    daemon = start_daemon(config, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "2000000"})

    got = _datagrams(sock, lambda ms: ms.count("WATCHDOG=1") >= 4, timeout=30)
    messages = [m for _, m in got]
    assert messages[0] == "READY=1" and set(messages[1:]) == {"WATCHDOG=1"}, messages
    pings = [t for t, m in got if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    # Every ping within WatchdogSec (2 s), and not a flood: one per interval, about 1 s.
    assert all(0.5 < gap < 2.0 for gap in gaps), gaps

    daemon.send(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    rest = _datagrams(sock, lambda ms: "STOPPING=1" in ms, timeout=5)
    assert {m for _, m in rest} <= {"WATCHDOG=1", "STOPPING=1"}
    assert rest[-1][1] == "STOPPING=1"
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # nothing after STOPPING=1
    print(f"watchdog gaps {[round(g, 2) for g in gaps]} s (WatchdogSec=2)")
