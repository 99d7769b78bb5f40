"""A bounded on-disk queue of outgoing MQTT messages (sqlite3, WAL).

The MQTT publisher puts every state and event here first and deletes a message only when the
broker has acknowledged it, so messages produced while the broker is away (or in flight when
the connection dies, or when the daemon is killed) are delivered later, in order.

- One sqlite file under the state directory; WAL with ``synchronous=NORMAL``: a commit is a
  write to the WAL in the OS cache (no fsync), a few tens of microseconds, so a ``put`` never
  waits on the disk in practice. A killed process loses nothing; a power cut may lose the last
  commits but never corrupts the file.
- Bounded: beyond ``max_messages`` the OLDEST messages are dropped, and counted (``dropped``,
  persisted) so the loss is visible in the stats. A full disk drops the oldest too, as many as
  the new message needs, and counts them the same way.
- Counts are read from the file, never kept alongside it: the row count is kept by triggers
  in the same transactions (see :mod:`device.publish.queue_file`), ``dropped`` in ``meta``.
- ``seq`` numbers (:meth:`Spool.put_sequenced`) are unique even when the file is rolled back to
  an older copy or replaced (power cut, restored backup, corrupt file): the first number of a
  key in each run is at least the wall clock in microseconds (a 16-digit integer, exact in
  JSON and JavaScript until the year 2255), later ones count up by one. A put takes longer
  than a microsecond, so the counter never overtakes the clock and a restart, even onto a
  rolled-back file, starts above every number given before (unless the clock went back).
- A full disk cannot stop the queue from dropping its oldest: a 1 MiB reserve file beside it
  is given up at the first "disk full" (see :mod:`device.publish.reserve`).
- A corrupt file (garbage, truncated) is moved aside (``<name>.corrupt-<UTC time>``, kept for
  inspection) and a fresh queue started: :attr:`Spool.reset` says so.
- Thread-safe: one connection behind one lock (the inference side puts, the sender peeks and
  removes).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from device.publish.queue_file import CorruptFile, Transaction, is_full, move_aside, open_queue
from device.publish.reserve import DiskReserve

log = logging.getLogger(__name__)

_MAX_PARAMS = 500  # sqlite's bound on host parameters is 999 on old builds


class SpooledMessage(NamedTuple):
    """One queued message; ``id`` grows with every put (oldest first)."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class SpoolFull(OSError):
    """The disk is full and no older message could be dropped to make room for a new one."""


