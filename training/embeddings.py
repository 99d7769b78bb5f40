"""Embeddings of image files from a pretrained backbone, cached on disk by file content.

``embed_files`` is what ``kestrel curate``, ``kestrel label`` and training share: each file is
hashed (sha256 of its bytes), the embeddings of known contents come from the cache, and only new
or changed files are decoded — through the device's preprocessing, exactly as
:func:`training.data.load_pixels` does — and run through the backbone, in batches (never all the
pixels in memory at once).

The cache is one sqlite file per folder (``embeddings.sqlite3``): a row per (content hash,
model key), where the model key names the backbone, the input size, the preprocessing (and
the hash of its source file), the weights files' hash and :data:`CACHE_VERSION`. sqlite's
transactions make it safe against concurrent runs and a kill mid-write (a batch is committed
whole or not at all). The folder is
``cache_dir``, else ``$KESTREL_CACHE_DIR/embeddings``, else ``$XDG_CACHE_HOME/kestrel/embeddings``
(``~/.cache/kestrel/embeddings``). A cache that cannot be opened is not fatal: the run goes on
without it, with a warning; a corrupt cache file is moved aside and started afresh.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.inference.preprocess import ImageError, InputQuantizer, prepare, read_image
from device.paths import BACKBONES_DIR

#: Bump when the way embeddings are computed changes: old rows are then never read.
CACHE_VERSION = 1
CACHE_FILE = "embeddings.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embeddings (sha256 TEXT NOT NULL, model TEXT NOT NULL, "
    "dim INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (sha256, model))"
)
_LOOKUP_CHUNK = 500  # host parameters per SELECT (sqlite allows 999 on old builds)


@dataclass
class Embedded:
    """The result of :func:`embed_files`.

    ``vectors[i]`` is the embedding of ``paths[i]`` (the readable input paths, in input order);
    ``failed`` maps each unreadable path to the reason; ``computed`` files went through the
    backbone in this call, ``reused`` came from the cache (or share the content of a file
    computed in this call).
    """

    vectors: np.ndarray
    paths: list[Path]
    failed: dict[Path, str] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0


def default_cache_dir() -> Path:
    """``$KESTREL_CACHE_DIR/embeddings``, else ``$XDG_CACHE_HOME/kestrel/embeddings``."""
    root = os.environ.get("KESTREL_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "embeddings"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "kestrel" / "embeddings"


def canonical_backbone(name: str) -> str:
    """Registry name of a backbone: ``efficientnet_lite0`` and ``efficientnet-lite0`` agree."""
    from training.models import BACKBONES

    if name in BACKBONES:
        return name
    dashed = name.replace("_", "-").lower()
    if dashed in BACKBONES:
        return dashed
    raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")


@cache
def _weights_fingerprint(backbone: str) -> str:
    """sha256 over the backbone's shipped weight files: new weights, new cache rows."""
    digest = hashlib.sha256()
    for path in sorted((BACKBONES_DIR / backbone).glob("*.npz")):
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:16]


@cache
def _preprocessing_fingerprint() -> str:
    """sha256 of the preprocessing's source: a change there (even a comment) starts afresh
    rather than risk embeddings of pixels prepared differently."""
    from device.inference import preprocess

    return hashlib.sha256(Path(preprocess.__file__).read_bytes()).hexdigest()[:12]


def model_key(backbone: str, size: int) -> str:
    """What an embedding depends on besides the file's bytes."""
    name = canonical_backbone(backbone)
    return (
        f"{name}|{size}px|center_crop-area-rgb|p{_preprocessing_fingerprint()}"
        f"|w{_weights_fingerprint(name)}|v{CACHE_VERSION}"
    )


