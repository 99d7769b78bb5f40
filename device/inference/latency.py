"""The measurement behind the ``kestrel bench`` command: per-stage timings of one bundle's
inference pipeline on this machine, measured side by side.

This is the user-facing check of a device (what rate can this box sustain?). The project's own
hand-run benchmarks, with their recorded figures, live in ``bench/`` at the top of the repository.

Shared machines are noisy, so the invoke-only loop and the end-to-end loop run in alternating
rounds within one process, and the overhead is taken round by round from paired figures.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from device.inference.engine import Classifier
from device.inference.preprocess import ImageError, read_image
from device.resources import peak_rss_mb

FRAME_SIZE = (640, 480)  # width, height of a typical camera frame
TARGET_PREPROCESS_MS = 1.0
TARGET_OVERHEAD_RATIO = 0.20


@dataclass
class BenchResult:
    file_decode_ms: list[float] = field(default_factory=list)
    preprocess_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    invoke_ms: list[float] = field(default_factory=list)  # per-round mean, invoke alone
    end_to_end_ms: list[float] = field(default_factory=list)  # per-round mean, frame -> labels
    peak_rss_mb: float = 0.0

    @property
    def overhead_ratio(self) -> float:
        """(preprocess + decode + per-call overhead) / invoke, median over paired rounds."""
        ratios = [(e - i) / i for e, i in zip(self.end_to_end_ms, self.invoke_ms, strict=True)]
        return statistics.median(ratios)


def camera_frames(images: list[Path]) -> list[np.ndarray]:
    """Real photos as decoded 640x480 BGR frames, the way a camera delivers them."""
    frames = []
    for path in images:
        frames.append(cv2.resize(read_image(str(path)), FRAME_SIZE, interpolation=cv2.INTER_AREA))
    if not frames:
        raise ValueError("bench needs at least one readable image")
    return frames


def readable_images(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The paths that decode as images, and one line for each that does not (naming it)."""
    images, problems = [], []
    for path in paths:
        try:
            read_image(str(path))
        except ImageError as exc:
            problems.append(str(exc))
            continue
        images.append(path)
    return images, problems


def run_benchmark(
    classifier: Classifier, images: list[Path], iterations: int = 100, rounds: int = 5
) -> BenchResult:
    if iterations < 1 or rounds < 1:
        raise ValueError(f"iterations and rounds must be >= 1, got {iterations} and {rounds}")
    result = BenchResult()
    for path in images:
        t0 = time.perf_counter()
        read_image(str(path))
        result.file_decode_ms.append((time.perf_counter() - t0) * 1e3)
    frames = camera_frames(images)
    tensor = classifier.preprocess(frames[0])
    for _ in range(rounds):
        classifier.infer(tensor)
        invoke = invoke_alone(classifier, tensor)
        t0 = time.perf_counter()
        for _ in range(iterations):
            invoke()
        result.invoke_ms.append((time.perf_counter() - t0) * 1e3 / iterations)
        # End to end on decoded frames: preprocess + set input + invoke + read output + decode.
        t0 = time.perf_counter()
        for i in range(iterations):
            classifier.classify(frames[i % len(frames)])
            result.preprocess_ms.append(classifier.timings.preprocess_ms)
            result.decode_ms.append(classifier.timings.decode_ms)
        result.end_to_end_ms.append((time.perf_counter() - t0) * 1e3 / iterations)
    result.peak_rss_mb = peak_rss_mb()
    return result


def invoke_alone(classifier: Classifier, tensor: np.ndarray) -> Callable[[], object]:
    """One invoke on the accelerator in use: on the Edge TPU, the child process's round trip
    (its invoke and the hand-over of the tensors, as every frame pays); on the CPU, the
    interpreter alone with the input already in place."""
    if classifier.accelerator_process is not None:
        return functools.partial(classifier.infer, tensor)
    return classifier.interpreter.invoke


def _row(name: str, values: list[float]) -> str:
    arr = np.asarray(values)
    return (
        f"  {name:<28}{np.median(arr):>9.3f}{np.percentile(arr, 90):>9.3f}"
        f"{1000 / np.median(arr):>12.1f}"
    )


def _invoke_name(classifier: Classifier) -> str:
    return "invoke alone" if classifier.accelerator_process is None else "invoke (Edge TPU child)"


def _verdict(met: bool) -> str:
    return "ok" if met else "MISSED"


def format_report(result: BenchResult, classifier: Classifier) -> str:
    manifest = classifier.bundle.manifest
    spec = manifest.input
    preprocess = statistics.median(result.preprocess_ms)
    ratio = result.overhead_ratio
    lines = [
        f"model       {manifest.name} ({manifest.task}, {spec.width}x{spec.height} {spec.dtype}, "
        f"{manifest.quantization.scheme})",
        f"runtime     {classifier.runtime} on {classifier.accelerator}"
        + (f" ({classifier.fallback_reason})" if classifier.fallback_reason else ""),
        f"frames      {FRAME_SIZE[0]}x{FRAME_SIZE[1]} BGR, decoded; "
        f"{len(result.end_to_end_ms)} alternating rounds",
        "",
        f"  {'stage':<28}{'p50 ms':>9}{'p90 ms':>9}{'rate /s':>12}",
        _row("file decode (not counted)", result.file_decode_ms),
        _row("preprocess", result.preprocess_ms),
        _row(_invoke_name(classifier), result.invoke_ms),
        _row("decode", result.decode_ms),
        _row("end to end (frame->labels)", result.end_to_end_ms),
        "",
        f"overhead    (preprocess + decode + per-call) / invoke = {ratio:.1%}"
        f"  [target <= {TARGET_OVERHEAD_RATIO:.0%}: {_verdict(ratio <= TARGET_OVERHEAD_RATIO)}]",
        f"preprocess  median {preprocess:.3f} ms"
        f"  [target <= {TARGET_PREPROCESS_MS:.1f} ms: "
        f"{_verdict(preprocess <= TARGET_PREPROCESS_MS)}]",
        f"memory      peak resident {result.peak_rss_mb:.0f} MB",
    ]
    return "\n".join(lines)
