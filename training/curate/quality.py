"""Per-image quality: measurements (sharpness, brightness, size, hashes) and the flags drawn from
them, each relative to the dataset where a fixed threshold would not travel between cameras.

* ``blurry``: variance of the Laplacian (on the image scaled down to at most
  :data:`MEASURE_SIDE` px) below :data:`BLUR_RATIO` of the dataset's median — a focus
  measure (Pech-Pacheco et al. 2000) that only means something compared with similar pictures.
* ``dark`` / ``bright``: the 95th percentile of grey below :data:`DARK_P95` (nothing in the
  picture is lit) / the 5th percentile above :data:`BRIGHT_P5` (nothing is dark: washed out).
* ``tiny``: shorter side below :data:`TINY_MIN_SIDE` px or below :data:`TINY_RATIO` of the
  dataset's median shorter side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.inference.preprocess import ImageError, read_image

MEASURE_SIDE = 256
BLUR_RATIO = 0.1
DARK_P95 = 50
BRIGHT_P5 = 215
TINY_MIN_SIDE = 16
TINY_RATIO = 0.25


@dataclass(frozen=True)
class Stats:
    """What is measured once per readable image."""

    height: int
    width: int
    sharpness: float  # variance of the Laplacian
    p5: float  # grey percentiles, 0..255
    p95: float
    mean: float
    phash: int  # 64-bit perceptual hash (imagehash.phash)
    sha256: str


def measure(path: Path) -> Stats:
    """Decode one image (as the device does) and measure it. Raises ImageError."""
    data = path.read_bytes()
    image = read_image(str(path))
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = gray.shape
    scale = MEASURE_SIDE / max(height, width)
    small = gray
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    sharpness = float(cv2.Laplacian(small, cv2.CV_64F).var())
    p5, p95 = np.percentile(small, (5, 95))
    return Stats(
        height=height,
        width=width,
        sharpness=sharpness,
        p5=float(p5),
        p95=float(p95),
        mean=float(small.mean()),
        phash=_phash(small),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _phash(gray: np.ndarray) -> int:
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(gray)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def measure_all(
    paths: Sequence[Path], progress: bool = False
) -> tuple[dict[Path, Stats], dict[Path, str]]:
    """Stats of every readable image, and the reason for each unreadable one."""
    from training.data.checks import parallel_map

    def one(path: Path) -> Stats | str:
        try:
            return measure(path)
        except (ImageError, OSError, cv2.error) as exc:
            text = str(exc)
            return text if str(path) in text else f"{path}: {text}"

    stats: dict[Path, Stats] = {}
    failed: dict[Path, str] = {}
    for path, result in zip(paths, parallel_map(one, paths, progress, "Measuring"), strict=True):
        if isinstance(result, Stats):
            stats[path] = result
        else:
            failed[path] = result
    return stats, failed


def quality_flags(stats: dict[Path, Stats]) -> dict[Path, list[str]]:
    """``blurry`` / ``dark`` / ``bright`` / ``tiny`` per image (relative to these images)."""
    flags: dict[Path, list[str]] = {path: [] for path in stats}
    if not stats:
        return flags
    sharp_median = float(np.median([s.sharpness for s in stats.values()]))
    side_median = float(np.median([min(s.height, s.width) for s in stats.values()]))
    for path, s in stats.items():
        if s.sharpness < BLUR_RATIO * sharp_median:
            flags[path].append("blurry")
        if s.p95 < DARK_P95:
            flags[path].append("dark")
        if s.p5 > BRIGHT_P5:
            flags[path].append("bright")
        side = min(s.height, s.width)
        if side < TINY_MIN_SIDE or side < TINY_RATIO * side_median:
            flags[path].append("tiny")
    return flags


def thresholds(stats: dict[Path, Stats]) -> dict[str, float]:
    """The dataset-relative thresholds actually applied (the report records them)."""
    if not stats:
        return {}
    sharp = float(np.median([s.sharpness for s in stats.values()]))
    side = float(np.median([min(s.height, s.width) for s in stats.values()]))
    return {
        "blurry_sharpness_below": round(BLUR_RATIO * sharp, 3),
        "dark_p95_below": DARK_P95,
        "bright_p5_above": BRIGHT_P5,
        "tiny_side_below": round(max(TINY_MIN_SIDE, TINY_RATIO * side), 1),
    }
