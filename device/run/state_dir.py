"""One daemon per ``state_dir``: a lock file held for the daemon's lifetime.

Two daemons on one ``state_dir`` share its message queue: one would send the other's messages
to its own broker. The lock is ``fcntl.flock`` on an open file, so the kernel releases it when
the process ends however it ends (kill -9, power cut: nothing stale to clean up). The file
says who holds it (PID, device, start time) for the refusal message; it is never deleted, as
deleting a lock file lets a third process lock a new file while the second still holds the old.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from device.config import ConfigError

LOCK_FILE = "kestrel.lock"


class StateDirBusy(SystemExit):
    """Another daemon holds the ``state_dir``. A SystemExit with a message: the process
    prints it and exits 1 (not 2, the config-error code that systemd does not restart: the
    other daemon may be gone by the next try)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"kestrel: {message}")
        self.message = message


class StateDirLock:
    """The held lock; :meth:`release` (or the process's end) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, device_id: str) -> StateDirLock:
        """Take the lock of ``state_dir`` (created if missing) or raise StateDirBusy.
        A ``state_dir`` that cannot be created or written raises ConfigError."""
        folder = Path(state_dir).expanduser()
        path = folder / LOCK_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Not O_TRUNC: the file of a running holder must survive a refused attempt.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(f"state_dir {folder}: cannot use it ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StateDirBusy(
                f"state_dir {folder} is in use by another kestrel daemon "
                f"(PID {holder.get('pid', '?')}, device_id {holder.get('device_id', '?')}, "
                f"lock file {path}); give each daemon its own state_dir"
            ) from None
        except OSError as exc:  # e.g. a filesystem without locks
            os.close(fd)
            raise ConfigError(f"state_dir {folder}: cannot lock {path} ({exc})") from None
        record = {
            "pid": os.getpid(),
            "device_id": device_id,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> dict[str, object]:
    """What the holder wrote; empty when it has not written yet (it just took the lock)."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
