"""The ``collect`` section of a camera: frames kept on disk to become a training set."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device.config.section import Section

CollectReason = Literal["uncertain", "transition", "interval"]
COLLECT_REASONS: tuple[CollectReason, ...] = ("uncertain", "transition", "interval")


class CollectConfig(Section):
    """Keep a camera's telling frames (full-size JPEG + a JSON sidecar) for ``kestrel curate``
    / ``kestrel label`` / ``kestrel train``: frames the model is unsure of, frames that changed
    the state, and a spread-out sample of the scene. Written by a thread of its own: never
    slows inference; a folder that cannot be written only costs the frames (counted)."""

    enabled: bool = Field(False, description="Collect frames of this camera.")
    directory: Path | None = Field(
        None,
        description="Folder of the frames (required when enabled; created if missing). "
        "Cameras may share one: file names start with the camera's name.",
    )
    reasons: list[CollectReason] = Field(
        default_factory=lambda: list(COLLECT_REASONS),
        min_length=1,
        description="Which frames to keep: uncertain (a score near the bundle's calibrated "
        "threshold, 'unknown', or a state flip-flopping), transition (the frame that changed "
        "the state), interval (a frame that differs from the last kept ones, every "
        "interval_minutes at most).",
    )
    interval_minutes: float = Field(
        10.0, gt=0, description="interval: at most one frame every this many minutes."
    )
    min_difference: float = Field(
        0.3,
        ge=0,
        le=1,
        description="interval: Bhattacharyya distance of colour histograms (HSV 8x8x8, as "
        "Frigate picks distinct keyframes) a frame must keep from each of the last kept "
        "frames. 0 = identical, 1 = nothing in common; a camera's noise is ~0.05-0.2, a 20 % "
        "change of light ~0.35-0.6.",
    )
    uncertain_margin: float = Field(
        0.1,
        ge=0,
        le=0.5,
        description="uncertain: how close (in probability) a score must be to its "
        "calibrated threshold.",
    )
    max_files: int = Field(
        2000,
        ge=1,
        description="Frames kept (oldest deleted beyond this; labelled ones, "
        "moved into class folders, are never touched).",
    )
    max_mb: float = Field(
        1000.0, gt=0, description="Total size of the frames kept, MB (oldest deleted beyond)."
    )
    max_per_minute: int = Field(
        6,
        ge=1,
        description="At most this many frames of each reason kept in any minute; uncertain "
        "frames also at least 60 / max_per_minute seconds apart.",
    )
    jpeg_quality: int = Field(
        95,
        ge=10,
        le=100,
        description="Quality of the JPEGs Kestrel encodes (an MJPEG camera's own JPEG is kept "
        "as it is).",
    )

    @model_validator(mode="after")
    def _directory_when_enabled(self) -> CollectConfig:
        if self.enabled and self.directory is None:
            raise ValueError("collect.directory is required when collect.enabled is true")
        if len(set(self.reasons)) != len(self.reasons):
            raise ValueError(f"collect.reasons repeats a reason: {self.reasons}")
        return self
