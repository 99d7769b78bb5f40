"""The collected frames of one camera on disk: JPEG + JSON sidecar pairs, bounded.

Files are named ``<camera>.<UTC time>-<frame id>.jpg`` and ``... .json`` (a camera name has no
dot, so cameras can share a folder and each counts only its own). Each file is written under a
temporary name and renamed when whole, the sidecar after its picture: a pair on disk is whole.
What an earlier run left unfinished (a ``.partial``, an empty file, a picture without its
sidecar after a power cut, or a sidecar without its picture) is deleted when the store first
writes. Beyond ``max_files`` pairs or ``max_mb`` the oldest pairs are deleted (``pruned``);
only the top level of the folder is looked at, so frames a person has labelled (moved into a
class folder) are never touched.
"""

from __future__ import annotations

import collections
import logging
from datetime import UTC, datetime
from pathlib import Path

from device.publish.sinks import PARTIAL, write_whole

log = logging.getLogger(__name__)

IMAGE_SUFFIX, SIDECAR_SUFFIX = ".jpg", ".json"


def frame_stem(camera: str, captured_at: float, frame_id: int) -> str:
    """``door.20261201T101500.123456Z-42``: sorts by time, names its camera and frame."""
    stamp = datetime.fromtimestamp(captured_at, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{camera}.{stamp}-{frame_id}"


class FrameStore:
    """One camera's pairs in ``directory``, oldest first; not thread-safe (one writer)."""

    def __init__(self, directory: Path, camera: str, max_files: int, max_mb: float) -> None:
        self.directory = directory
        self.prefix = f"{camera}."
        self.max_files = max_files
        self.max_bytes = max_mb * 1e6
        self.pruned = 0
        self.bytes = 0
        self._pairs: collections.deque[tuple[str, int]] | None = None  # (stem, bytes)

    @property
    def count(self) -> int:
        return len(self._pairs) if self._pairs is not None else 0

    def save(self, stem: str, jpeg: bytes, sidecar: bytes) -> Path:
        """Write one pair (picture first) and prune; OSError when it cannot be written (then
        nothing of it is left behind). Returns the picture's path."""
        self.load()
        assert self._pairs is not None
        image = self.directory / (stem + IMAGE_SUFFIX)
        write_whole(image, jpeg)
        try:
            write_whole(self.directory / (stem + SIDECAR_SUFFIX), sidecar)
        except OSError:
            image.unlink(missing_ok=True)
            raise
        self._pairs.append((stem, len(jpeg) + len(sidecar)))
        self.bytes += len(jpeg) + len(sidecar)
        self._prune()
        return image

    def load(self) -> None:
        """Take stock of the folder once (made if missing); OSError while it cannot be."""
        if self._pairs is None:
            self._pairs = self._existing()
            self.bytes = sum(size for _, size in self._pairs)
            self._prune()

    def _existing(self) -> collections.deque[tuple[str, int]]:
        """This camera's whole pairs already in the folder, oldest first; leftovers deleted."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sizes: dict[str, dict[str, int]] = {}
        for path in self.directory.iterdir():
            if not path.name.startswith(self.prefix) or not path.is_file():
                continue
            size = path.stat().st_size
            if path.name.endswith(PARTIAL) or size == 0:
                self._delete(path, "left unfinished")
            elif path.suffix in (IMAGE_SUFFIX, SIDECAR_SUFFIX):
                sizes.setdefault(path.stem, {})[path.suffix] = size
        pairs = []
        for stem, parts in sorted(sizes.items()):
            if len(parts) == 2:
                pairs.append((stem, sum(parts.values())))
            else:  # a picture without its sidecar, or the reverse: never a whole pair
                for suffix in parts:
                    self._delete(self.directory / (stem + suffix), "half of a pair")
        return collections.deque(pairs)

    def _delete(self, path: Path, why: str) -> None:
        path.unlink(missing_ok=True)
        log.info("collect: deleted %s (%s)", path, why)

    def _prune(self) -> None:
        assert self._pairs is not None
        # The newest pair stays even when it alone is over the size bound.
        while len(self._pairs) > self.max_files or (
            self.bytes > self.max_bytes and len(self._pairs) > 1
        ):
            stem, size = self._pairs.popleft()
            # A pair moved away by `kestrel label` meanwhile is gone already: nothing to do.
            for suffix in (IMAGE_SUFFIX, SIDECAR_SUFFIX):
                (self.directory / (stem + suffix)).unlink(missing_ok=True)
            self.bytes -= size
            self.pruned += 1
