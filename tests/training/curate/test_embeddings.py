"""training.embeddings: the content-keyed cache of backbone embeddings."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from curate_helpers import EMBED_SIZE, write_pngs

from training.embeddings import (
    CACHE_FILE,
    _Store,
    default_cache_dir,
    embed_files,
    model_key,
)


@pytest.fixture
def images(tmp_path: Path, fashion_by_class: dict[str, np.ndarray]) -> list[Path]:
    return write_pngs(
        tmp_path / "imgs",
        np.concatenate([fashion_by_class["bag"][:6], fashion_by_class["sandal"][:6]]),
    )


def test_second_run_embeds_only_new_or_changed_files(tmp_path: Path, images: list[Path]) -> None:
    cache = tmp_path / "cache"
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    first = embed_files([*images, bad], size=EMBED_SIZE, cache_dir=cache)
    assert first.vectors.shape == (12, 1280) and first.vectors.dtype == np.float32
    assert first.paths == images and (first.computed, first.reused) == (12, 0)
    assert list(first.failed) == [bad] and "broken.png" in first.failed[bad]
    assert (cache / CACHE_FILE).is_file()

    again = embed_files(images, size=EMBED_SIZE, cache_dir=cache)
    assert (again.computed, again.reused) == (0, 12)
    np.testing.assert_array_equal(again.vectors, first.vectors)

    # One file changed, one added, one copy of a known file: only the first two are computed.
    flipped = cv2.flip(cv2.imread(str(images[0]), cv2.IMREAD_GRAYSCALE), 0)
    cv2.imwrite(str(images[0]), flipped)
    extra = write_pngs(tmp_path / "more", [flipped[:, ::-1]])[0]
    copy = tmp_path / "more" / "copy.png"
    shutil.copy(images[5], copy)
    third = embed_files([*images, extra, copy], size=EMBED_SIZE, cache_dir=cache)
    assert (third.computed, third.reused) == (2, 12)
    assert not np.allclose(third.vectors[0], first.vectors[0])
    np.testing.assert_array_equal(third.vectors[-1], first.vectors[5])
    # Another input size is another model: nothing is reused.
    assert model_key("efficientnet_lite0", 96) == model_key("efficientnet-lite0", 96)
    assert model_key("efficientnet-lite0", 96) != model_key("efficientnet-lite0", 128)


def test_embeddings_are_the_training_embeddings(tmp_path: Path, images: list[Path]) -> None:
    """Same pixels (training.data.load_pixels, the device's preprocessing), same embedder."""
    from training.data import Sample, load_pixels
    from training.embeddings import _embedder
    from training.models import input_spec

    got = embed_files(images[:4], size=EMBED_SIZE, cache_dir=tmp_path / "c", batch_size=3)
    pixels = load_pixels(
        [Sample(p, ("x",)) for p in images[:4]], input_spec(EMBED_SIZE, 3, "uint8"), progress=False
    )
    want = _embedder("efficientnet-lite0", EMBED_SIZE).predict_on_batch(pixels.astype("f4"))
    np.testing.assert_allclose(got.vectors, want, rtol=1e-4, atol=1e-4)


def test_default_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KESTREL_CACHE_DIR", "/somewhere/kc")
    assert default_cache_dir() == Path("/somewhere/kc/embeddings")
    monkeypatch.delenv("KESTREL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert default_cache_dir() == Path("/xdg/kestrel/embeddings")


def test_a_backbone_without_weights_is_refused(images: list[Path]) -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        embed_files(images, size=64, backbone="small-cnn")
    with pytest.raises(ValueError, match="unknown backbone"):
        embed_files(images, size=64, backbone="resnet9000")


def test_corrupt_cache_is_moved_aside(tmp_path: Path, images: list[Path]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / CACHE_FILE).write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.warns(UserWarning, match="corrupt"):
        got = embed_files(images[:2], size=EMBED_SIZE, cache_dir=cache)
    assert got.computed == 2
    assert [p.name.startswith(f"{CACHE_FILE}.corrupt-") for p in cache.iterdir()].count(True) == 1
    assert embed_files(images[:2], size=EMBED_SIZE, cache_dir=cache).reused == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_cache_only_costs_the_cache(tmp_path: Path, images: list[Path]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.warns(UserWarning, match="not kept"):
        got = embed_files(images[:2], size=EMBED_SIZE, cache_dir=locked / "cache")
    assert got.computed == 2 and len(got.vectors) == 2


def test_cache_file_in_place_of_the_folder(tmp_path: Path, images: list[Path]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="not kept"):
        got = embed_files(images[:2], size=EMBED_SIZE, cache_dir=blocker)
    assert got.computed == 2 and blocker.read_text().startswith("a file")


_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from training.embeddings import _Store
    store = _Store.open(Path(sys.argv[1]))
    who, rows, hold = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "kill"
    for batch in range(0, rows, 50):
        store.put({f"{who}-{i}": np.full(8, i, "f4") for i in range(batch, batch + 50)}, "m")
    if hold:  # a batch half written when the process dies
        store.db.execute("BEGIN")
        store.db.executemany("INSERT INTO embeddings VALUES (?, 'm', 8, ?)",
                             [(f"{who}-x{i}", b"0" * 32) for i in range(500)])
        print("mid-write", flush=True)
        sys.stdin.read()
""")


def test_concurrent_writers_and_a_kill_mid_write(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-c", _WRITER, str(tmp_path)]
    writers = [subprocess.Popen([*cmd, w, "400", "no"], env=env) for w in ("a", "b")]
    victim = subprocess.Popen(
        [*cmd, "k", "100", "kill"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert victim.stdout is not None and victim.stdout.readline().strip() == "mid-write"
    victim.kill()
    victim.wait()
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    store = _Store.open(tmp_path)
    try:
        digests = {f"{w}-{i}" for w in "ab" for i in range(400)} | {f"k-{i}" for i in range(100)}
        found = store.lookup(digests | {f"k-x{i}" for i in range(500)}, "m")
        assert set(found) == digests  # every committed row, none of the killed batch
        assert found["b-399"].tolist() == [399.0] * 8
    finally:
        store.close()
    assert sqlite3.connect(tmp_path / CACHE_FILE).execute("PRAGMA integrity_check").fetchone() == (
        "ok",
    )
