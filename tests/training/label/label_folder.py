"""The folder the label tests work on: unlabeled Fashion-MNIST items with sidecars, one class
folder, and its curate report (embeddings shared with the curate tests' cache)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from curate_helpers import EMBED_SIZE, write_pngs

ITEMS = ("trouser", "sneaker", "bag")


def make_folder(root: Path, fm: dict[str, np.ndarray]) -> None:
    for name in ITEMS:
        for path in write_pngs(root, fm[name][60:72], prefix=f"{name}-"):
            if name != "bag":
                path.with_suffix(".json").write_text(json.dumps({"guess": name, "camera": "door"}))
    write_pngs(root / "bag", fm["bag"][:4])


def make_report(root: Path, cache: Path) -> dict:
    from training.curate import curate

    return curate(root, None, clusters=3, image_size=EMBED_SIZE, cache_dir=cache, progress=False)


def copy_folder(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


def tree(root: Path) -> dict[str, str]:
    """Every file (not following symlinks) -> sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != ".kestrel-label.log"
    }
