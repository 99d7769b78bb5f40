"""kestrel curate on real pictures: Fashion-MNIST items, a colour photo, broken files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from curate_helpers import EMBED_SIZE, write_pngs

from device.cli import main
from device.paths import SAMPLES_DIR
from training.curate import CurateError, curate

UNLABELED = ("trouser", "sneaker", "bag")


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _make_folder(root: Path, fm: dict[str, np.ndarray]) -> None:
    """Class folders (trouser, sneaker, and a small bag class), three sneakers filed as
    trousers, unlabeled items with sidecars, and the odd files curate must flag."""
    write_pngs(root / "trouser", fm["trouser"][:12])
    write_pngs(root / "trouser", fm["sneaker"][40:43], prefix="misfiled")
    write_pngs(root / "sneaker", fm["sneaker"][:12])
    write_pngs(root / "bag", fm["bag"][:4])
    for name in UNLABELED:
        for path in write_pngs(root, fm[name][60:72], prefix=f"{name}-"):
            if name == "trouser":
                path.with_suffix(".json").write_text(json.dumps({"guess": "trouser"}))
            elif name == "sneaker":
                scores = {"sneaker": 0.8, "bag": 0.2}
                path.with_suffix(".json").write_text(json.dumps({"scores": scores}))
    base = fm["trouser"][90]
    cv2.imwrite(str(root / "odd-blurry.png"), cv2.GaussianBlur(base, (7, 7), 3))
    cv2.imwrite(str(root / "odd-dark.png"), base // 8)
    cv2.imwrite(str(root / "odd-bright.png"), 255 - base // 8)
    cv2.imwrite(str(root / "odd-tiny.png"), cv2.resize(base, (10, 10)))
    shutil.copy(root / "bag-000.png", root / "odd-copy.png")
    near = cv2.imdecode(
        cv2.imencode(".jpg", fm["sneaker"][61], [cv2.IMWRITE_JPEG_QUALITY, 90])[1], 0
    )
    cv2.imwrite(str(root / "odd-recoded.png"), near)
    photo = cv2.resize(cv2.imread(str(SAMPLES_DIR / "astronaut.jpg")), (64, 64))
    cv2.imwrite(str(root / "odd-photo.jpg"), photo)
    (root / "odd-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "odd-empty.png").write_bytes(b"")


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory, fashion_by_class, embedding_cache):
    root = tmp_path_factory.mktemp("frames")
    _make_folder(root, fashion_by_class)
    before = _tree(root)
    out = root.parent / f"{root.name}-report"
    argv = ["curate", str(root), "--out", str(out), "--clusters", "3"]
    argv += ["--image-size", str(EMBED_SIZE), "--cache-dir", str(embedding_cache), "-q"]
    assert main(argv) == 0
    report = json.loads((out / "curate.json").read_text())
    return root, out, report, before


def _by_path(report: dict) -> dict[str, dict]:
    return {image["path"]: image for image in report["images"]}


def test_report_has_the_schema_and_nothing_moved(curated) -> None:
    root, _, report, before = curated
    assert _tree(root) == before  # nothing moved, deleted or added in the folder
    for image in report["images"]:
        assert {"path", "label", "flags", "cluster"} <= image.keys()
    for cluster in report["clusters"]:
        assert {"id", "size", "members", "guess"} <= cluster.keys()
        assert cluster["size"] == len(cluster["members"])
    counts = report["counts"]
    assert counts["images"] == len(report["images"]) == 31 + 36 + 9
    assert (counts["labeled"], counts["unlabeled"]) == (31, 45)
    assert report["settings"]["image_size"] == EMBED_SIZE


def test_corrupt_files_are_named_and_the_run_goes_on(curated) -> None:
    _, _, report, _ = curated
    corrupt = {c["path"]: c["reason"] for c in report["corrupt"]}
    assert set(corrupt) == {"odd-broken.jpg", "odd-empty.png"}
    assert "empty file" in corrupt["odd-empty.png"]
    assert _by_path(report)["odd-broken.jpg"]["flags"] == ["corrupt"]
    assert _by_path(report)["odd-broken.jpg"]["cluster"] is None


def test_quality_flags(curated) -> None:
    _, _, report, _ = curated
    images = _by_path(report)
    assert "blurry" in images["odd-blurry.png"]["flags"]
    assert "dark" in images["odd-dark.png"]["flags"]
    assert "bright" in images["odd-bright.png"]["flags"]
    assert "tiny" in images["odd-tiny.png"]["flags"]
    ordinary = [i for p, i in images.items() if not p.startswith("odd-")]
    quality = {"blurry", "dark", "bright", "tiny", "outlier"}
    assert sum(bool(quality & set(i["flags"])) for i in ordinary) <= 3


def test_duplicates_exact_and_near(curated) -> None:
    _, _, report, _ = curated
    images = _by_path(report)
    groups = {tuple(d["paths"]): d["kind"] for d in report["duplicates"]}
    assert groups[("bag-000.png", "odd-copy.png")] == "exact"
    assert images["odd-copy.png"]["duplicate_of"] == "bag-000.png"
    # A re-encoded copy: the first by path is kept, the other is flagged as its duplicate.
    assert groups[("odd-recoded.png", "sneaker-001.png")] == "near"
    assert "duplicate" in images["sneaker-001.png"]["flags"]
    assert images["sneaker-001.png"]["duplicate_of"] == "odd-recoded.png"
    assert "duplicate" not in images["odd-recoded.png"]["flags"]


def test_the_colour_photo_is_an_outlier(curated) -> None:
    _, _, report, _ = curated
    assert "outlier" in _by_path(report)["odd-photo.jpg"]["flags"]


def test_label_errors_and_class_balance(curated) -> None:
    _, _, report, _ = curated
    flagged = {i["path"]: i for i in report["images"] if "label_error" in i["flags"]}
    misfiled = {f"trouser/misfiled{i:03d}.png" for i in range(3)}
    assert misfiled <= set(flagged)
    assert len(flagged) <= 5  # few false alarms
    assert {flagged[p]["suggested_label"] for p in misfiled} == {"sneaker"}
    assert report["label_errors"]["checked"]
    classes = report["classes"]
    assert classes["counts"] == {"bag": 4, "sneaker": 12, "trouser": 15}
    assert classes["imbalanced"] and classes["minority"] == ["bag"]


def test_groups_recover_the_items_and_carry_the_guess(curated) -> None:
    _, _, report, _ = curated
    assert report["grouping"]["of"] == "unlabeled" and report["grouping"]["k"] == 3
    members = [m for c in report["clusters"] for m in c["members"]]
    readable = [
        i["path"] for i in report["images"] if i["label"] is None and i["flags"] != ["corrupt"]
    ]
    assert sorted(members) == sorted(readable)  # every unlabeled image in exactly one group
    hits = 0
    for cluster in report["clusters"]:
        kinds = Counter(m.split("-")[0] for m in cluster["members"] if not m.startswith("odd-"))
        hits += kinds.most_common(1)[0][1] if kinds else 0
        top = kinds.most_common(1)[0][0] if kinds else None
        if top in ("trouser", "sneaker") and kinds[top] >= 8:
            assert cluster["guess"] == top
        assert cluster["typical"] == cluster["members"][: len(cluster["typical"])]
    assert hits / 36 >= 0.85  # purity of the groups on the items


def test_page_is_self_contained(curated) -> None:
    _, out, _, _ = curated
    html = (out / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script" not in html
    assert html.count("data:image/jpeg;base64,") >= 36
    assert html.count("data:image/png;base64,") == 2  # class balance and the map
    for flag in ("blurry", "duplicate", "outlier", "label_error", "corrupt"):
        assert f"<h3>{flag}:" in html
    assert "odd-broken.jpg" in html


def test_gmm_with_k_from_bic(curated, embedding_cache) -> None:
    root, _, _, before = curated
    report = curate(
        root, None, method="gmm", image_size=EMBED_SIZE, cache_dir=embedding_cache, progress=False
    )
    grouping = report["grouping"]
    assert grouping["method"] == "gmm" and grouping["chosen_by"].startswith("bic")
    assert 2 <= grouping["k"] <= 20 and len(grouping["scores"]) >= 10
    assert report["settings"]["embeddings"]["computed"] == 0  # all from the cache
    assert _tree(root) == before


def test_bad_folders_and_settings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["curate", str(tmp_path / "missing"), "-q"]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["curate", str(tmp_path / "empty"), "-q"]) == 2
    assert "no images found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curate", str(tmp_path), "--clusters", "zero"])
    assert "expected auto or a number" in capsys.readouterr().err
    with pytest.raises(CurateError, match="unknown method"):
        curate(tmp_path, method="dbscan")  # type: ignore[arg-type]
