"""report.json / report.md / confusion.png from realistic reports of every task type."""

import json

import cv2
import numpy as np
import pytest

from training.gate import compare_float_int8
from training.metrics import calibrate, compute_metrics
from training.report import CONFUSION_PNG, REPORT_JSON, REPORT_MD, write_report

FASHION = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot"]  # fmt: skip
TAXONOMY = {
    "tops": None,
    "bottoms": None,
    "footwear": None,
    "dress": None,
    "bag": None,
    "T-shirt": "tops",
    "pullover": "tops",
    "coat": "tops",
    "shirt": "tops",
    "trouser": "bottoms",
    "sandal": "footwear",
    "sneaker": "footwear",
    "ankle boot": "footwear",
}
LEAVES = ["T-shirt", "pullover", "coat", "shirt", "trouser", "dress", "sandal", "sneaker",
          "ankle boot", "bag"]  # fmt: skip


def noisy_probs(targets, n_labels, accuracy, seed):
    """Probabilities of a classifier right about ``accuracy`` of the time."""
    rng = np.random.default_rng(seed)
    predicted = np.where(
        rng.random(len(targets)) < accuracy, targets, rng.integers(0, n_labels, len(targets))
    )
    probs = rng.dirichlet(np.ones(n_labels), len(targets)).astype(np.float32) * 0.4
    # Mistakes are less confident, as with real models (so abstaining can help).
    probs[np.arange(len(targets)), predicted] += np.where(predicted == targets, 0.6, 0.25)
    return probs / probs.sum(axis=1, keepdims=True)


def dataset_summary(labels, n_per_class=60):
    counts = {
        split: {label: n for label in labels}
        for split, n in (("train", n_per_class), ("val", 10), ("test", 20))
    }
    return {
        "root": "data/fashion",
        "task": "multiclass",
        "labels": labels,
        "split": "random, stratified (seed 0)",
        "images": {s: sum(c.values()) for s, c in counts.items()},
        "counts": counts,
        "image_size": {"min": [28, 28], "median": [28, 28], "max": [28, 28]},
        "skipped": [{"path": "coat/broken.jpg", "reason": "truncated JPEG"}],
        "warnings": [],
    }


def train_report(task, labels, probs_float, probs_int8, targets, taxonomy=None, val=None):
    calibration = calibrate(task, *(val or (probs_float, targets)), labels, taxonomy)
    float_m = compute_metrics(task, probs_float, targets, labels, calibration.thresholds, taxonomy)
    int8_m = compute_metrics(task, probs_int8, targets, labels, calibration.thresholds, taxonomy)
    latency = {"images": len(targets), "p50": 2.91, "p90": 3.4, "mean": 3.02, "threads": 2}
    float_m["latency_ms"] = latency | {"p50": 7.52}
    int8_m["latency_ms"] = latency
    int8_m["scheme"] = "int8"
    return {
        "kind": "train",
        "name": f"fashion-{task}",
        "task": task,
        "created_at": "2026-11-30T10:00:00+00:00",
        "dataset": dataset_summary(labels),
        "skipped": [{"path": "coat/broken.jpg", "reason": "truncated JPEG"}],
        "warnings": ["class 'bag' has 3x fewer images than 'coat'"],
        "thresholds": calibration.thresholds,
        "calibration": calibration.notes,
        "float": float_m,
        "int8": int8_m,
        "gate": compare_float_int8(float_m, int8_m),
        "baselines": {
            "k-nearest neighbours (k=5)": {"accuracy": 0.8123, "seconds": 1.1, "train_size": 600},
            "logistic regression": {"accuracy": 0.8541, "seconds": 2.0, "train_size": 600},
            "SVM (RBF kernel)": {"skipped": "the training data holds a single class"},
        },
        "training": {"backbone": "efficientnet-lite0", "epochs": 12, "seconds": 95.3},
    }


def read_outputs(out):
    assert (out / REPORT_JSON).is_file() and (out / REPORT_MD).is_file()
    return json.loads((out / REPORT_JSON).read_text()), (out / REPORT_MD).read_text()


def check_png(path, min_side=400):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} does not open"
    assert min(image.shape[:2]) >= min_side and max(image.shape[:2]) <= 2500
    assert image.std() > 10  # not a blank canvas
    return image


