"""End to end, for each task type: real images -> ``kestrel train`` -> int8 bundle -> the device.

Each test builds a small subset of a real dataset (Fashion-MNIST, skimage's LFW faces), runs
the real command line (``kestrel train``, in process through ``device.cli.main``), then runs
the bundle through the device: ``kestrel classify`` and
:class:`device.inference.engine.Classifier` on the held-out images, and ``kestrel eval``. Tiny
inputs and small backbones keep each run to seconds; the figures asserted are "clearly above
chance", and the device's own answers must reproduce the report's test figures exactly (one
preprocessing, one runtime: no train/serve skew).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training-side test: needs the 'train' extra")

from device import cli
from device.inference.bundle import load_bundle
from device.inference.decode import UNKNOWN
from device.inference.engine import Classifier
from device.inference.preprocess import read_image
from training.data import CSV_NAME, read_labels_csv
from training.tools import benchmark_datasets as ds

pytestmark = pytest.mark.slow

REPORT_FILES = ("report.json", "report.md")


@pytest.fixture(scope="module")
def fashion_root() -> Path:
    root = ds.FASHION_MNIST_DIR
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST missing: apt-get install {ds.FASHION_MNIST_PACKAGE}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


def kestrel(*args: object) -> int:
    """The ``kestrel`` command line, in process."""
    return cli.main([str(a) for a in args])


def train(data: Path, out: Path, task: str, *options: object) -> dict:
    """``kestrel train`` with a generous int8 gate (a few dozen test images make it noisy;
    the gate itself is tested in the trainer's tests) -> the bundle's report.json."""
    code = kestrel("train", data, "--task", task, "--out", out, "--seed", 0, "-q", *options)
    assert code == 0, f"kestrel train exited {code}"
    bundle = load_bundle(out)  # the device's validation: manifest, labels, sha256
    assert bundle.manifest.task == task
    assert bundle.manifest.quantization.scheme == "int8"
    assert bundle.manifest.input.dtype == "uint8"
    for name in REPORT_FILES:
        assert (out / name).is_file(), f"{name} missing from the bundle"
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == task and report["int8"]["n"] > 0
    return report


def held_out(data: Path) -> list[tuple[Path, str]]:
    """(file, leaf label) of every image under data/test."""
    return [(p, p.parent.name) for p in sorted((data / "test").rglob("*.png"))]


def classify(bundle: Path, files: list[Path], top_k: int = 5) -> list:
    classifier = Classifier(bundle, accelerator="cpu", top_k=top_k)
    return [classifier.classify(read_image(str(p)), "BGR") for p in files]


def check_eval(bundle: Path, data: Path, tmp_path: Path, report: dict, key: str) -> dict:
    """``kestrel eval`` on the same data's test split reproduces the trainer's int8 figure."""
    out = tmp_path / "eval-report"
    assert kestrel("eval", bundle, data, "--report-dir", out, "-q") == 0
    for name in REPORT_FILES:
        assert (out / name).is_file()
    evaluated = json.loads((out / "report.json").read_text())
    assert evaluated["int8"]["n"] == report["int8"]["n"]
    assert evaluated["int8"][key] == pytest.approx(report["int8"][key], abs=1e-4)
    return evaluated


# ----------------------------------------------------------------------------- the four tasks


def test_multiclass_fashion_mnist(tmp_path: Path, fashion_root: Path, capsys) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    ds.write_fashion_mnist_multiclass(data, 20, 6, seed=0, root=fashion_root)
    report = train(
        data, bundle, "multiclass", "--backbone", "small-cnn", "--image-size", 32,
        "--epochs", 12, "--max-int8-drop", 20,
    )  # fmt: skip
    assert load_bundle(bundle).labels == sorted(ds.FASHION_MNIST_CLASSES)
    assert report["dataset"]["images"]["test"] == 60  # the given test/ folder
    assert report["int8"]["accuracy"] >= 0.4  # chance: 0.1
    assert (bundle / "confusion.png").is_file()
    # Classical baselines: five scikit-learn models on the same embeddings and five on raw
    # pixels (at the native 28 px, grey), each with a figure.
    names = list(report["baselines"])
    assert sum(n.endswith("· embeddings") for n in names) == 5
    assert sum(n.endswith("· raw pixels 28x28x1") for n in names) == 5 and len(names) == 10
    assert all(0 <= b["accuracy"] <= 1 for b in report["baselines"].values())

    files = held_out(data)
    answers = classify(bundle, [p for p, _ in files])
    top1 = np.mean(
        [a.scores[0].label == label for a, (_, label) in zip(answers, files, strict=True)]
    )
    assert top1 == pytest.approx(report["int8"]["accuracy"], abs=1e-4)

    capsys.readouterr()
    assert kestrel("classify", "--model", bundle, "--json", "--top-k", 3, files[0][0]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["task"] == "multiclass" and len(line["scores"]) == 3
    assert line["labels"][0]["label"] in {*ds.FASHION_MNIST_CLASSES, UNKNOWN}

    check_eval(bundle, data, tmp_path, report, "accuracy")


def test_binary_lfw_faces(tmp_path: Path) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    ds.write_lfw_binary(data, seed=0, per_class=50, test_per_class=10)
    report = train(
        data, bundle, "binary", "--backbone", "small-cnn", "--image-size", 32, "--epochs", 12
    )
    manifest = load_bundle(bundle).manifest
    assert manifest.labels == ["no-face", "face"]  # [negative, positive]
    assert 0 < manifest.thresholds.binary < 1
    assert report["int8"]["accuracy"] >= 0.75  # chance: 0.5

    files = held_out(data)
    answers = classify(bundle, [p for p, _ in files])
    accuracy = np.mean([a.label == label for a, (_, label) in zip(answers, files, strict=True)])
    assert accuracy == pytest.approx(report["int8"]["accuracy"], abs=1e-4)
    check_eval(bundle, data, tmp_path, report, "accuracy")


def test_multilabel_mosaics(tmp_path: Path, fashion_root: Path) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    ds.write_fashion_mnist_multilabel(data, 40, 12, seed=0, root=fashion_root)
    # The pretrained backbone (the default one, frozen, cached embeddings) at a small size.
    report = train(
        data, bundle, "multilabel", "--backbone", "efficientnet-lite0", "--image-size", 64,
        "--no-fine-tune",
        "--max-int8-drop", 20,
    )  # fmt: skip
    manifest = load_bundle(bundle).manifest
    assert set(manifest.thresholds.per_label) <= set(manifest.labels)
    assert manifest.labels == sorted(ds.FASHION_MNIST_CLASSES)
    # Chance mAP is the labels' frequency, about 0.34 for four items out of ten classes.
    assert report["int8"]["map"] >= 0.5

    rows = read_labels_csv(data / "test" / CSV_NAME)
    files = [data / "test" / name for name in rows]
    answers = classify(bundle, files, top_k=len(manifest.labels))
    truth = [set(rows[f.name]) for f in files]
    exact = np.mean([{x.label for x in a.labels} == t for a, t in zip(answers, truth, strict=True)])
    assert exact == pytest.approx(report["int8"]["accuracy"], abs=1e-4)
    # Ranking: a label that is present scores above one that is not, most of the time.
    hits = [
        np.mean([s.score for s in a.scores if s.label in t])
        > np.mean([s.score for s in a.scores if s.label not in t])
        for a, t in zip(answers, truth, strict=True)
    ]
    assert np.mean(hits) >= 0.7
    check_eval(bundle, data, tmp_path, report, "map")


def test_hierarchical_taxonomy(tmp_path: Path, fashion_root: Path) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    ds.write_fashion_mnist_hierarchical(data, 20, 6, seed=0, root=fashion_root)
    report = train(
        data, bundle, "hierarchical", "--backbone", "small-cnn", "--image-size", 32,
        "--epochs", 12, "--max-int8-drop", 20,
    )  # fmt: skip
    manifest = load_bundle(bundle).manifest
    assert manifest.taxonomy == ds.FASHION_MNIST_TAXONOMY
    assert set(manifest.labels) == set(ds.FASHION_MNIST_CLASSES)
    levels = {row["level"]: row["accuracy"] for row in report["int8"]["levels"]}
    assert levels[1] >= 0.6  # five top-level nodes; the largest, tops, is 40 % of the images

    files = held_out(data)
    answers = classify(bundle, [p for p, _ in files])
    with_path = 0
    for answer in answers:
        assert answer.task == "hierarchical"
        if answer.label == UNKNOWN:
            assert not answer.path
            continue
        with_path += 1
        nodes = [x.label for x in answer.path]
        assert nodes[-1] == answer.label
        assert manifest.taxonomy[nodes[0]] is None  # the path starts at the top level
        for parent, child in itertools.pairwise(nodes):
            assert manifest.taxonomy[child] == parent
        scores = [x.score for x in answer.path]
        assert scores == sorted(scores, reverse=True)  # a node holds its children's sum
    assert with_path >= len(files) // 2
    top_right = np.mean(
        [
            bool(a.path) and a.path[0].label == ds.class_folder(leaf, manifest.taxonomy).parts[0]
            for a, (_, leaf) in zip(answers, files, strict=True)
        ]
    )
    assert top_right >= 0.5
    check_eval(bundle, data, tmp_path, report, "accuracy")


# ----------------------------------------------------------------------------- bad files


def test_corrupt_files_are_skipped_and_reported(tmp_path: Path) -> None:
    data, bundle = tmp_path / "data", tmp_path / "bundle"
    ds.write_lfw_binary(data, seed=1, per_class=30)
    face = cv2.imread(str(next((data / "face").glob("*.png"))))
    jpeg = cv2.imencode(".jpg", cv2.resize(face, (100, 100)))[1].tobytes()
    (data / "face" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (data / "no-face" / "notes.jpg").write_text("not a picture, just text\n")

    report = train(
        data, bundle, "binary", "--backbone", "small-cnn", "--image-size", 32, "--epochs", 12
    )
    skipped = {item["path"]: item["reason"] for item in report["skipped"]}
    assert "truncated" in skipped["face/truncated.jpg"]
    assert "not a readable image" in skipped["no-face/notes.jpg"]
    markdown = (bundle / "report.md").read_text()
    assert "face/truncated.jpg" in markdown and "no-face/notes.jpg" in markdown
    assert sum(report["dataset"]["images"].values()) == 60  # the 60 real pictures, no more
