"""Run by test_queue_faults.py inside a private mount namespace: a Spool on a small tmpfs
(the folder given) that is filled up, then freed. Prints one JSON line per stage: what was
put, the rows an independent reader counts, len(), dropped, and what was deleted after
delivery. Not a test module (no ``test_`` prefix): it needs the tmpfs the test mounts."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path

from device.publish.spool import Spool

folder = Path(sys.argv[1])
path = folder / "q.sqlite3"
BOUND = 2500
state = {"put": 0, "errors": 0}
acked: list[int] = []


def put(spool: Spool, count: int, size: int = 300) -> int:
    errors = 0
    for _ in range(count):
        try:
            spool.put("t", f"{state['put']:06d}".encode() + b"x" * size, 1, False)
        except Exception:  # the old queue raised sqlite3 errors; the test reads the counts
            errors += 1
        state["put"] += 1
    return errors


def report(stage: str, spool: Spool, **extra: object) -> None:
    with sqlite3.connect(path) as db:
        ids = {i for (i,) in db.execute("SELECT id FROM messages")}
    try:
        length: object = len(spool)
    except Exception as exc:
        length = repr(exc)
    line = {
        "stage": stage,
        "put": state["put"],
        "rows": len(ids),
        "len": length,
        "dropped": spool.dropped,
        "deleted": sum(i not in ids for i in acked),
        "bound": BOUND,
    }
    print(json.dumps(line | extra), flush=True)


def spool_reserve_held(spool: Spool) -> bool:
    reserve = getattr(spool, "_reserve", None)  # the old queue had none
    return bool(reserve and reserve.held)


def fill_disk() -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for block in (1 << 16, 4096, 512, 1):
        try:
            while True:
                os.write(fd, b"\0" * block)
        except OSError:
            pass
    os.close(fd)
    return filler


spool = Spool(path, BOUND)
put(spool, 1500)  # the WAL has been checkpointed and reused a few times: a queue in service
report("prefill", spool)

filler = fill_disk()
lost = put(spool, 500)
acked = [m.id for m in spool.peek(100)]  # then the broker acknowledged the oldest 100
with contextlib.suppress(Exception):  # the old queue raised here
    spool.remove(acked)
undeleted = len(getattr(spool, "_undeleted", ()))
report("full", spool, errors=lost, lost_new=lost, undeleted=undeleted)
# Still full, 4.5 MB more than the released reserve holds: the queue cycles through its pages.
report("cycling", spool, errors=put(spool, 1500, 3000), reserve=spool_reserve_held(spool))

filler.unlink()  # space is back
with contextlib.suppress(Exception):
    spool.remove([])  # the sender's next round (it calls this every 0.25 s)
report("freed", spool, undeleted=len(getattr(spool, "_undeleted", ())))

report("refilled", spool, errors=put(spool, 2 * BOUND), reserve=spool_reserve_held(spool))
spool.close()

again = Spool(path, BOUND)
resent = {m.id for m in again.peek(100_000)} & set(acked)
report("reopened", again, resent_acknowledged=len(resent))
again.close()
