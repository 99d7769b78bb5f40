"""The cost of the on-disk MQTT queue's calls: ``put`` (on the inference thread) and ``len``
(the stats thread, the publisher's flush), on an empty queue and on one full at its bound.

Run by hand: ``python bench/spool_put.py [--bound 10000] [--puts 2000]``. Prints the median
and the 99th percentile in microseconds; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.publish.spool import Spool

PAYLOAD = b'{"camera": "door", "label": "cat", "labels": [], "seq": 1}' + b" " * 250


def timed(call: Callable[[], object], count: int) -> str:
    """Median / p99 of ``count`` calls, in microseconds."""
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    p99 = samples[int(0.99 * (len(samples) - 1))]
    return f"{statistics.median(samples):8.1f} / {p99:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bound", type=int, default=10_000)
    parser.add_argument("--puts", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        spool = Spool(Path(folder) / "q.sqlite3", args.bound)

        def put() -> None:
            spool.put("kestrel/barn/door/event", PAYLOAD, 1, False)

        def put_and_ack() -> None:  # broker connected: the queue stays near empty
            spool.remove([spool.put("kestrel/barn/door/event", PAYLOAD, 1, False)])

        print(f"bound {args.bound}, {args.puts} calls each, microseconds (median / p99)")
        print("put + remove, empty queue:", timed(put_and_ack, args.puts))
        print("len, empty queue:         ", timed(lambda: len(spool), args.puts))
        for _ in range(args.bound):
            put()
        print("put, queue at its bound:  ", timed(put, args.puts))
        print("len, queue at its bound:  ", timed(lambda: len(spool), args.puts))
        print(f"rows {len(spool)}, dropped {spool.dropped}")
        spool.close()


if __name__ == "__main__":
    main()
