"""A bounded on-disk queue of outgoing MQTT messages (sqlite3, WAL).

The MQTT publisher puts every state and event here first and deletes a message only when the
broker has acknowledged it, so messages produced while the broker is away (or in flight when
the connection dies, or when the daemon is killed) are delivered later, in order.

- One sqlite file under the state directory; WAL with ``synchronous=NORMAL``: a commit is a
  write to the WAL in the OS cache (no fsync), a few tens of microseconds, so a ``put`` never
  waits on the disk in practice. A killed process loses nothing; a power cut may lose the last
  commits but never corrupts the file.
- Bounded: beyond ``max_messages`` the OLDEST messages are dropped, and counted (``dropped``,
  persisted) so the loss is visible in the stats.
- Thread-safe: one connection behind one lock (the inference side puts, the sender peeks and
  removes).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SpooledMessage(NamedTuple):
    """One queued message; ``id`` grows with every put (oldest first)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Spool:
    """Bounded, persistent FIFO of MQTT messages. See the module docstring."""

    def __init__(self, path: Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = int(max_messages)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            # isolation_level=None: explicit BEGIN/COMMIT, so each put is one short transaction.
            self._db = sqlite3.connect(
                str(self.path), check_same_thread=False, isolation_level=None, timeout=5.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            (self._count,) = self._db.execute("SELECT COUNT(*) FROM messages").fetchone()
            self._dropped = self._get_meta("dropped")
        except sqlite3.DatabaseError as exc:
            raise OSError(f"{self.path}: cannot open the message queue ({exc})") from exc
        # A smaller bound than last time: trim now rather than at the next put.
        if self._count > self.max_messages:
            with self._lock, self._transaction():
                self._trim()

    # -- queue ---------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Append a message and return its id; beyond the bound the oldest are dropped."""
        with self._lock, self._transaction():
            return self._insert(topic, bytes(payload), qos, retain)

    def put_sequenced(
        self, topic: str, build: Callable[[int], bytes], qos: int, retain: bool, key: str
    ) -> tuple[int, int]:
        """Append ``build(seq)`` where ``seq`` is the next value of the persistent counter
        ``key`` (1, 2, ...), in the same transaction: a crash never skips or repeats a number.
        Returns ``(id, seq)``."""
        with self._lock, self._transaction():
            seq = self._get_meta(f"seq:{key}") + 1
            payload = build(seq)
            self._set_meta(f"seq:{key}", seq)
            return self._insert(topic, bytes(payload), qos, retain), seq

    def peek(self, limit: int, after: int = 0) -> list[SpooledMessage]:
        """Up to ``limit`` messages with an id above ``after``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [SpooledMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete messages (acknowledged by the broker); unknown ids are ignored."""
        ids = list(ids)
        if not ids:
            return
        with self._lock, self._transaction():
            for start in range(0, len(ids), 500):  # sqlite's bound on host parameters
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cur = self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                self._count -= cur.rowcount

    def __len__(self) -> int:
        with self._lock:
            return self._count

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full, over the life of the file."""
        with self._lock:
            return self._dropped

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, {self._count}/{self.max_messages} messages)"

    # -- internals (called with the lock held) -------------------------------------------

    def _transaction(self) -> _Transaction:
        if self._db is None:
            raise RuntimeError(f"{self.path}: the message queue is closed")
        return _Transaction(self)

    def _insert(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        cur = self._db.execute(
            "INSERT INTO messages (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
            (topic, payload, int(qos), int(bool(retain)), time.time()),
        )
        self._count += 1
        self._trim()
        return int(cur.lastrowid)

    def _trim(self) -> None:
        excess = self._count - self.max_messages
        if excess <= 0:
            return
        cur = self._db.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
            (excess,),
        )
        self._count -= cur.rowcount
        self._dropped += cur.rowcount
        self._set_meta("dropped", self._dropped)

    def _get_meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, int(value)),
        )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on error ``ROLLBACK`` and re-read the counts that
    were updated in memory ahead of the commit."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def __enter__(self) -> None:
        self._spool._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        spool = self._spool
        if exc_type is None:
            spool._db.execute("COMMIT")
            return
        spool._db.execute("ROLLBACK")
        (spool._count,) = spool._db.execute("SELECT COUNT(*) FROM messages").fetchone()
        spool._dropped = spool._get_meta("dropped")