def test_multiclass_train_report(tmp_path):
    targets = np.repeat(np.arange(10), 30)
    report = train_report(
        "multiclass",
        FASHION,
        noisy_probs(targets, 10, 0.92, 0),
        noisy_probs(targets, 10, 0.89, 1),
        targets,
    )
    write_report(tmp_path, report)
    data, md = read_outputs(tmp_path)
    assert data["gate"] == report["gate"]
    check_png(tmp_path / CONFUSION_PNG)
    int8, float_ = report["int8"], report["float"]
    assert f"| accuracy | {float_['accuracy']:.3f} | {int8['accuracy']:.3f} |" in md
    verdict = "PASSED" if report["gate"]["passed"] else "FAILED"
    assert f"**int8 accuracy gate: {verdict}** — {report['gate']['message']}" in md
    shirt = next(r for r in int8["per_class"] if r["label"] == "shirt")
    assert f"| shirt | {shirt['precision']:.3f} | {shirt['recall']:.3f} | {shirt['f1']:.3f} |" in md
    assert f"]({CONFUSION_PNG})" in md
    assert "| logistic regression | 0.854 | 2.00 | 600 |" in md
    assert "skipped: the training data holds a single class" in md
    assert "`coat/broken.jpg`: truncated JPEG" in md
    assert "| int8 | 2.91 | 3.40 | 3.02 | 300 | 2 |" in md
    assert "epochs: 12" in md
    assert "| T-shirt | 60 | 10 | 20 |" in md  # dataset counts


def test_multiclass_report_with_abstain(tmp_path):
    targets = np.repeat(np.arange(10), 30)
    probs = noisy_probs(targets, 10, 0.8, 2)
    report = train_report("multiclass", FASHION, probs, probs, targets)
    assert report["thresholds"]["abstain"] is not None
    write_report(tmp_path, report)
    _, md = read_outputs(tmp_path)
    abstain = report["int8"]["abstain"]
    assert "## Abstaining" in md
    assert f"| coverage (answered) | {100 * abstain['coverage']:.1f} %" in md
    assert f'"unknown" when the top score is below {abstain["threshold"]:.3f}' in md
    assert abstain["unknown_rate"] <= 0.05  # the default rule's promise (4 % on validation)
    assert (tmp_path / "coverage.png").read_bytes()[:4] == b"\x89PNG"
    assert "](coverage.png)" in md


def test_binary_report(tmp_path):
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, 120)
    scores = np.clip(rng.normal(0.3 + 0.4 * targets, 0.15), 0, 1).astype(np.float32)
    report = train_report("binary", ["no_person", "person"], scores, scores + 0.01, targets)
    write_report(tmp_path, report)
    data, md = read_outputs(tmp_path)
    image = check_png(tmp_path / CONFUSION_PNG)
    assert image.shape[0] < 1000  # two classes: a small figure
    assert f"| ROC AUC | {report['float']['roc_auc']:.3f}" in md
    assert f"positive class at P >= {report['thresholds']['binary']:.3f}" in md
    assert "| true \\ predicted | no_person | person |" in md  # small matrix as text too
    assert data["int8"]["confusion_matrix"] == report["int8"]["confusion_matrix"]


def test_multilabel_report(tmp_path):
    rng = np.random.default_rng(4)
    labels = FASHION[:6]
    targets = (rng.random((200, 6)) < 0.3).astype(np.float32)
    probs = np.clip(targets * 0.6 + rng.random((200, 6)) * 0.5, 0, 1).astype(np.float32)
    report = train_report("multilabel", labels, probs, np.clip(probs - 0.02, 0, 1), targets)
    report["dataset"]["unlabeled"] = {"train": 12, "val": 2, "test": 3}
    write_report(tmp_path, report)
    _, md = read_outputs(tmp_path)
    assert not (tmp_path / CONFUSION_PNG).exists()  # no confusion matrix for multilabel
    int8 = report["int8"]
    assert f"| mAP | {report['float']['map']:.3f} | {int8['map']:.3f} |" in md
    assert f"mAP {int8['map']:.3f} · micro F1 {int8['micro_f1']:.3f}" in md
    row = int8["per_class"][0]
    threshold = report["thresholds"]["per_label"][row["label"]]
    assert f"| {row['support']} | {row['ap']:.3f} | {threshold:.3f} |" in md
    assert "| (no label) | 12 | 2 | 3 |" in md
    assert "exact-match accuracy" in md


