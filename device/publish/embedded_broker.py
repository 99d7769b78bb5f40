"""The zero-setup MQTT broker: a real mosquitto, run as a child of the daemon on 127.0.0.1.

Used when the configuration asks for it (``mqtt.embedded``, and the zero-config default) and no
broker listens yet, so a newcomer sees messages without setting one up. mosquitto rather than an
in-process Python broker: it routes retained messages by topic, speaks MQTT 5, and is what
production uses anyway (Debian / Raspberry Pi OS package ``mosquitto``).
"""

from __future__ import annotations

import ctypes
import getpass
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONFIG_NAME = "embedded-mosquitto.conf"
LOG_NAME = "embedded-mosquitto.log"  # a file, not a pipe: nobody reads a pipe while it runs
_PR_SET_PDEATHSIG = 1


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def mosquitto_config(host: str, port: int, user: str) -> str:
    """A loopback-only broker that keeps nothing on disk (anonymous: nothing else can reach it).

    ``user`` is the daemon's own: mosquitto started as root would otherwise switch to its
    ``mosquitto`` user, and a change of credentials clears the parent-death signal.
    """
    return (
        f"listener {port} {host}\n"
        f"user {user}\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
    )


def _die_with_parent() -> None:
    # The broker must not outlive a daemon that is killed with SIGKILL.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedBroker:
    """mosquitto as a child process, listening on ``host:port`` only."""

    def __init__(self, host: str, port: int, workdir: Path) -> None:
        self.host, self.port, self.workdir = host, port, Path(workdir)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections; RuntimeError saying why not."""
        binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
            None,
        )
        if binary is None:
            raise RuntimeError(
                "embedded MQTT broker: mosquitto is not installed "
                "(sudo apt install mosquitto; bash deploy/run.sh installs it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / CONFIG_NAME
        config.write_text(mosquitto_config(self.host, self.port, getpass.getuser()))
        with (self.workdir / LOG_NAME).open("wb") as log_file:
            self._process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not port_in_use(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                reason = self._failure_text()
                self.stop()
                raise RuntimeError(f"embedded MQTT broker on {self.host}:{self.port}: {reason}")
            time.sleep(0.05)
        log.info("embedded MQTT broker (mosquitto) listening on %s:%d", self.host, self.port)

    def _failure_text(self) -> str:
        if self._process is None or self._process.poll() is None:
            return "timed out waiting for mosquitto to listen"
        try:
            err = (self.workdir / LOG_NAME).read_text(errors="replace")
        except OSError:
            err = ""
        return f"mosquitto exited with {self._process.returncode}: {err.strip()[-300:]}"

    def stop(self, timeout: float = 2.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)
