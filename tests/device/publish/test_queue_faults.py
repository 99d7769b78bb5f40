"""The on-disk queue under the faults met in the field (issue 9): a file shared by two
processes, a state_dir rolled back by a power cut, a full disk, a corrupt file.

The invariant every test checks: each message put is in the file, counted in ``dropped``, or
was removed after delivery; ``len()`` is the number of rows an independent reader counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from device.publish.outbox import Outbox
from device.publish.spool import Spool, SpoolFull


def rows(path: Path) -> int:
    """The messages in the file, counted by another connection."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]


def payloads(spool: Spool) -> list[bytes]:
    return [m.payload for m in spool.peek(100_000)]


# --------------------------------------------------------------------------- counts


def test_counts_come_from_the_file_even_when_another_process_shares_it(tmp_path):
    """Two daemons once shared one file: one's in-memory count went negative and len() raised
    ValueError in the stats thread. Counts are the file's rows, whoever changed them."""
    path = tmp_path / "q.sqlite3"
    mine, other = Spool(path, 100), Spool(path, 100)
    for i in range(3):
        mine.put("t", str(i).encode(), 1, False)
    other.remove(m.id for m in other.peek(10))  # the other one sent and deleted them
    other.put("u", b"x", 1, False)
    assert len(mine) == len(other) == rows(path) == 1
    mine.remove(m.id for m in mine.peek(10))
    assert len(other) == len(mine) == rows(path) == 0
    mine.close()
    assert len(mine) == 0  # closed: the last count, no exception
    other.close()


# --------------------------------------------------------------------------- seq


def _event_seqs(state_dir: Path, count: int) -> list[int]:
    """One run of the publisher's outbox: ``count`` events, the seq each got."""
    outbox = Outbox(state_dir, 1000)
    first = len(outbox._spool.peek(100_000))
    for i in range(count):
        outbox.put_json("kestrel/barn/door/event", {"type": "change", "i": i}, 1, False)
    got = [json.loads(m.payload)["seq"] for m in outbox._spool.peek(100_000)[first:]]
    outbox.close()
    return got


def test_seq_is_not_reused_after_the_state_dir_is_rolled_back(tmp_path):
    """A power cut restored an older copy of state_dir: seq 2, 3, 4 were given again to
    other events, which consumers that deduplicate by seq dropped."""
    state_dir, backup = tmp_path / "state", tmp_path / "backup"
    given = _event_seqs(state_dir, 3)
    shutil.copytree(state_dir, backup)  # the copy the power cut will bring back
    given += _event_seqs(state_dir, 3)
    shutil.rmtree(state_dir)
    shutil.copytree(backup, state_dir)
    after = _event_seqs(state_dir, 3)
    assert not set(after) & set(given), (given, after)
    assert given + after == sorted(given + after)  # increasing within and across runs
    assert after == list(range(after[0], after[0] + 3))  # consecutive within a run
    shutil.rmtree(state_dir)  # even a queue file lost entirely
    assert min(_event_seqs(state_dir, 1)) > max(after)


# --------------------------------------------------------------------------- disk full


def _cap_pages(spool: Spool, extra: int) -> None:
    """A full disk for this file: at most ``extra`` more pages (sqlite's max_page_count)."""
    db = spool._db
    assert db is not None
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages + extra}")


def test_a_full_disk_drops_the_oldest_counts_them_and_recovers(tmp_path):
    """Disk full: new messages were lost instead of the oldest, queued=23 with 3 rows,
    dropped=0; after space returned the queue was trimmed below its bound."""
    path, bound = tmp_path / "q.sqlite3", 200
    spool = Spool(path, bound)
    put = 0
    for _ in range(20):
        spool.put("t", f"{put:05d}".encode() + b"x" * 300, 1, False)
        put += 1
    _cap_pages(spool, 2)
    for _ in range(300):  # far more than fits
        spool.put("t", f"{put:05d}".encode() + b"x" * 300, 1, False)  # never raises
        put += 1
        assert len(spool) == rows(path)
        assert len(spool) + spool.dropped == put
    kept = [int(p[:5]) for p in payloads(spool)]
    assert kept == list(range(put - len(kept), put))  # the newest kept, the oldest dropped
    assert 0 < len(kept) < 60 and spool.dropped == put - len(kept)
    print(f"disk full: {put} put, {rows(path)} rows, queued={len(spool)}, dropped={spool.dropped}")

    _cap_pages(spool, 100_000)  # space is back
    for _ in range(2 * bound):
        spool.put("t", f"{put:05d}".encode() + b"x" * 300, 1, False)
        put += 1
    assert len(spool) == rows(path) == bound  # full again, not trimmed below its bound
    assert spool.dropped == put - bound
    spool.close()
    again = Spool(path, bound)  # the count of drops is in the file
    assert len(again) == bound and again.dropped == put - bound
    again.close()


def test_a_message_that_cannot_fit_at_all_is_counted(tmp_path):
    """Not even one row fits and there is nothing older to drop: the message is lost, but
    counted, and the error names the file."""
    path = tmp_path / "q.sqlite3"
    spool = Spool(path, 10)
    _cap_pages(spool, 0)
    with pytest.raises(SpoolFull, match=r"q\.sqlite3.*disk full"):
        spool.put("t", b"x" * 20_000, 1, False)  # larger than the free space of any page
    assert len(spool) == rows(path) == 0 and spool.dropped == 1
    _cap_pages(spool, 100)
    spool.put("t", b"y", 1, False)
    assert len(spool) == 1 and spool.dropped == 1
    spool.close()
    assert Spool(path, 10).dropped == 1  # saved with the next write


PROBE = Path(__file__).with_name("full_disk_probe.py")
REPO = Path(__file__).resolve().parents[3]


def test_a_real_full_filesystem_keeps_the_counts_true(tmp_path):
    """The same on a real filesystem that fills up (an 8 MB tmpfs in a private mount
    namespace, so nothing outlives the probe): there the COMMIT fails, and without the reserve
    not even a delete could be written (every new message was lost, delivered ones stayed)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    script = f"mount -t tmpfs -o size=8m tmpfs {mount} && exec {sys.executable} {PROBE} {mount}"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    if "mount:" in probe.stderr or "unshare:" in probe.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()}")
    assert probe.returncode == 0, probe.stderr
    stages = [json.loads(line) for line in probe.stdout.splitlines()]
    print(*stages, sep="\n")
    for stage in stages:
        assert stage["len"] == stage["rows"], stage
        assert stage["rows"] + stage["dropped"] + stage["deleted"] == stage["put"], stage
    full, cycling, freed, refilled, reopened = stages[1:]
    # The reserve given up: new messages kept, delivered ones deleted, on a full disk.
    assert full["errors"] == 0 and full["undeleted"] == 0 and full["deleted"] == 100
    # Beyond the reserve's room: the disk, not the bound, limits the rows; the oldest go,
    # counted, and every new message is kept.
    assert cycling["errors"] == 0 and cycling["dropped"] > 0 and not cycling["reserve"]
    assert cycling["rows"] < cycling["bound"]
    assert freed["undeleted"] == 0 and freed["deleted"] == 100
    assert refilled["errors"] == 0 and refilled["rows"] == refilled["bound"]
    assert refilled["reserve"]  # allocated again once the disk had room
    assert reopened["resent_acknowledged"] == 0  # not sent again at the next start
