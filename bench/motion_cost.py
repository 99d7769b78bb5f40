"""The motion gate's cost per frame: ``small_gray`` + ``motion_fraction`` on a 640x480 frame
(the shipped rocket photo with sensor noise), BGR and YUV420 — the figures quoted in
device/run/motion.py.

Run by hand: ``python bench/motion_cost.py [--calls 200] [--rounds 5]``. Prints the best
round's mean in milliseconds (shared machines vary: the best round is the least disturbed);
nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.inference.frames import FrameFormat
from device.inference.preprocess import read_image
from device.paths import SAMPLES_DIR
from device.run.motion import motion_fraction, small_gray

SIZE = (640, 480)
NOISE_SIGMA = 3.0


def frames() -> dict[FrameFormat, np.ndarray]:
    scene = cv2.resize(read_image(str(SAMPLES_DIR / "rocket.jpg")), SIZE, cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    noisy = np.clip(scene + rng.normal(0.0, NOISE_SIGMA, scene.shape), 0, 255).astype(np.uint8)
    return {"BGR": noisy, "YUV420": cv2.cvtColor(noisy, cv2.COLOR_BGR2YUV_I420)}


def best_ms(frame: np.ndarray, frame_format: FrameFormat, calls: int, rounds: int) -> float:
    """The best round's mean time of one gate decision's work, in ms."""
    reference = small_gray(frame, frame_format)
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            motion_fraction(reference, small_gray(frame, frame_format), 25)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best is shown)")
    args = parser.parse_args()
    for frame_format, frame in frames().items():
        ms = best_ms(frame, frame_format, args.calls, args.rounds)
        print(f"small_gray + motion_fraction, {SIZE[0]}x{SIZE[1]} {frame_format}: {ms:.3f} ms")


if __name__ == "__main__":
    main()