def test_hierarchical_report(tmp_path):
    targets = np.repeat(np.arange(10), 40)
    val = (noisy_probs(targets, 10, 0.85, 7), targets)
    report = train_report(
        "hierarchical",
        LEAVES,
        noisy_probs(targets, 10, 0.9, 5),
        noisy_probs(targets, 10, 0.88, 6),
        targets,
        TAXONOMY,
        val,
    )
    write_report(tmp_path, report)
    _, md = read_outputs(tmp_path)
    check_png(tmp_path / CONFUSION_PNG)
    int8 = report["int8"]
    level1 = int8["levels"][0]["accuracy"]
    assert (
        f"| accuracy at level 1 | {report['float']['levels'][0]['accuracy']:.3f} | {level1:.3f} |"
        in md
    )
    assert "## Hierarchy" in md
    backoff = int8["backoff"]
    float_accuracy = report["float"]["backoff"]["accuracy"]
    row = f"| answer correct (true leaf or an ancestor) | {float_accuracy:.3f} | "
    assert f"{row}{backoff['accuracy']:.3f} |" in md
    assert f"{backoff['mean_depth']:.2f} of 2" in md
    assert any("hierarchy threshold" in note for note in report["calibration"])


def test_eval_report_without_float_or_baselines(tmp_path):
    """``kestrel eval``: one section, no gate, no baselines, no training facts."""
    targets = np.repeat(np.arange(10), 5)
    section = compute_metrics("multiclass", noisy_probs(targets, 10, 0.9, 8), targets, FASHION, {})
    section["latency_ms"] = {"images": 50, "p50": 3.1, "p90": 3.5, "mean": 3.2, "threads": 2}
    section["scheme"] = "float16"
    report = {"kind": "eval", "name": "fashion", "task": "multiclass", "int8": section}
    write_report(tmp_path / "new" / "folder", report)
    data, md = read_outputs(tmp_path / "new" / "folder")
    assert data == json.loads(json.dumps(report))
    assert f"| accuracy | {section['accuracy']:.3f} |" in md
    assert "| float16 |" in md  # the column says what the bundle is
    for absent in ("gate", "## Baselines", "## Training", "float F1"):
        assert absent not in md


def test_confusion_png_readable_for_40_classes(tmp_path):
    labels = [f"class number {i}" for i in range(40)]
    targets = np.repeat(np.arange(40), 5)
    section = compute_metrics("multiclass", noisy_probs(targets, 40, 0.7, 9), targets, labels, {})
    write_report(tmp_path, {"task": "multiclass", "int8": section})
    image = check_png(tmp_path / CONFUSION_PNG, min_side=1000)
    assert image.shape[1] >= image.shape[0]  # room for the colour bar


def test_numpy_values_are_written_as_json(tmp_path):
    report = {"task": "binary", "training": {"epochs": np.int64(3), "loss": np.float32(0.25)}}
    write_report(tmp_path, report)
    data, md = read_outputs(tmp_path)
    assert data["training"] == {"epochs": 3, "loss": 0.25}
    assert "- epochs: 3" in md
    with pytest.raises(TypeError, match="cannot write a object"):
        write_report(tmp_path, {"task": "binary", "training": {"x": object()}})


def test_trainer_layout_with_latency_and_thresholds_per_section(tmp_path):
    """The trainer keeps latency and thresholds per section at the top level."""
    targets = np.repeat(np.arange(10), 30)
    report = train_report(
        "multiclass", FASHION, noisy_probs(targets, 10, 0.8, 2), noisy_probs(targets, 10, 0.8, 3),
        targets,
    )  # fmt: skip
    report["latency_ms"] = {k: report[k].pop("latency_ms") for k in ("float", "int8")}
    report["thresholds"] = {"float": {"abstain": 0.41}, "int8": report["thresholds"]}
    report["config"] = {"epochs": 30, "learning_rate": 0.001, "augment": ["flip", "rotate"]}
    report["timings_s"] = {"embeddings": 41.2, "gate": 12.0}
    report["export_format"] = "int8"
    report["model_bytes"] = 4_200_000
    write_report(tmp_path, report)
    data, md = read_outputs(tmp_path)
    assert data["latency_ms"]["int8"]["p50"] == 2.91  # report.json: exactly as given
    assert "| int8 | 2.91 | 3.40 | 3.02 | 300 | 2 |" in md
    abstain = report["thresholds"]["int8"]["abstain"]
    assert f"below {abstain:.3f}" in md  # the shipped model's thresholds
    assert "export format: int8 · model size: 4.20 MB" in md
    assert "- learning_rate: 0.001" in md and "- augment: [flip, rotate]" in md
    assert "- embeddings: 41.2" in md
