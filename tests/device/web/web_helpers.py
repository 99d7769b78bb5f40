"""What the web page tests share: the daemon under test, its token, HTTP and polling."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from broker import Subscriber
from daemon_process import DaemonProcess

TOKEN = "kestrel-test-token-0123456789"
STREAM_FPS = 8.0


@dataclass
class WebDaemon:
    daemon: DaemonProcess
    sub: Subscriber
    port: int
    metrics_port: int
    folder: Path
    frames: list

    def url(self, path: str, token: str | None = TOKEN) -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}{path}" + (f"{sep}token={token}" if token else "")

    def get(self, path: str, token: str | None = TOKEN, timeout: float = 5.0):
        """(status, headers, body) of a GET, the token as ``?token=``."""
        try:
            with urllib.request.urlopen(self.url(path, token), timeout=timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


def wait_for(condition, timeout: float, what: str, daemon: DaemonProcess):
    """Poll ``condition()`` until it returns something true; fail with the daemon's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert daemon.process.poll() is None, f"daemon exited:\n{daemon.log_tail()}"
        time.sleep(0.05)
    raise AssertionError(f"no {what} in {timeout} s; daemon log:\n{daemon.log_tail()}")