class Spool:
    """Bounded, persistent FIFO of MQTT messages. See the module docstring."""

    def __init__(self, path: Path, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        self.path = Path(path).absolute()  # logs name the file wherever the daemon runs
        self.max_messages = int(max_messages)
        self.reset: str | None = None  # what happened to a corrupt file, once per open
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._rebased: set[str] = set()  # seq keys already lifted to the clock in this run
        self._undeleted: set[int] = set()  # acknowledged, but the delete did not commit yet
        self._unsaved_drops = 0  # dropped while nothing could be written, not in meta yet
        self._last_len = self._last_dropped = 0  # answers once closed
        try:
            self._db = open_queue(self.path)
        except CorruptFile as exc:
            self.reset = move_aside(self.path, str(exc))
            try:
                self._db = open_queue(self.path)
            except CorruptFile as again:  # a fresh file cannot be corrupt: the disk is failing
                raise OSError(f"{self.path}: cannot start a fresh queue ({again})") from None
        self._reserve = DiskReserve(self.path.with_name(self.path.name + ".reserve"))
        # A smaller bound than last time: trim now rather than at the next put.
        try:
            with self._lock, self._transaction():
                self._trim()
        except sqlite3.Error as exc:  # a full disk: the next put trims
            log.warning("%s: cannot trim the message queue now: %s", self.path, exc)

    # -- queue ---------------------------------------------------------------------------

    def put(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Append a message and return its id; beyond the bound the oldest are dropped."""
        data = bytes(payload)
        return self._append(topic, lambda _seq: data, qos, retain, None)[0]

    def put_sequenced(
        self, topic: str, build: Callable[[int], bytes], qos: int, retain: bool, key: str
    ) -> tuple[int, int]:
        """Append ``build(seq)`` where ``seq`` is the next value of the persistent counter
        ``key``, in the same transaction: a crash never skips or repeats a number. The first
        ``seq`` of a key in a run is at least the wall clock in µs (see the module docstring).
        Returns ``(id, seq)``."""
        spool_id, seq = self._append(topic, build, qos, retain, key)
        assert seq is not None
        return spool_id, seq

    def peek(self, limit: int, after: int = 0) -> list[SpooledMessage]:
        """Up to ``limit`` messages with an id above ``after``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? "
                    "ORDER BY id LIMIT ?",
                    (after, limit),
                )
                .fetchall()
            )
        return [SpooledMessage(i, t, bytes(p), q, bool(r)) for i, t, p, q, r in rows]

    def remove(self, ids: Iterable[int]) -> None:
        """Delete messages (acknowledged by the broker); unknown ids are ignored. When the
        delete cannot be written (disk full) the ids are kept and deleted by a later write:
        the next ``remove`` (even an empty one) or ``put``."""
        with self._lock:
            self._undeleted.update(ids)
            if not self._undeleted:
                return
            for attempt in range(2):  # again after a checkpoint, with the reserve given up
                try:
                    with self._transaction():
                        done = self._delete_undeleted()
                except sqlite3.Error as exc:
                    if is_full(exc) and attempt == 0:
                        self._checkpoint()
                        self._reserve.release()
                        continue
                    log.debug("%s: cannot delete delivered messages yet: %s", self.path, exc)
                    return
                self._undeleted -= done
                self._reserve.restore()
                return

    def __len__(self) -> int:
        """Rows in the file; never raises (the last known count once closed or unreadable)."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error, RuntimeError):
                self._last_len = self._get_meta("rows")
            return self._last_len

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue or the disk was full, over the life of the file."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error, RuntimeError):
                self._last_dropped = self._get_meta("dropped")
            return self._last_dropped + self._unsaved_drops

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):  # what len() says once closed
                    self._last_len = self._get_meta("rows")
                    self._last_dropped = self._get_meta("dropped")
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, max {self.max_messages} messages)"

    # -- internals (called with the lock held) -------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.path}: the message queue is closed")
        return self._db

    def _transaction(self) -> Transaction:
        return Transaction(self._connection())

    def _append(
        self, topic: str, build: Callable[[int], bytes], qos: int, retain: bool, key: str | None
    ) -> tuple[int, int | None]:
        """One insert. On a full disk: checkpoint the WAL (its file is then reused from the
        start instead of growing), then drop the oldest (1, 2, 4, ... rows) until it fits."""
        batch, reserve_tried = 0, False
        with self._lock:
            while True:
                try:
                    return self._insert(topic, build, qos, retain, key)
                except sqlite3.OperationalError as exc:
                    if not is_full(exc):
                        raise
                    self._checkpoint()
                    if not reserve_tried and self._reserve.release():
                        reserve_tried = True
                        continue  # room for the deletes that make room (reserve.py)
                    if batch and not self._make_room(batch):
                        self._unsaved_drops += 1  # this message: lost, and said so
                        raise SpoolFull(
                            errno.ENOSPC,
                            f"{self.path}: disk full and no older message left to drop; "
                            f"message for {topic} dropped",
                        ) from exc
                    batch = batch * 2 or 1

    def _insert(
        self, topic: str, build: Callable[[int], bytes], qos: int, retain: bool, key: str | None
    ) -> tuple[int, int | None]:
        seq = None
        with self._transaction():
            done = self._delete_undeleted()
            unsaved = self._save_drops()
            if key is not None:
                seq = self._get_meta(f"seq:{key}") + 1
                if key not in self._rebased:
                    seq = max(seq, time.time_ns() // 1_000)
                self._set_meta(f"seq:{key}", seq)
            payload = bytes(build(seq if seq is not None else 0))
            if self._reserve.released:
                self._reserve.restore()  # the disk may have room again
            if self._reserve.released:
                self._take_room_from_oldest(len(payload))
            cur = self._connection().execute(
                "INSERT INTO messages (topic, payload, qos, retain, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (topic, payload, int(qos), int(bool(retain)), time.time()),
            )
            self._trim()
        # Committed: only now may the in-memory notes forget what the file holds.
        self._undeleted -= done
        self._unsaved_drops -= unsaved
        if key is not None:
            self._rebased.add(key)
        return int(cur.lastrowid or 0), seq

    def _checkpoint(self) -> None:
        try:
            self._connection().execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except sqlite3.Error as exc:
            log.debug("%s: WAL checkpoint failed: %s", self.path, exc)

    def _make_room(self, batch: int) -> int:
        """Drop the ``batch`` oldest messages (delivered ones go first, uncounted); returns
        how many rows went, 0 when none could."""
        try:
            with self._transaction():
                done = self._delete_undeleted()
                cur = self._connection().execute(
                    "DELETE FROM messages WHERE id IN "
                    "(SELECT id FROM messages ORDER BY id LIMIT ?)",
                    (batch,),
                )
                self._add_dropped(cur.rowcount)
        except sqlite3.Error as exc:
            log.debug("%s: cannot make room: %s", self.path, exc)
            return 0
        self._undeleted -= done
        if cur.rowcount:
            log.warning(
                "%s: disk full; dropped the %d oldest queued message(s)", self.path, cur.rowcount
            )
        return len(done) + cur.rowcount

    def _take_room_from_oldest(self, size: int) -> None:
        """Free pages for ``size`` bytes by dropping the oldest rows (counted), so the file
        does not grow on a disk that has just been full (see reserve.py)."""
        db = self._connection()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        need = size // page_size + 2  # the row's pages, and one for the index and meta
        while db.execute("PRAGMA freelist_count").fetchone()[0] < need:
            cur = db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT 8)"
            )
            if not cur.rowcount:
                return
            self._add_dropped(cur.rowcount)

    def _trim(self) -> None:
        excess = self._get_meta("rows") - self.max_messages
        if excess > 0:
            cur = self._connection().execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
                (excess,),
            )
            self._add_dropped(cur.rowcount)

    def _delete_undeleted(self) -> set[int]:
        """Delete the rows of delivered messages whose delete failed before; returns them."""
        ids = sorted(self._undeleted)
        for start in range(0, len(ids), _MAX_PARAMS):
            chunk = ids[start : start + _MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            self._connection().execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
        return set(ids)

    def _save_drops(self) -> int:
        """Add the drops counted while nothing could be written; returns how many."""
        unsaved = self._unsaved_drops
        self._add_dropped(unsaved)
        return unsaved

    def _add_dropped(self, count: int) -> None:
        if count > 0:
            self._set_meta("dropped", self._get_meta("dropped") + count)

    def _get_meta(self, key: str) -> int:
        row = self._connection().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._connection().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, int(value)),
        )
