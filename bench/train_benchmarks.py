"""The training benchmarks, on real images available offline. Run by hand, not in CI.

Each benchmark builds its dataset with :mod:`training.tools.benchmark_datasets`, runs the real
``kestrel train`` path (:func:`training.train.train`, what the command calls), then checks the
written bundle independently: every test image is read from disk and classified by the device's
:class:`device.inference.engine.Classifier`, exactly as ``kestrel classify`` does. It prints the
figures, a PASS / MISS line per target, and the wall times.

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
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

_CHECKOUT = str(Path(__file__).resolve().parents[1])
if _CHECKOUT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, _CHECKOUT)

from bench.train_harness import (  # noqa: E402
    Check,
    Outcome,
    changed_settings,
    classify_files,
    device_accuracy,
    figure_text,
    float_int8_lines,
    held_out_images,
    prepare_and_train,
    say,
)
from device.inference.bundle import load_bundle  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import CSV_NAME, read_labels_csv  # noqa: E402
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


def bench_multiclass(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "multiclass"
    run = prepare_and_train(
        name,
        work,
        config,
        progress,
        lambda data: datasets.write_fashion_mnist_multiclass(
            data, per_class, "all", seed=0, overwrite=True
        ),
        ("accuracy", "macro_f1"),
    )
    report = run.report
    drop = (report["float"]["accuracy"] - report["int8"]["accuracy"]) * 100
    minutes = run.wall_s / 60

    files = held_out_images(run.data)
    correct, low, high, ms = device_accuracy(run.bundle, files, 1, lambda a: a.scores[0].label)
    say(
        f"[{name}] device check (kestrel classify path, {len(files)} files, {ms:.1f} ms/img): "
        f"top-1 accuracy {correct / len(files):.4f} (95% CI {low:.4f}-{high:.4f})"
    )
    say(f"[{name}] abstain (int8): {report['int8'].get('abstain')}")
    worst = sorted(report["int8"]["per_class"], key=lambda r: r["f1"])[:3]
    say(f"[{name}] weakest classes (int8 F1): {[(r['label'], r['f1']) for r in worst]}")
    return Outcome(
        name,
        {
            "float_accuracy": report["float"]["accuracy"],
            "int8_accuracy": report["int8"]["accuracy"],
            "device_check_accuracy": round(correct / len(files), 4),
            "int8_drop_points": round(drop, 2),
            "train_wall_s": round(run.wall_s, 1),
            "dataset_build_s": round(run.dataset_s, 1),
            "test_images": len(files),
        },
        [
            Check("int8 accuracy", report["int8"]["accuracy"], 0.90),
            Check("int8 drop vs float", drop, 1.0, higher_is_better=False, unit=" pt"),
            Check("wall time of kestrel train", minutes, FIFTEEN_MINUTES / 60, False, " min"),
        ],
    )


def bench_hierarchical(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "hierarchical"
    run = prepare_and_train(
        name,
        work,
        config,
        progress,
        lambda data: datasets.write_fashion_mnist_hierarchical(
            data, per_class, "all", seed=0, overwrite=True
        ),
        None,  # printed below, after the per-level accuracies
    )
    report = run.report
    levels = {
        fmt: {row["level"]: row["accuracy"] for row in report[fmt]["levels"]}
        for fmt in ("float", "int8")
    }
    for level in sorted(levels["int8"]):
        say(
            f"[{name}] level-{level} accuracy: float {figure_text(levels['float'][level])}  "
            f"int8 {figure_text(levels['int8'][level])}"
        )
    float_int8_lines(name, report, ("accuracy", "argmax_leaf_accuracy"))
    say(f"[{name}] back-off (int8): {report['int8'].get('backoff')}")

    taxonomy = datasets.FASHION_MNIST_TAXONOMY
    files = held_out_images(run.data)
    answers, ms = classify_files(run.bundle, [p for p, _ in files], top_k=1)
    top = [datasets.class_folder(label, taxonomy).parts[0] for _, label in files]
    # The device's answer with back-off: its path starts at the top level, or is empty
    # ("unknown") when no top-level node reaches the threshold.
    answered = [a.path[0].label if a.path else None for a in answers]
    right = sum(a == t for a, t in zip(answered, top, strict=True))
    unknown = sum(a is None for a in answered)
    has_path = sum(bool(a.path) for a in answers)
    say(
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
            "train_wall_s": round(run.wall_s, 1),
        },
        [Check("level-1 accuracy (int8)", levels["int8"].get(1), 0.97)],
    )


def bench_multilabel(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    from sklearn.metrics import average_precision_score

    name = "multilabel"
    run = prepare_and_train(
        name,
        work,
        config,
        progress,
        lambda data: datasets.write_fashion_mnist_multilabel(
            data, per_class, "all", seed=0, overwrite=True
        ),
        ("map", "accuracy", "hamming_accuracy", "micro_f1"),
    )
    report = run.report

    rows = read_labels_csv(run.data / "test" / CSV_NAME)
    labels = load_bundle(run.bundle).labels
    files = [run.data / "test" / p for p in rows]
    answers, ms = classify_files(run.bundle, files, top_k=len(labels))
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
    say(
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
            "train_wall_s": round(run.wall_s, 1),
        },
        [Check("mAP (int8)", report["int8"]["map"], 0.90)],
    )


def bench_binary(work: Path, config: TrainConfig, per_class: int, progress: bool) -> Outcome:
    name = "binary"
    run = prepare_and_train(
        name,
        work,
        config,
        progress,
        # A fixed held-out test split of 30 faces + 30 non-faces; val is carved out of train/.
        lambda data: datasets.write_lfw_binary(data, seed=0, test_per_class=30, overwrite=True),
        ("accuracy", "roc_auc", "average_precision"),
    )
    report = run.report

    files = held_out_images(run.data)
    correct, low, high, ms = device_accuracy(run.bundle, files, 2, lambda a: a.label)
    say(
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
            "train_wall_s": round(run.wall_s, 1),
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
    say(f"work folder: {work}")
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
        say(f"\n=== {name} ===")
        start = time.perf_counter()
        outcome = run(work / name, config, args.per_class, not args.quiet)
        outcome.figures["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
        outcome.figures["settings"] = changed_settings(config)
        for check in outcome.checks:
            say(f"[{name}] {check.line()}")
        say(f"[{name}] benchmark wall time {outcome.figures['benchmark_wall_s']:.0f} s")
        outcomes.append(outcome)

    say("\n=== summary ===")
    for outcome in outcomes:
        for check in outcome.checks:
            say(f"{outcome.name:>12}  {check.line()}")
    if args.json:
        args.json.write_text(
            json.dumps({o.name: o.figures for o in outcomes}, indent=2, default=str) + "\n"
        )
    return 0 if all(c.passed for o in outcomes for c in o.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
