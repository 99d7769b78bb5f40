"""The per-frame cost of running the interpreter in a child process (the Edge TPU's way:
shared-memory tensors, one-byte go/done signals on a socket) instead of in this process.

The same model (the shipped bundle) on the CPU both ways: ``Classifier(accelerator="cpu")``
and ``Classifier(accelerator="cpu-in-child")``, whose child is the Edge TPU's code path with
the delegate left out. Rounds alternate between the two in one run (the machine is shared and
noisy); each round times ``Classifier.infer`` (input in, invoke, output out) on real photos,
prepared once. The hop is the difference of the medians; the target is <= 0.3 ms per frame.
The hop alone is also measured directly: ``infer`` minus the child's own time (it sends it back
with each "done"), which two interpreters' differing cache and thread-pool states do not blur.

Run by hand: ``python bench/edgetpu_hop.py [--rounds 10] [--frames 200] [--threads N]``.
Prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from device.paths import DEFAULT_MODEL, SAMPLES_DIR

PHOTOS = ("cat-chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
TARGET_MS = 0.3


def per_frame_ms(
    classifier: Classifier, tensors: list[np.ndarray], frames: int, hops: list[float]
) -> list[float]:
    """Milliseconds of each ``infer`` call; in the child, also the hop alone (``infer`` minus
    the child's own time for tensors + invoke) into ``hops``."""
    samples = []
    process = classifier.accelerator_process
    for i in range(frames):
        tensor = tensors[i % len(tensors)]
        started = time.perf_counter_ns()
        classifier.infer(tensor)
        samples.append((time.perf_counter_ns() - started) / 1e6)
        if process is not None:
            hops.append(samples[-1] - process.last_invoke_ms)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--frames", type=int, default=200, help="frames per round and mode")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads")
    args = parser.parse_args()

    here = Classifier(DEFAULT_MODEL, accelerator="cpu", threads=args.threads)
    child = Classifier(DEFAULT_MODEL, accelerator="cpu-in-child", threads=args.threads)
    assert child.accelerator == "cpu-in-child", child.fallback_reason
    tensors = [here.preprocess(read_image(str(SAMPLES_DIR / name))) for name in PHOTOS]
    for tensor in tensors:  # the same answers both ways, bit for bit
        assert np.array_equal(here.infer(tensor), child.infer(tensor))

    print(f"model {here.bundle.name}, {args.frames} frames per round and mode, infer() in ms")
    print(f"{'round':>5} {'in-process p50':>15} {'child p50':>10} {'hop p50':>8}")
    hops, all_here, all_child, direct = [], [], [], []
    for n in range(args.rounds):
        modes = [("here", here), ("child", child)]
        if n % 2:
            modes.reverse()  # alternate which goes first
        medians = {}
        for name, classifier in modes:
            samples = per_frame_ms(classifier, tensors, args.frames, direct)
            (all_here if name == "here" else all_child).extend(samples)
            medians[name] = statistics.median(samples)
        hops.append(medians["child"] - medians["here"])
        print(f"{n + 1:>5} {medians['here']:>15.3f} {medians['child']:>10.3f} {hops[-1]:>8.3f}")
    hop = statistics.median(hops)
    p90 = float(np.percentile(all_child, 90) - np.percentile(all_here, 90))
    print(
        f"\nin-process p50 {statistics.median(all_here):.3f} ms, in the child "
        f"{statistics.median(all_child):.3f} ms; hop per frame: median of rounds {hop:.3f} ms "
        f"(p90 difference {p90:.3f} ms); target <= {TARGET_MS} ms: "
        + ("ok" if hop <= TARGET_MS else "MISSED")
    )
    print(
        f"the hop alone (infer() minus the child's own tensors + invoke time): p50 "
        f"{statistics.median(direct):.3f} ms, p90 {np.percentile(direct, 90):.3f} ms"
    )
    child.close()


if __name__ == "__main__":
    main()