def embed_files(
    paths: Sequence[Path],
    *,
    size: int,
    backbone: str = "efficientnet-lite0",
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Embedded:
    """Embeddings of image files, ``(N, D)`` float32 in the order of the readable ``paths``.

    Raises ValueError for a backbone without pretrained weights (its embeddings would be
    random) or an input size it cannot take. Unreadable files are listed in ``failed``.
    """
    from training.models import get_backbone

    name = canonical_backbone(backbone)
    spec = get_backbone(name)
    if not spec.pretrained:
        raise ValueError(f"backbone {name} has no pretrained weights: its embeddings mean nothing")
    spec.check_input(size, 3)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    key = model_key(name, size)
    paths = [Path(p) for p in paths]
    failed: dict[Path, str] = {}
    hashes = _hash_all(paths, failed, progress)
    store = _Store.open(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    try:
        known = store.lookup(set(hashes.values()), key)
        missing = _first_path_per_hash(hashes, known)
        computed = _compute(
            missing, hashes, name, size, batch_size, store, key, known, failed, progress
        )
    finally:
        store.close()
    kept = [p for p in paths if p in hashes and hashes[p] in known]
    dim = spec.embedding_size
    vectors = np.stack([known[hashes[p]] for p in kept]) if kept else np.zeros((0, dim), "f4")
    reused = len(kept) - computed
    return Embedded(vectors.astype(np.float32, copy=False), kept, failed, computed, reused)


def _hash_all(paths: list[Path], failed: dict[Path, str], progress: bool) -> dict[Path, str]:
    from training.data.checks import parallel_map

    def one(path: Path) -> str | OSError:
        try:
            with path.open("rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as exc:
            return exc

    hashes: dict[Path, str] = {}
    for path, result in zip(paths, parallel_map(one, paths, progress, "Hashing"), strict=True):
        if isinstance(result, OSError):
            failed[path] = f"{path}: cannot read ({result.strerror or result})"
        else:
            hashes[path] = result
    return hashes


def _first_path_per_hash(hashes: dict[Path, str], known: dict[str, np.ndarray]) -> list[Path]:
    """One path per content not in the cache (identical files are embedded once)."""
    seen: set[str] = set(known)
    missing = []
    for path, digest in hashes.items():
        if digest not in seen:
            seen.add(digest)
            missing.append(path)
    return missing


def _compute(
    missing: list[Path],
    hashes: dict[Path, str],
    backbone: str,
    size: int,
    batch_size: int,
    store: _Store,
    key: str,
    known: dict[str, np.ndarray],
    failed: dict[Path, str],
    progress: bool,
) -> int:
    """Embed ``missing`` batch by batch, storing each batch; returns how many were embedded."""
    if not missing:
        return 0
    from tqdm import tqdm

    embedder = _embedder(backbone, size)
    computed = 0
    bar = tqdm(
        total=len(missing),
        desc="Embeddings",
        unit="img",
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )
    with bar:
        for batch_paths, pixels in _pixel_batches(missing, size, batch_size, failed):
            vectors = _predict(embedder, pixels, batch_size)
            rows = {hashes[p]: v for p, v in zip(batch_paths, vectors, strict=True)}
            store.put(rows, key)
            known.update(rows)
            computed += len(batch_paths)
            bar.update(len(batch_paths))
    return computed


def _predict(embedder: Any, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """One batch through the backbone, padded to a power of two (at most ``batch_size``): each
    new batch shape makes TensorFlow trace the model again (seconds), so few shapes are used."""
    n = len(pixels)
    padded = min(batch_size, 1 << (n - 1).bit_length())
    batch = np.zeros((max(padded, n), *pixels.shape[1:]), dtype=np.float32)
    batch[:n] = pixels
    return np.asarray(embedder.predict_on_batch(batch), dtype=np.float32)[:n]


def _pixel_batches(
    paths: list[Path], size: int, batch_size: int, failed: dict[Path, str]
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Batches of preprocessed pixels (uint8, as ``training.data.load_pixels`` makes them)."""
    from training.data.checks import parallel_map
    from training.models import input_spec

    spec = input_spec(size, 3, "uint8")
    identity = InputQuantizer.identity()

    def load(path: Path) -> np.ndarray | str:
        try:
            return prepare(read_image(str(path)), spec, identity, "BGR")
        except (ImageError, OSError, cv2.error) as exc:
            return str(exc) if str(path) in str(exc) else f"{path}: {exc}"

    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        good, images = [], []
        for path, result in zip(chunk, parallel_map(load, chunk, False, ""), strict=True):
            if isinstance(result, str):
                failed[path] = result
            else:
                good.append(path)
                images.append(result)
        if good:
            yield good, np.stack(images)


_EMBEDDERS: dict[tuple[str, int], Any] = {}


def _embedder(backbone: str, size: int) -> Any:
    """The backbone with its rescaling in front, built once per process (as training does)."""
    if (backbone, size) not in _EMBEDDERS:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        from training.models import build_embedder, get_backbone

        spec = get_backbone(backbone)
        _EMBEDDERS[(backbone, size)] = build_embedder(spec, spec.build(size, 3), size, 3)
    return _EMBEDDERS[(backbone, size)]


class _Store:
    """The sqlite cache, or an in-memory stand-in when the folder is unusable."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    def open(cls, folder: Path) -> _Store:
        path = folder / CACHE_FILE
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return cls(_connect(path))
        except sqlite3.DatabaseError as exc:
            if not path.exists() or isinstance(exc, sqlite3.OperationalError):
                return cls._without(path, exc)
            aside = path.with_name(f"{CACHE_FILE}.corrupt-{int(time.time())}")
            warnings.warn(
                f"embedding cache {path} is corrupt ({exc}); moved to {aside}", stacklevel=3
            )
            try:
                os.replace(path, aside)
                return cls(_connect(path))
            except (OSError, sqlite3.DatabaseError) as again:
                return cls._without(path, again)
        except OSError as exc:
            return cls._without(path, exc)

    @classmethod
    def _without(cls, path: Path, exc: Exception) -> _Store:
        warnings.warn(
            f"embedding cache {path} unusable ({exc}); embeddings are not kept", stacklevel=4
        )
        db = sqlite3.connect(":memory:")
        db.execute(_SCHEMA)
        return cls(db)

    def lookup(self, digests: set[str], key: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        items = sorted(digests)
        for start in range(0, len(items), _LOOKUP_CHUNK):
            chunk = items[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                "SELECT sha256, dim, vector FROM embeddings "
                f"WHERE model = ? AND sha256 IN ({marks})",
                [key, *chunk],
            )
            for digest, dim, blob in rows:
                vector = np.frombuffer(blob, dtype="<f4")
                if vector.size == dim:  # a short row is treated as absent
                    found[digest] = vector
        return found

    def put(self, rows: dict[str, np.ndarray], key: str) -> None:
        values = [(d, key, int(v.size), v.astype("<f4").tobytes()) for d, v in rows.items()]
        try:
            with self.db:  # one transaction per batch
                self.db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", values)
        except sqlite3.OperationalError as exc:  # disk full, read-only: keep going uncached
            warnings.warn(
                f"embedding cache: could not store {len(values)} rows ({exc})", stacklevel=3
            )

    def close(self) -> None:
        self.db.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=60)
    db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(_SCHEMA)
    db.commit()
    return db
