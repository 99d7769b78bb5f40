"""The sqlite file under :class:`~device.publish.spool.Spool`: opening it (WAL, the schema,
an integrity check), moving a corrupt one aside, and transactions that also roll back when the
COMMIT itself fails (a full disk fails there, in WAL mode).

The row count lives in the file too, kept by triggers in the same transaction as the insert or
delete it counts: exact whichever connection (or process) changed the rows, and O(1) to read
where ``SELECT COUNT(*)`` walks the whole table (0.6 ms at 10 000 rows on a desktop CPU).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
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
CREATE TRIGGER IF NOT EXISTS rows_inserted AFTER INSERT ON messages BEGIN
    UPDATE meta SET value = value + 1 WHERE key = 'rows';
END;
CREATE TRIGGER IF NOT EXISTS rows_deleted AFTER DELETE ON messages BEGIN
    UPDATE meta SET value = value - 1 WHERE key = 'rows';
END;
"""
# Recount at every open: a file written by a version without the triggers is healed.
RECOUNT = (
    "INSERT INTO meta (key, value) VALUES ('rows', (SELECT COUNT(*) FROM messages)) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class CorruptFile(Exception):
    """The file is not a usable sqlite database (garbage, truncated); the text says why."""


def is_full(exc: sqlite3.Error) -> bool:
    """The disk (or the file's page limit) is full."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


def open_queue(path: Path) -> sqlite3.Connection:
    """The connection, schema in place; CorruptFile for a damaged file, OSError otherwise."""
    db = None
    try:
        # isolation_level=None: explicit BEGIN/COMMIT, so each put is one short transaction.
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A WAL of at most ~1 MB (256 pages) before it is folded back: less disk held by it.
        db.execute("PRAGMA wal_autocheckpoint=256")
        db.executescript(SCHEMA)
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise CorruptFile("; ".join(map(str, problems[:3])))
        try:
            db.execute(RECOUNT)
        except sqlite3.OperationalError as exc:  # a full disk must not stop the daemon
            if not is_full(exc):
                raise
            log.warning("%s: cannot recount the queue now (%s)", path, exc)
        return db
    except (sqlite3.DatabaseError, CorruptFile) as exc:
        if db is not None:
            db.close()
        if isinstance(exc, CorruptFile):
            raise
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPT:
            raise CorruptFile(str(exc)) from exc
        raise OSError(f"{path}: cannot open the message queue ({exc})") from exc


def move_aside(path: Path, why: str) -> str:
    """Rename a corrupt file (and its WAL) to ``<name>.corrupt-<UTC time>``, kept for
    inspection; log it and return the note the stats show."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        for suffix in ("-wal", "-shm", ""):  # the WAL belongs to the file it journals
            part = Path(f"{path}{suffix}")
            if part.exists():
                part.rename(f"{aside}{suffix}")
    except OSError as exc:
        raise OSError(f"{path}: corrupt ({why}) and cannot be moved aside: {exc}") from exc
    log.warning(
        "message queue %s is corrupt (%s): moved it to %s and started a fresh queue; "
        "its unsent messages are lost",
        path,
        why,
        aside,
    )
    return f"{path} was corrupt ({why}); moved to {aside}"


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ROLLBACK when the body or the COMMIT itself fails,
    so the connection never stays inside a half-done transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise
            return
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the original error is the one worth raising
                log.debug("ROLLBACK failed: %s", exc)
