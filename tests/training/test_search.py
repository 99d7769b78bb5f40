"""kestrel train with no model flags: the data profile, the candidates it leads to, the time
budget, an interrupted search, raw-pixel baselines and a real (tiny) search end to end.

Real images: scikit-learn's 8x8 handwritten digits, written as 8x8 PNG files (tiny,
grayscale, few per class: the case where a 224-px pretrained model is the wrong default).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training-side test: needs the 'train' extra")

from device.inference.bundle import load_bundle
from device.paths import REPO_ROOT
from training import search as search_mod
from training.candidates import lite0_size, plan_candidates, small_cnn_size
from training.comparison import baseline_verdict, raw_pixels
from training.config import TrainConfig
from training.data import load_dataset
from training.profile import profile_dataset
from training.train import TrainError, train


def _profile(root: Path):
    return profile_dataset(load_dataset(root, "multiclass", progress=False))


def test_profile_sees_tiny_grey_few_shot_data(tiny_digits):
    profile = _profile(tiny_digits)
    assert (profile.native_size, profile.smallest, profile.largest) == (8, 8, 8)
    assert profile.grayscale and not profile.mixed_modes
    assert profile.tiny and profile.few_shot
    assert profile.classes == 5 and profile.images == 120
    assert any("small dataset" in note for note in profile.notes)


def test_profile_names_sizes_and_modes_that_differ(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(6):
            side = 16 if i % 2 else 200  # wildly different sizes
            image = rng.integers(0, 255, (side, side + 10, 3), dtype=np.uint8)
            if i % 3 == 0:
                image = image[..., 0]  # some grey files among colour ones
            cv2.imwrite(str(tmp_path / label / f"{i}.png"), image)
    profile = _profile(tmp_path)
    assert profile.mixed_modes and not profile.grayscale
    assert (profile.smallest, profile.largest) == (16, 200)
    text = " ".join(profile.notes)
    assert "differ in size" in text and "centre-cropped" in text and "grayscale" in text


def test_input_sizes_follow_the_native_size():
    assert [lite0_size(n) for n in (8, 25, 28, 56, 500)] == [96, 128, 128, 224, 224]
    assert [small_cnn_size(n) for n in (8, 25, 28, 200)] == [8, 24, 28, 64]


def test_candidates_adapt_and_explicit_settings_win(tiny_digits):
    profile = _profile(tiny_digits)
    base = TrainConfig(task="multiclass")
    names = [c.name for c in plan_candidates(profile, base)]
    assert sorted(names) == ["lite0-finetune", "lite0-head", "small-cnn"]
    small = next(c for c in plan_candidates(profile, base) if c.name == "small-cnn")
    assert small.overrides == {
        "backbone": "small-cnn", "image_size": 8, "grayscale": True, "flip": profile.flip
    }  # fmt: skip
    lite = next(c for c in plan_candidates(profile, base) if c.name == "lite0-head")
    assert lite.overrides["image_size"] == 96  # not 224
    only = plan_candidates(profile, base.override(backbone="small-cnn", image_size=16))
    assert [(c.name, c.size) for c in only] == [("small-cnn", 16)]
    assert "lite0-finetune" not in [
        c.name for c in plan_candidates(profile, base.override(fine_tune=False))
    ]
    assert [c.name for c in plan_candidates(profile, base.override(grayscale=True))] == [
        "small-cnn"
    ]
    fast = plan_candidates(profile, base.override(fast=True))
    assert len(fast) == 1 and not fast[0].overrides.get("fine_tune")
    other = plan_candidates(profile, base.override(backbone="mobilenetv2-0.35"))
    assert [(c.name, c.size) for c in other] == [("mobilenetv2-0.35", 96)]


def test_round_one_compares_only_candidates_that_do_not_fine_tune(tiny_digits):
    """Fine-tuning refines the head it starts from (and keeps it when it does not help): a
    quarter of the data and an epoch cannot judge it, so it skips round 1 and goes on."""
    import dataclasses

    profile = _profile(tiny_digits)
    config = TrainConfig(task="multiclass")
    runs = [search_mod.Run(c, c.config(config), {}) for c in plan_candidates(profile, config)]
    large = dataclasses.replace(profile, train_images=search_mod.SCREEN_MIN_TRAIN)
    screened = search_mod.round_one(runs, large)
    assert sorted(r.candidate.name for r in screened) == ["lite0-head", "small-cnn"]
    assert search_mod.round_one(runs, profile) == []  # 120 images: every candidate in full
    no_cnn = [r for r in runs if r.candidate.name != "small-cnn"]
    assert search_mod.round_one(no_cnn, large) == []  # nothing to compare the head with


def test_the_winner_is_the_best_score_and_within_half_a_point_the_smallest_model(tiny_digits):
    """Within half a point the small CNN (fastest on the device) wins; five points apart, the
    better one does, even on 20 validation images. Models of one size: the better score."""
    from types import SimpleNamespace

    config = TrainConfig(task="multiclass")
    found = {c.name: c for c in plan_candidates(_profile(tiny_digits), config)}

    def pick(n_val, scores):
        runs = []
        for name, (score, size_mb) in scores.items():
            run = search_mod.Run(found[name], config, {"input": "-", "size_mb": size_mb})
            run.score, run.data = score, SimpleNamespace(y_val=np.zeros(n_val))
            run.exported = SimpleNamespace(format_name="int8")
            runs.append(run)
        winner, why = search_mod._pick(runs)
        return winner.candidate.name, why

    assert pick(20, {"small-cnn": (0.85, 0.1), "lite0-head": (0.90, 4.0)})[0] == "lite0-head"
    name, why = pick(1000, {"small-cnn": (0.897, 0.1), "lite0-head": (0.90, 4.0)})
    assert name == "small-cnn" and "within 0.5 points of the best: the smaller model" in why
    same_size = {"lite0-head": (0.881, 4.0), "lite0-finetune": (0.878, 4.0)}
    assert pick(20, same_size)[0] == "lite0-head"
    assert pick(20, {**same_size, "lite0-finetune": (0.9, 4.0)})[0] == "lite0-finetune"


def test_a_budget_too_small_says_so_before_training(tiny_digits, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(search_mod, "train_model", no_training)
    config = TrainConfig(task="multiclass", time_budget=0.05)
    with pytest.raises(TrainError, match=r"time budget 0.05 min is too small.*--time-budget \d"):
        train(tiny_digits, tmp_path / "out", config, progress=False)
    assert not (tmp_path / "out").exists()


def test_the_time_kept_after_the_search_grows_with_the_images(tiny_digits):
    """The gate, baselines and learning curve take longer on more images: a flat reserve let
    16,000 Fashion-MNIST images (10,000 of them test) overrun the 15-minute budget."""
    small = _profile(tiny_digits)
    large = dataclasses.replace(small, images=16000, train_images=5100)
    config = TrainConfig(task="multiclass")
    kept_small = search_mod.reserve_seconds(config, small)
    kept_large = search_mod.reserve_seconds(config, large)
    assert kept_large - kept_small == pytest.approx(
        search_mod.RESERVE_MS_PER_IMAGE / 1000 * (16000 - small.images)
    )
    assert kept_large > 204  # at least what the gate and the baselines took there
    assert search_mod.budget_seconds(config, large, elapsed=10.0) == pytest.approx(
        15 * 60 - 10.0 - kept_large
    )


def test_finalists_share_the_time_left_by_their_estimated_cost():
    """An equal split gave a small CNN half of the time and left Lite0 fine-tuning 4 epochs."""
    config = TrainConfig(task="multiclass")
    runs = [
        search_mod.Run(search_mod.Candidate(name, {}, "", seconds), config, {})
        for name, seconds in (("small-cnn", 100.0), ("lite0-finetune", 300.0))
    ]
    assert search_mod._share(runs) == pytest.approx(0.25)
    assert search_mod._share(runs[1:]) == pytest.approx(1.0)  # the last one gets all that is left
    # A cheap run gets at least its cheapest useful run (a head's 255 s of lookups and
    # export), not a 25 % share smaller than that; never more than is left.
    assert search_mod._allowed(runs, left=400.0, cheapest=255.0) == 255.0
    assert search_mod._allowed(runs, left=200.0, cheapest=255.0) == 200.0
    assert search_mod._allowed(runs, left=2000.0, cheapest=50.0) == pytest.approx(500.0)


def test_ctrl_c_during_the_search_leaves_the_old_bundle_whole(tiny_digits, tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    shutil.copytree(REPO_ROOT / "models" / "imagenet-efficientnet-lite0", out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(search_mod, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_digits, out, TrainConfig(task="multiclass"), progress=False)
    assert calls
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no half-written folder
    load_bundle(out)


def test_raw_pixel_features_and_the_plain_verdict():
    pixels = np.full((3, 32, 32, 3), 255, np.uint8)
    features = raw_pixels(pixels, 8, grayscale=True)
    assert features.shape == (3, 64) and np.allclose(features, 1.0)
    baselines = {"SVM · raw pixels 8x8x1": {"accuracy": 0.99}, "tree": {"accuracy": 0.5}}
    lost = baseline_verdict({"accuracy": 0.95}, baselines, "multiclass")
    assert lost["beats"] is False and lost["message"].startswith("NO candidate beats")
    assert "SVM · raw pixels 8x8x1" in lost["message"]
    won = baseline_verdict({"accuracy": 0.995}, baselines, "multiclass")
    assert won["beats"] is True and "beats every" in won["message"]


def test_search_on_tiny_digits_end_to_end(tiny_digits, tmp_path, capsys):
    """Two real candidates (fine-tuning left out to keep CI short): each trained, exported
    to int8 and scored on validation through the device runtime; the winner is the bundle."""
    config = TrainConfig(
        task="multiclass", fine_tune=False, flip="none", epochs=15, calibration_images=60
    )
    started = time.perf_counter()
    result = train(tiny_digits, tmp_path / "b", config, progress=True)
    assert time.perf_counter() - started < config.time_budget * 60
    assert result.passed and result.bundle_path is not None
    report = json.loads((result.bundle_path / "report.json").read_text())
    rows = {row["name"]: row for row in report["search"]["candidates"]}
    assert set(rows) == {"lite0-head", "small-cnn"}
    assert rows["lite0-head"]["input"] == "96x96x3" and rows["small-cnn"]["input"] == "8x8x1"
    for row in rows.values():
        assert 0 <= row["val_exported"] <= 1 and row["seconds"] > 0 and row["size_mb"] > 0
    winner = rows[report["search"]["winner"]]
    assert winner["status"] == "winner"
    spec = load_bundle(result.bundle_path).manifest.input
    assert f"{spec.height}x{spec.width}x{spec.channels}" == winner["input"]
    raw = [name for name in report["baselines"] if "raw pixels 8x8x1" in name]
    assert len(raw) == 5 and any("embeddings" in name for name in report["baselines"])
    assert report["baseline_verdict"]["message"]
    markdown = (result.bundle_path / "report.md").read_text()
    assert "## Model search" in markdown and report["search"]["why"] in markdown
    kept = report["search"]["reserved_after_search_s"]
    assert kept > search_mod.RESERVE_S and f"of which {kept} s were kept for the gate" in markdown
    err = capsys.readouterr().err
    assert "search: " + report["search"]["why"] in err
    assert "small dataset" in err


@pytest.mark.long  # by hand: pytest -m long (see README, Development)
def test_a_second_run_embeds_only_the_new_files(tiny_digits, tmp_path, monkeypatch, capsys):
    """The frozen backbone's embeddings live in the on-disk cache (keyed by file content,
    backbone and size): after adding images, only those go through the backbone again."""
    monkeypatch.setenv("KESTREL_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    shutil.copytree(tiny_digits, data)
    config = TrainConfig(
        task="multiclass", backbone="efficientnet-lite0", image_size=32, fine_tune=False,
        augment_copies=1, epochs=3, calibration_images=30, max_int8_drop=100.0,
    )  # fmt: skip
    train(data, tmp_path / "b1", config, progress=True)
    first = capsys.readouterr().err
    assert "embedding cache:" not in first  # nothing to reuse on the first run
    for k, source in enumerate(sorted((data / "digit0").iterdir())[:3]):
        image = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(data / "digit0" / f"new{k}.png"), np.rot90(image))  # new content
    train(data, tmp_path / "b2", config, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "embedding cache:" in line]
    computed = sum(int(line.split(" reused, ")[1].split()[0]) for line in lines)
    reused = sum(int(line.split("cache: ")[1].split()[0]) for line in lines)
    assert computed == 3 and reused == 120


_DISTRIBUTED = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from training.config import TrainConfig
from training.train import train
out = {}
for distribute in (False, True):
    config = TrainConfig(task="multiclass", backbone="small-cnn", flip="none", epochs=6,
                         calibration_images=20, max_int8_drop=100.0, distribute=distribute)
    report = train(Path(sys.argv[1]), Path(sys.argv[2]) / str(distribute), config,
                   progress=False).report
    out[str(distribute)] = [report["float"]["accuracy"], report["training"].get("distributed")]
print("RESULT", json.dumps(out))
"""


@pytest.mark.long  # by hand: pytest -m long (see README, Development)
def test_distribute_runs_under_mirrored_strategy_on_two_logical_cpus(tiny_digits, tmp_path):
    """--distribute on a CPU split into two logical devices (a fresh process: devices are
    configured before TensorFlow starts); the figures agree with the plain run."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED, str(tiny_digits), str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    (plain, _), (mirrored, how) = result["False"], result["True"]
    assert how == "MirroredStrategy, 2 replicas"
    assert abs(plain - mirrored) <= 0.15 and mirrored >= 0.7
