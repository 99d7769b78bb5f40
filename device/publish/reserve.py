"""Room kept back on the disk for the message queue, given up when the disk is full.

With not one block free, sqlite cannot even delete: a delete is a write to the WAL. The queue
could then neither drop its oldest messages nor forget the delivered ones, and every new
message was lost. So the queue keeps a small file of allocated blocks beside it; on the first
"disk full" the file is deleted, which gives sqlite the room to drop the oldest rows and reuse
their pages from then on: while it is released the queue file never grows (a checkpoint
would need new blocks to move grown pages from the WAL into the file, and none are left). The
file comes back once the disk has room again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20  # 1 MiB: thousands of queued messages' worth of WAL and pages
RESTORE_FACTOR = 2  # bring the reserve back only with twice its size free


class DiskReserve:
    """A file of ``size`` allocated bytes at ``path``: :meth:`release` when the disk is full,
    :meth:`restore` when it may have room again."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self.released = False  # given up for a full disk, not allocated again yet
        self.restore()

    @property
    def held(self) -> bool:
        return self.path.is_file()

    def release(self) -> bool:
        """Delete the reserve; True when that freed room (it existed)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.debug("%s: cannot release the disk reserve: %s", self.path, exc)
            return False
        self.released = True
        log.warning("%s: disk full; released the %d KiB reserve", self.path, self.size >> 10)
        return True

    def restore(self) -> None:
        """Allocate the reserve again when it is missing and the disk has room for it (a
        statvfs call, a few microseconds, when it cannot)."""
        if self.held:
            return
        try:
            disk = os.statvfs(self.path.parent)
            if disk.f_bavail * disk.f_frsize < RESTORE_FACTOR * self.size:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
            self.released = False
        except OSError as exc:  # a partial reserve would lie about the room it holds
            log.debug("%s: cannot allocate the disk reserve: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
