"""The ``cameras`` and ``snapshots`` sections: sources, motion gating, smoothing, cascades."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device.config.collect import CollectConfig
from device.config.section import TOPIC_SAFE, BackoffConfig, Section
from device.inference.preprocess import Roi


class MotionConfig(Section):
    """Skip inference while the scene is static; still infer every ``force_interval`` s."""

    enabled: bool = Field(False, description="Gate inference on motion.")
    pixel_delta: int = Field(
        25, ge=1, le=255, description="Gray-level change that counts a pixel as changed."
    )
    min_area: float = Field(
        0.01, gt=0, le=1, description="Fraction of changed pixels that counts as motion."
    )
    force_interval: float = Field(
        10.0, gt=0, description="Seconds after which inference runs even on a static scene."
    )


class SmoothingConfig(Section):
    """Debouncing of per-frame predictions into a stable state.

    ``ema`` averages scores over time (``alpha`` weight of the newest frame); ``vote`` takes
    the label that won ``votes`` of the last ``window`` frames. A label enters the state when
    its smoothed score reaches ``enter`` and leaves when it falls below ``exit`` (hysteresis).
    """

    method: Literal["ema", "vote"] = Field("ema", description="ema or vote (k-of-n).")
    alpha: float = Field(0.5, gt=0, le=1, description="ema: weight of the newest frame.")
    window: int = Field(5, ge=1, le=100, description="vote: frames considered (n).")
    votes: int = Field(3, ge=1, le=100, description="vote: frames that must agree (k).")
    enter: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Smoothed score to enter a label, relative to the bundle's calibrated "
        "threshold of that label: 0.5 = at the threshold (scores are scaled by 0.5 / threshold; "
        "a bundle without thresholds is judged on its probabilities).",
    )
    exit: float = Field(
        0.35, ge=0, le=1, description="Smoothed score below which it leaves (same scale)."
    )
    min_dwell: float = Field(
        1.0, ge=0, description="Seconds a new state must hold before it is published."
    )
    cooldown: float = Field(
        0.0, ge=0, description="Seconds before the same label may start a new event again."
    )
    include: list[str] = Field(
        default_factory=list, description="Only these labels count (empty: all)."
    )
    exclude: list[str] = Field(default_factory=list, description="Labels that never count.")

    @model_validator(mode="after")
    def _consistent(self) -> SmoothingConfig:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not exceed enter ({self.enter})")
        if self.votes > self.window:
            raise ValueError(f"votes ({self.votes}) cannot exceed window ({self.window})")
        overlap = set(self.include) & set(self.exclude)
        if overlap:
            raise ValueError(f"labels both included and excluded: {sorted(overlap)}")
        return self


class CascadeConfig(Section):
    """A second model run on the same frame when the camera's state is one of ``when``
    (e.g. an "insect / no insect" gate, then a species model only when needed)."""

    name: str = Field(pattern=TOPIC_SAFE, description="Name of this level in the state.")
    model: Path = Field(description="Bundle folder of the second model.")
    when: list[str] = Field(min_length=1, description="Labels of the first level that trigger it.")
    top_k: int = Field(3, ge=1, le=20, description="Scores kept per frame.")
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)


class CameraConfig(Section):
    """One camera (or stand-in) and how its frames are classified."""

    name: str = Field(pattern=TOPIC_SAFE, description="Topic-safe name, e.g. door.")
    source: int | str = Field(
        description="0 (USB camera index), /dev/video0, /dev/v4l/by-id/..., rtsp://..., "
        "picamera2, a video file, a folder of images, or demo (the shipped sample photos)."
    )
    loop: bool = Field(False, description="Video files and image folders: start over at the end.")
    width: int | None = Field(None, gt=0, description="Requested capture width (camera default).")
    height: int | None = Field(None, gt=0, description="Requested capture height.")
    source_fps: float | None = Field(
        None,
        gt=0,
        description="Pace files and folders at this rate (default: the file's own "
        "rate for videos, 2 fps for image folders; .inf: as fast as inference takes them). "
        "Live cameras deliver at their own pace.",
    )
    max_fps: float = Field(5.0, gt=0, description="Upper bound on inferences per second.")
    roi: tuple[float, float, float, float] | None = Field(
        None, description="Region of interest [x, y, width, height] as fractions of the frame."
    )
    model: Path | None = Field(None, description="Bundle for this camera (default: the top one).")
    top_k: int = Field(3, ge=1, le=20, description="Scores kept per frame.")
    motion: MotionConfig = Field(default_factory=MotionConfig)
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    cascade: list[CascadeConfig] = Field(default_factory=list, description="Second-stage models.")
    reopen: BackoffConfig = Field(default_factory=BackoffConfig)
    collect: CollectConfig = Field(default_factory=CollectConfig)

    @model_validator(mode="after")
    def _roi(self) -> CameraConfig:
        if self.roi is not None:
            x, y, w, h = self.roi
            if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ValueError(
                    f"roi {list(self.roi)}: x, y in [0, 1) and width, height in (0, 1]"
                )
            if x + w > 1.0001 or y + h > 1.0001:
                raise ValueError(f"roi {list(self.roi)} reaches beyond the frame")
        return self

    @property
    def roi_tuple(self) -> Roi | None:
        return self.roi


class SnapshotConfig(Section):
    """JPEG of the frame that caused each state transition."""

    enabled: bool = Field(True, description="Save and publish snapshots.")
    directory: Path | None = Field(
        None, description="Where to save (default <state_dir>/snapshots)."
    )
    max_files: int = Field(200, ge=0, description="Oldest snapshots are deleted beyond this.")
    max_mb: float = Field(
        50.0, gt=0, description="Oldest snapshots are deleted beyond this total size (MB)."
    )
    jpeg_quality: int = Field(
        85,
        ge=10,
        le=100,
        description="JPEG quality of snapshots that Kestrel encodes (an MJPEG camera's own JPEG "
        "is used as it is).",
    )
