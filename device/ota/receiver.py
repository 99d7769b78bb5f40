"""Assembles pushed chunks into an archive file, refusing what does not add up.

Chunks are written to ``state_dir/models/.incoming/<request>.tar`` as they arrive (a 64 MiB
bundle never sits in memory) and hashed on the way. A transfer is refused, its partial file
deleted, and nothing else touched when: its first chunk announces more than ``max_bytes``; a
chunk's bytes do not match its hash; a chunk arrives out of order (one is missing); the bytes
add up to more or less than announced, or to another sha256; a chunk's header disagrees with
the first one's; nothing arrived for ``timeout`` seconds (chunks missing at the end); or the
disk refuses the write. A chunk repeated by QoS 1 is ignored. Not thread-safe: one caller (the
MQTT network thread) feeds it; :meth:`Receiver.expire` is called from the same lock.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from device.ota.protocol import Chunk, Message, ProtocolError, Rollback, decode

MIB = 1 << 20
MAX_TRANSFERS = 4  # concurrent ones (a device push and a group push may overlap)


@dataclass
class Refused(Exception):
    """A message or transfer that was refused; ``request`` is None when unreadable."""

    reason: str
    request: str | None = None
    name: str = ""
    sha256: str = ""
    camera: str | None = None

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Started:
    """The first chunk of a transfer arrived (the device reports ``receiving``)."""

    chunk: Chunk


@dataclass(frozen=True)
class Received:
    """A whole archive, its size and sha256 checked, in ``path``."""

    chunk: Chunk  # the first one: name, sha256, camera, signature
    path: Path


@dataclass
class _Transfer:
    first: Chunk
    path: Path
    file: IO[bytes]
    digest: Any = field(default_factory=hashlib.sha256)
    next_index: int = 0
    received: int = 0
    last_chunk_sha256: str = ""
    last_seen: float = 0.0


class Receiver:
    """See the module docstring. ``feed`` returns what happened, or raises :class:`Refused`."""

    def __init__(self, incoming: Path, max_bytes: int, timeout: float) -> None:
        self.incoming = incoming
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._transfers: dict[str, _Transfer] = {}
        self._dropped: collections.deque[str] = collections.deque(maxlen=64)

    def feed(
        self, payload: bytes, now: float | None = None
    ) -> Started | Received | Rollback | None:
        now = time.monotonic() if now is None else now
        try:
            header, data = decode(payload)
        except ProtocolError as exc:
            raise Refused(str(exc)) from None
        if isinstance(header, Rollback):
            return header
        if header.request in self._dropped:
            return None  # the rest of a transfer already refused: said once
        transfer = self._transfers.get(header.request)
        if transfer is None:
            transfer = self._start(header, now)
        elif not self._fits(transfer, header):
            return None  # a repeat of the latest chunk (QoS 1 re-delivery)
        self._append(transfer, header, data, now)
        if header.index < header.count - 1:
            return Started(header) if header.index == 0 else None
        return self._finish(transfer)

    def expire(self, now: float | None = None) -> list[Refused]:
        """Drop transfers that got nothing for ``timeout`` seconds; returns why each went."""
        now = time.monotonic() if now is None else now
        refused = []
        for transfer in list(self._transfers.values()):
            if now - transfer.last_seen > self.timeout:
                first = transfer.first
                refused.append(
                    self._drop(
                        transfer,
                        f"transfer stalled: {transfer.next_index} of {first.count} chunks "
                        f"received, nothing for {self.timeout:g} s (chunks missing)",
                    )
                )
        return refused

    def close(self) -> None:
        for transfer in list(self._transfers.values()):
            self._discard(transfer)

    # ------------------------------------------------------------------ steps

    def _refuse(self, chunk: Chunk, reason: str) -> Refused:
        self._dropped.append(chunk.request)
        return Refused(reason, chunk.request, chunk.name, chunk.sha256, chunk.camera)

    def _start(self, chunk: Chunk, now: float) -> _Transfer:
        if chunk.index != 0:
            raise self._refuse(
                chunk,
                f"chunk {chunk.index} of {chunk.count} arrived first: chunks 0 to "
                f"{chunk.index - 1} are missing (out of order or lost)",
            )
        if chunk.size > self.max_bytes:
            raise self._refuse(
                chunk,
                f"the bundle is {chunk.size / MIB:.1f} MiB, over ota.max_mb "
                f"({self.max_bytes / MIB:g} MiB)",
            )
        while len(self._transfers) >= MAX_TRANSFERS:
            oldest = min(self._transfers.values(), key=lambda t: t.last_seen)
            self._drop(oldest, "dropped for a newer transfer")
        path = self.incoming / f"{chunk.request}.tar"
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            file = path.open("xb")
        except OSError as exc:
            raise self._refuse(chunk, f"cannot store the bundle: {exc}") from None
        transfer = _Transfer(chunk, path, file, last_seen=now)
        self._transfers[chunk.request] = transfer
        return transfer

    def _fits(self, transfer: _Transfer, chunk: Chunk) -> bool:
        """False for a repeat of the latest chunk; raises for one that does not belong."""
        first = transfer.first
        same = (chunk.count, chunk.size, chunk.sha256, chunk.name, chunk.camera)
        if same != (first.count, first.size, first.sha256, first.name, first.camera):
            raise self._drop(transfer, f"chunk {chunk.index} disagrees with chunk 0's header")
        if chunk.index == transfer.next_index - 1 and (
            chunk.chunk_sha256 == transfer.last_chunk_sha256
        ):
            return False
        if chunk.index != transfer.next_index:
            raise self._drop(
                transfer,
                f"chunk {chunk.index} of {chunk.count} arrived after chunk "
                f"{transfer.next_index - 1}: chunks out of order or missing",
            )
        return True

    def _append(self, transfer: _Transfer, chunk: Chunk, data: bytes, now: float) -> None:
        if hashlib.sha256(data).hexdigest() != chunk.chunk_sha256:
            raise self._drop(transfer, f"chunk {chunk.index}: sha256 mismatch (damaged on the way)")
        if transfer.received + len(data) > chunk.size:
            raise self._drop(transfer, f"more bytes than the {chunk.size} announced")
        try:
            transfer.file.write(data)
        except OSError as exc:
            raise self._drop(transfer, f"cannot store the bundle: {exc}") from None
        transfer.digest.update(data)
        transfer.received += len(data)
        transfer.next_index = chunk.index + 1
        transfer.last_chunk_sha256 = chunk.chunk_sha256
        transfer.last_seen = now

    def _finish(self, transfer: _Transfer) -> Received:
        first = transfer.first
        try:
            transfer.file.close()
        except OSError as exc:  # the last buffered write can fail here (a full disk)
            raise self._drop(transfer, f"cannot store the bundle: {exc}") from None
        if transfer.received != first.size:
            raise self._drop(
                transfer, f"got {transfer.received} bytes, {first.size} announced (truncated)"
            )
        actual = transfer.digest.hexdigest()
        if actual != first.sha256:
            raise self._drop(
                transfer, f"archive sha256 mismatch: announced {first.sha256}, got {actual}"
            )
        del self._transfers[first.request]
        return Received(first, transfer.path)

    def _drop(self, transfer: _Transfer, reason: str) -> Refused:
        self._discard(transfer)
        return self._refuse(transfer.first, reason)

    def _discard(self, transfer: _Transfer) -> None:
        self._transfers.pop(transfer.first.request, None)
        with contextlib.suppress(OSError):
            transfer.file.close()
        with contextlib.suppress(OSError):
            transfer.path.unlink(missing_ok=True)


__all__ = ["Message", "Received", "Receiver", "Refused", "Started"]
