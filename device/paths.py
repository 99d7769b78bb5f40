"""Where things live in a Kestrel checkout, and which files count as images.

One home for these facts: the device, training, the tests and the benchmarks all read them here.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
# The bundle `kestrel run` and `kestrel classify` use when none is configured.
DEFAULT_MODEL = MODELS_DIR / "imagenet-efficientnet-lite0"
# Real photos (with their licences) behind the demo source, the README examples and the tests.
SAMPLES_DIR = MODELS_DIR / "samples"
BACKBONES_DIR = MODELS_DIR / "backbones"
SCHEMA_PATH = REPO_ROOT / "deploy" / "config.schema.json"

# Every suffix OpenCV's imread decodes; image folders, `kestrel classify` and training all
# accept exactly these, so a file one of them reads is never skipped by another.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".jp2"}
)


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of :data:`IMAGE_SUFFIXES`."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
