"""The on-disk MQTT queue: order, bound, persistence, thread safety."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from device.publish.spool import Spool, SpooledMessage


def test_fifo_peek_after_and_remove(tmp_path):
    spool = Spool(tmp_path / "q.sqlite3", max_messages=100)
    ids = [spool.put(f"t/{i}", f"p{i}".encode(), i % 3, i % 2 == 0) for i in range(5)]
    assert ids == sorted(ids) and len(spool) == 5
    first = spool.peek(2)
    assert first == [
        SpooledMessage(ids[0], "t/0", b"p0", 0, True),
        SpooledMessage(ids[1], "t/1", b"p1", 1, False),
    ]
    assert [m.id for m in spool.peek(10, after=ids[2])] == ids[3:]
    spool.remove([ids[0], ids[2], 999999])  # unknown ids are ignored
    assert [m.topic for m in spool.peek(10)] == ["t/1", "t/3", "t/4"]
    assert len(spool) == 3 and spool.dropped == 0
    assert spool.peek(0) == []


def test_overflow_drops_the_oldest_and_counts(tmp_path):
    spool = Spool(tmp_path / "q.sqlite3", max_messages=10)
    for i in range(25):
        spool.put("t", str(i).encode(), 1, False)
    assert len(spool) == 10
    assert spool.dropped == 15
    assert [int(m.payload) for m in spool.peek(100)] == list(range(15, 25))


def test_persists_across_instances_and_a_smaller_bound_trims(tmp_path):
    path = tmp_path / "state" / "q.sqlite3"  # parent folders are created
    spool = Spool(path, max_messages=5)
    for i in range(7):
        spool.put("t", str(i).encode(), 1, True)
    spool.close()
    again = Spool(path, max_messages=5)
    assert len(again) == 5 and again.dropped == 2
    assert [int(m.payload) for m in again.peek(10)] == [2, 3, 4, 5, 6]
    assert all(m.retain and m.qos == 1 for m in again.peek(10))
    # New ids keep growing after a restart (AUTOINCREMENT), so order survives restarts.
    new_id = again.put("t", b"7", 1, True)
    assert new_id > again.peek(10)[-2].id
    again.close()
    smaller = Spool(path, max_messages=3)
    assert len(smaller) == 3 and smaller.dropped == 5
    smaller.close()


def test_sequence_numbers_are_per_key_and_persistent(tmp_path):
    """Within a run a key counts up by one from at least the clock in µs; a restart goes on
    above the last number (see test_queue_faults for a rolled-back file)."""
    path = tmp_path / "q.sqlite3"
    spool = Spool(path, max_messages=100)
    before_us = time.time_ns() // 1_000
    got = [spool.put_sequenced("a", lambda s: f"a{s}".encode(), 1, False, "a") for _ in range(3)]
    first = got[0][1]
    assert first >= before_us and [seq for _, seq in got] == [first, first + 1, first + 2]
    b_seq = spool.put_sequenced("b", lambda s: f"b{s}".encode(), 1, False, "b")[1]
    assert b_seq >= before_us
    spool.close()
    spool = Spool(path, max_messages=100)
    _, seq = spool.put_sequenced("a", lambda s: f"a{s}".encode(), 1, False, "a")
    assert seq > first + 2
    payloads = [m.payload for m in spool.peek(10)]
    assert payloads == [f"a{first + i}".encode() for i in range(3)] + [
        f"b{b_seq}".encode(),
        f"a{seq}".encode(),
    ]
    spool.close()


def test_a_failing_build_leaves_no_trace(tmp_path):
    spool = Spool(tmp_path / "q.sqlite3", max_messages=100)
    spool.put("t", b"x", 1, False)

    def boom(seq: int) -> bytes:
        raise ValueError("cannot encode")

    with pytest.raises(ValueError, match="cannot encode"):
        spool.put_sequenced("t", boom, 1, False, "t")
    assert len(spool) == 1
    _, seq = spool.put_sequenced("t", lambda s: str(s).encode(), 1, False, "t")
    assert spool.put_sequenced("t", lambda s: str(s).encode(), 1, False, "t")[1] == seq + 1
    assert [m.payload for m in spool.peek(10)] == [b"x", str(seq).encode(), str(seq + 1).encode()]


def test_survives_a_killed_process(tmp_path):
    """Rows committed by a process that is then SIGKILLed are there at the next start."""
    path = tmp_path / "q.sqlite3"
    code = (
        "import os, signal, sys\n"
        "from device.publish.spool import Spool\n"
        f"s = Spool({str(path)!r}, 100)\n"
        "for i in range(20): s.put('t', str(i).encode(), 1, False)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    spool = Spool(path, max_messages=100)
    assert [int(m.payload) for m in spool.peek(100)] == list(range(20))


def test_concurrent_puts_and_removes(tmp_path):
    spool = Spool(tmp_path / "q.sqlite3", max_messages=10_000)
    per_thread, threads = 200, 4

    def produce(n: int) -> None:
        for i in range(per_thread):
            spool.put(f"t/{n}", str(i).encode(), 1, False)

    workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    removed = 0
    while any(w.is_alive() for w in workers) or len(spool):
        batch = spool.peek(50)
        spool.remove(m.id for m in batch)
        removed += len(batch)
    for w in workers:
        w.join()
    assert removed == per_thread * threads and len(spool) == 0


def test_bad_bound_and_closed_spool(tmp_path):
    with pytest.raises(ValueError, match="max_messages"):
        Spool(tmp_path / "q.sqlite3", 0)
    spool = Spool(tmp_path / "q.sqlite3", 5)
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        spool.put("t", b"x", 1, False)


def test_a_folder_in_place_of_the_file_is_an_oserror(tmp_path):
    """Not corrupt, unusable: nothing to move aside, the caller reports it."""
    path = tmp_path / "q.sqlite3"
    path.mkdir()
    with pytest.raises(OSError, match=r"q\.sqlite3"):
        Spool(path, 5)
