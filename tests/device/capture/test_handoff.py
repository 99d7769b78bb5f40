"""The latest-frame slot between capture and inference."""

from __future__ import annotations

import threading
import time

import numpy as np

from device.capture import (
    LatestFrameSlot,
    make_frame,
)


def test_slot_keeps_the_latest_frame_and_counts_drops():
    slot = LatestFrameSlot()
    frames = [make_frame(np.zeros((2, 2, 3), np.uint8), "BGR", i) for i in range(3)]
    for frame in frames:
        slot.put(frame)
    assert slot.dropped == 2
    assert slot.get(timeout=0) is frames[2]
    start = time.monotonic()
    assert slot.get(timeout=0.05) is None  # waits for a new frame, not the old one
    assert time.monotonic() - start >= 0.04
    assert slot.wait_taken(timeout=0)


def test_slot_close_wakes_a_waiting_consumer():
    slot = LatestFrameSlot()
    result: list[object] = []
    consumer = threading.Thread(target=lambda: result.append(slot.get(timeout=5)))
    consumer.start()
    time.sleep(0.05)
    slot.close()
    consumer.join(1)
    assert result == [None] and not consumer.is_alive()
    slot.put(make_frame(np.zeros((2, 2, 3), np.uint8), "BGR", 1))
    assert slot.get(timeout=0) is None and slot.dropped == 0
