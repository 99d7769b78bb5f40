"""Helpers of the capture tests: OpenCV-written videos as the camera stand-in.

Each test frame is a uniform gray of level ``8 * index``: luminance survives MJPG and mp4v
compression to within a level or two, so a frame's index can be read back exactly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.capture import Frame, SourceStatus
from device.config import BackoffConfig, CameraConfig

W, H = 64, 48
FAST = BackoffConfig(min_delay=0.02, max_delay=0.05)


def write_video(path: Path, frames: int = 30, fps: float = 30.0) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((H, W, 3), 8 * i, np.uint8))
    writer.release()
    return path


def index_of(image: np.ndarray) -> int:
    return round(float(image.mean()) / 8)


def camera(source: object, **kwargs: object) -> CameraConfig:
    return CameraConfig(name="cam", source=source, **kwargs)


def read_all(source, limit: int = 1000) -> list[Frame]:
    frames = []
    for _ in range(limit):
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    return frames


class Collector:
    """on_status callback that records every reported status."""

    def __init__(self) -> None:
        self.statuses: list[SourceStatus] = []

    def __call__(self, name: str, status: SourceStatus) -> None:
        assert name == "cam"
        self.statuses.append(status)

    @property
    def states(self) -> list[str]:
        return [s.state for s in self.statuses]
