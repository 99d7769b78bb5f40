"""Running figures of a camera's inference, read by the stats thread and ``/metrics``.

Timings are exponential moving averages per stage of the work on a frame: ``capture_wait``,
``motion``, the main model's ``preprocess`` / ``invoke`` / ``decode`` (a cascade stage's are
prefixed with its name: ``breed_invoke``), and ``publish``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device.inference.engine import StageTimes
from device.publish.payloads import MAIN_STAGE


@dataclass
class StageStats:
    """Per-camera running figures, read by the stats thread (plain counters: GIL-safe)."""

    inferences: int = 0
    motion_skipped: int = 0
    transitions: int = 0
    errors: int = 0
    ms: dict[str, float] = field(default_factory=dict)  # stage -> EMA of milliseconds

    def record(self, stage: str, ms: float, alpha: float = 0.1) -> None:
        previous = self.ms.get(stage)
        self.ms[stage] = ms if previous is None else previous + alpha * (ms - previous)

    def record_model(self, stage_name: str, timings: StageTimes) -> None:
        """The preprocess / invoke / decode times of one cascade stage's classify()."""
        prefix = "" if stage_name == MAIN_STAGE else f"{stage_name}_"
        self.record(prefix + "preprocess", timings.preprocess_ms)
        self.record(prefix + "invoke", timings.invoke_ms)
        self.record(prefix + "decode", timings.decode_ms)


class InferenceRate:
    """Each camera's inferences per second between two stats payloads."""

    def __init__(self, since: float) -> None:
        self.since = since  # time.monotonic() of the previous payload
        self._inferences: dict[str, int] = {}

    def add_fps(self, payload: dict[str, Any], now: float) -> None:
        """Add ``fps`` to every camera of a stats payload; ``now`` starts the next period."""
        for name, camera in payload["cameras"].items():
            done = camera["inferences"] - self._inferences.get(name, 0)
            camera["fps"] = round(done / (now - self.since), 2)
            self._inferences[name] = camera["inferences"]
        self.since = now
