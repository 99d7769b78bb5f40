"""The training benchmarks of issue 3, on real images available offline. Run by hand, not in CI.

Each benchmark builds its dataset with :mod:`training.tools.benchmark_datasets`, runs the real ``kestrel train``
path (:func:`training.train.train`, what the command calls), then checks the written bundle
independently: every test image is read from disk and classified by the device's
:class:`device.inference.engine.Classifier`, exactly as ``kestrel classify`` does. It prints the figures,
a PASS / MISS line per target, and the wall times.

=============  ==========================================================  =====================
benchmark      data                                                        targets
=============  ==========================================================  =====================
multiclass     Fashion-MNIST, 600 / class from train, the full 10k test    int8 acc >= 0.90,
                                                                           int8 within 1.0 point
                                                                           of float, <= 15 min
hierarchical   the same pictures under tops / bottoms / dress / footwear   level-1 acc >= 0.97
               / bag
multilabel     2x2 mosaics of the same items (1,500 train, 2,500 test),    mAP >= 0.90 (and
               labels = the classes present                                exact-match accuracy)
binary         skimage's LFW subset, face vs no-face, 30 / class held out  accuracy >= 0.95
=============  ==========================================================  =====================

Usage (from the repository root; one benchmark at a time suits a 2-core machine)::

    python bench/train_benchmarks.py                       # all four (~30 min)
    python bench/train_benchmarks.py --only multiclass --set fine_tune=false
    python bench/train_benchmarks.py --only binary --set augment_copies=5 --set zoom=0.2
    python bench/train_benchmarks.py --work bench-work      # keep datasets and bundles there

Settings: each benchmark's own (:data:`BENCHMARK_SETTINGS`) < ``--set key=value`` (any
:class:`training.config.TrainConfig` field, value parsed as YAML) < the shortcut flags.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from device.inference.bundle import load_bundle  # noqa: E402
from device.inference.engine import Classifier  # noqa: E402
from device.inference.preprocess import read_image  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.tools import benchmark_datasets as datasets  # noqa: E402

FIFTEEN_MINUTES = 15 * 60.0

#: Per-benchmark settings on top of TrainConfig's defaults (the trainer's defaults are what a
#: user gets; these say what each benchmark needs beyond them, and why).
#: Fashion-MNIST items are 28-pixel grey product shots, centred and upright, far from ImageNet:
#: the features need adapting (fine-tuning), 128 pixels hold all their detail at a third of
#: the cost of 224, and rotating or re-framing them only makes training unlike the test set
#: (measured: rotation 0.05 and 3 augmented copies cost 3.4 points on the head alone).
FASHION_MNIST = {"image_size": 128, "fine_tune": True, "rotation": 0.0, "augment_copies": 1}
BENCHMARK_SETTINGS: dict[str, dict[str, Any]] = {
    "multiclass": FASHION_MNIST,
    "hierarchical": FASHION_MNIST,
    # A 56-pixel mosaic holds four items: 224 pixels give each item what 128 gives one.
    "multilabel": FASHION_MNIST | {"image_size": 224},
    "binary": {},  # the trainer's defaults (25-pixel face crops reach the target as they are)
}


@dataclass
class Check:
    """One target: a figure, the limit, and whether it was met."""

    name: str
    value: float | None
    limit: float
    higher_is_better: bool = True
    unit: str = ""

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        shown = "n/a" if self.value is None else f"{self.value:.4g}{self.unit}"
        verdict = "PASS" if self.passed else "MISS"
        return f"{verdict}  {self.name}: {shown} (target {op} {self.limit:g}{self.unit})"


@dataclass
class Outcome:
    name: str
    figures: dict[str, Any]
    checks: list[Check]


# ----------------------------------------------------------------------------- helpers


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % confidence interval of an accuracy measured on ``n`` images (Wilson score)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def held_out_images(data: Path) -> list[tuple[Path, str]]:
    """(file, leaf label) of every image under ``data/test`` (label = its folder's name)."""
    return [(p, p.parent.name) for p in sorted((data / "test").rglob("*.png"))]


def classify_files(bundle: Path, files: Sequence[Path], top_k: int = 5) -> tuple[list[Any], float]:
    """The device's answers for image files (read from disk, as ``kestrel classify`` does),
    and the mean milliseconds per image of the whole pipeline (read, preprocess, invoke,
    decode)."""
    classifier = Classifier(bundle, accelerator="cpu", top_k=top_k)
    answers = []
    start = time.perf_counter()
    for path in files:
        answers.append(classifier.classify(read_image(str(path)), "BGR"))
    ms = (time.perf_counter() - start) * 1e3 / max(len(files), 1)
    return answers, ms


def _changed(config: TrainConfig) -> dict[str, Any]:
    """The settings that differ from TrainConfig's defaults (the task aside)."""
    defaults = TrainConfig()
    return {k: v for k, v in config.to_dict().items() if k != "task" and v != getattr(defaults, k)}


def _say(text: str = "") -> None:
    print(text, flush=True)


def _figure(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def run_training(
    name: str, data: Path, bundle: Path, config: TrainConfig, progress: bool
) -> tuple[dict[str, Any], float]:
    """``kestrel train`` (force: keep the bundle even if the gate fails, to measure it)."""
    from training.train import train

    _say(f"[{name}] kestrel train {data} --task {config.task} --out {bundle}")
    changed = _changed(config)
    _say(f"[{name}] settings changed from the defaults: {changed or 'none'}")
    start = time.perf_counter()
    result = train(data, bundle, config, force=True, progress=progress)
    wall = time.perf_counter() - start
    report = result.report
    _say(f"[{name}] trained in {wall:.0f} s; phases (s): {result.timings}")
    training = {k: v for k, v in report.get("training", {}).items() if not k.startswith("seconds")}
    _say(f"[{name}] training: {training}")
    _say(f"[{name}] gate: {result.gate.get('message')}")
    baselines = {
        k: v.get("map", v.get("accuracy")) if "skipped" not in v else "skipped"
        for k, v in (report.get("baselines") or {}).items()
    }
    _say(f"[{name}] classical baselines on the same embeddings: {baselines}")
    return report, wall


def _float_int8_lines(name: str, report: dict[str, Any], keys: Sequence[str]) -> None:
    for key in keys:
        _say(
            f"[{name}] {key:>20}: float {_figure(report['float'].get(key))}  "
            f"int8 {_figure(report['int8'].get(key))}"
        )
    _say(
        f"[{name}] invoke latency p50 (ms): "
        f"float {report['float'].get('latency_ms', {}).get('p50')}  "
        f"int8 {report['int8'].get('latency_ms', {}).get('p50')}"
    )


# ----------------------------------------------------------------------------- benchmarks


def bench_multiclass(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "multiclass"
    data, bundle = work / "data", work / "bundle"
    start = time.perf_counter()
    datasets.write_fashion_mnist_multiclass(data, per_class, "all", seed=0, overwrite=True)
    built = time.perf_counter() - start
    report, wall = run_training(name, data, bundle, config, progress)
    _float_int8_lines(name, report, ("accuracy", "macro_f1"))
    drop = (report["float"]["accuracy"] - report["int8"]["accuracy"]) * 100

    files = held_out_images(data)
    answers, ms = classify_files(bundle, [p for p, _ in files], top_k=1)
    correct = sum(a.scores[0].label == label for a, (_, label) in zip(answers, files, strict=True))
    low, high = wilson_interval(correct, len(files))
    _say(
        f"[{name}] device check (kestrel classify path, {len(files)} files, {ms:.1f} ms/img): "
        f"top-1 accuracy {correct / len(files):.4f} (95% CI {low:.4f}-{high:.4f})"
    )
    _say(f"[{name}] abstain (int8): {report['int8'].get('abstain')}")
    worst = sorted(report["int8"]["per_class"], key=lambda r: r["f1"])[:3]
    _say(f"[{name}] weakest classes (int8 F1): {[(r['label'], r['f1']) for r in worst]}")
    return Outcome(
        name,
        {
            "float_accuracy": report["float"]["accuracy"],
            "int8_accuracy": report["int8"]["accuracy"],
            "device_check_accuracy": round(correct / len(files), 4),
            "int8_drop_points": round(drop, 2),
            "train_wall_s": round(wall, 1),
            "dataset_build_s": round(built, 1),
            "test_images": len(files),
        },
        [
            Check("int8 accuracy", report["int8"]["accuracy"], 0.90),
            Check("int8 drop vs float", drop, 1.0, higher_is_better=False, unit=" pt"),
            Check("wall time of kestrel train", wall / 60, FIFTEEN_MINUTES / 60, False, " min"),
        ],
    )


def bench_hierarchical(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "hierarchical"
    data, bundle = work / "data", work / "bundle"
    datasets.write_fashion_mnist_hierarchical(data, per_class, "all", seed=0, overwrite=True)
    report, wall = run_training(name, data, bundle, config, progress)
    levels = {
        fmt: {row["level"]: row["accuracy"] for row in report[fmt]["levels"]}
        for fmt in ("float", "int8")
    }
    for level in sorted(levels["int8"]):
        _say(
            f"[{name}] level-{level} accuracy: float {_figure(levels['float'][level])}  "
            f"int8 {_figure(levels['int8'][level])}"
        )
    _float_int8_lines(name, report, ("accuracy", "argmax_leaf_accuracy"))
    _say(f"[{name}] back-off (int8): {report['int8'].get('backoff')}")

    taxonomy = datasets.FASHION_MNIST_TAXONOMY
    files = held_out_images(data)
    answers, ms = classify_files(bundle, [p for p, _ in files], top_k=1)
    top = [datasets.class_folder(label, taxonomy).parts[0] for _, label in files]
    # The device's answer with back-off: its path starts at the top level, or is empty
    # ("unknown") when no top-level node reaches the threshold.
    answered = [a.path[0].label if a.path else None for a in answers]
    right = sum(a == t for a, t in zip(answered, top, strict=True))
    unknown = sum(a is None for a in answered)
    has_path = sum(bool(a.path) for a in answers)
    _say(
        f"[{name}] device check ({len(files)} files, {ms:.1f} ms/img): the answer's top-level "
        f"node is right for {right / len(files):.4f} of images, unknown for "
        f"{unknown / len(files):.4f}; {has_path} answers carry a hierarchy path"
    )
    return Outcome(
        name,
        {
            **{f"level{k}_int8": v for k, v in levels["int8"].items()},
            **{f"level{k}_float": v for k, v in levels["float"].items()},
            "leaf_accuracy_int8": report["int8"]["accuracy"],
            "device_top_level_right": round(right / len(files), 4),
            "device_unknown_rate": round(unknown / len(files), 4),
            "train_wall_s": round(wall, 1),
        },
        [Check("level-1 accuracy (int8)", levels["int8"].get(1), 0.97)],
    )


def bench_multilabel(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    from sklearn.metrics import average_precision_score

    name = "multilabel"
    data, bundle = work / "data", work / "bundle"
    datasets.write_fashion_mnist_multilabel(data, per_class, "all", seed=0, overwrite=True)
    report, wall = run_training(name, data, bundle, config, progress)
    _float_int8_lines(name, report, ("map", "accuracy", "hamming_accuracy", "micro_f1"))

    rows = datasets.read_labels_csv(data / "test" / datasets.MULTILABEL_CSV)
    labels = load_bundle(bundle).labels
    files = [data / "test" / p for p in rows]
    answers, ms = classify_files(bundle, files, top_k=len(labels))
    truth = np.array([[label in rows[f.name] for label in labels] for f in files], dtype=int)
    scores = np.array([[{s.label: s.score for s in a.scores}[x] for x in labels] for a in answers])
    device_map = float(
        np.mean([average_precision_score(truth[:, j], scores[:, j]) for j in range(len(labels))])
    )
    exact = float(
        np.mean(
            [
                {x.label for x in a.labels} == set(rows[f.name])
                for a, f in zip(answers, files, strict=True)
            ]
        )
    )
    _say(
        f"[{name}] device check ({len(files)} mosaics, {ms:.1f} ms/img): mAP {device_map:.4f}, "
        f"exact-match accuracy {exact:.4f}"
    )
    return Outcome(
        name,
        {
            "map_float": report["float"]["map"],
            "map_int8": report["int8"]["map"],
            "exact_match_int8": report["int8"]["accuracy"],
            "device_check_map": round(device_map, 4),
            "device_check_exact_match": round(exact, 4),
            "train_wall_s": round(wall, 1),
        },
        [Check("mAP (int8)", report["int8"]["map"], 0.90)],
    )


def bench_binary(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "binary"
    data, bundle = work / "data", work / "bundle"
    # A fixed held-out test split of 30 faces + 30 non-faces; val is carved out of train/.
    datasets.write_lfw_binary(data, seed=0, test_per_class=30, overwrite=True)
    report, wall = run_training(name, data, bundle, config, progress)
    _float_int8_lines(name, report, ("accuracy", "roc_auc", "average_precision"))

    files = held_out_images(data)
    answers, ms = classify_files(bundle, [p for p, _ in files], top_k=2)
    correct = sum(a.label == label for a, (_, label) in zip(answers, files, strict=True))
    low, high = wilson_interval(correct, len(files))
    _say(
        f"[{name}] device check ({len(files)} held-out files, {ms:.1f} ms/img): accuracy "
        f"{correct / len(files):.4f} at the calibrated threshold (95% CI {low:.3f}-{high:.3f})"
    )
    return Outcome(
        name,
        {
            "float_accuracy": report["float"]["accuracy"],
            "int8_accuracy": report["int8"]["accuracy"],
            "device_check_accuracy": round(correct / len(files), 4),
            "test_images": len(files),
            "train_wall_s": round(wall, 1),
        },
        [Check("accuracy (int8, held out)", report["int8"]["accuracy"], 0.95)],
    )


BENCHMARKS: dict[str, tuple[str, Callable[..., Outcome]]] = {
    "multiclass": ("multiclass", bench_multiclass),
    "hierarchical": ("hierarchical", bench_hierarchical),
    "multilabel": ("multilabel", bench_multilabel),
    "binary": ("binary", bench_binary),
}


# ----------------------------------------------------------------------------- CLI


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_benchmarks.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--only", choices=list(BENCHMARKS), action="append", help="run only this")
    parser.add_argument("--work", type=Path, default=None, help="keep datasets and bundles here")
    parser.add_argument("--per-class", type=int, default=600, help="Fashion-MNIST train / class")
    parser.add_argument(
        "--set", dest="settings", type=_setting, action="append", default=[], metavar="KEY=VALUE"
    )
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--fine-tune", action="store_true", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="kestrel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    _say(f"work folder: {work}")
    flags = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "fine_tune": args.fine_tune,
        "seed": args.seed,
    }
    outcomes: list[Outcome] = []
    for name in args.only or list(BENCHMARKS):
        task, run = BENCHMARKS[name]
        config = TrainConfig().override(
            source=f"benchmark {name}", task=task, **BENCHMARK_SETTINGS[name]
        )
        config = config.override(source="--set", **dict(args.settings)).override(
            source="flags", **flags
        )
        _say(f"\n=== {name} ===")
        start = time.perf_counter()
        outcome = run(work / name, config, args.per_class, not args.quiet)
        outcome.figures["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
        outcome.figures["settings"] = _changed(config)
        for check in outcome.checks:
            _say(f"[{name}] {check.line()}")
        _say(f"[{name}] benchmark wall time {outcome.figures['benchmark_wall_s']:.0f} s")
        outcomes.append(outcome)

    _say("\n=== summary ===")
    for outcome in outcomes:
        for check in outcome.checks:
            _say(f"{outcome.name:>12}  {check.line()}")
    if args.json:
        args.json.write_text(
            json.dumps({o.name: o.figures for o in outcomes}, indent=2, default=str) + "\n"
        )
    return 0 if all(c.passed for o in outcomes for c in o.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
