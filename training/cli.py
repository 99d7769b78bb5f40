"""Workstation subcommands of ``kestrel``: registered into the device CLI's parser.

Importing this module must stay cheap (no TensorFlow): the device's ``kestrel`` builds its
parser with it on every call. TensorFlow, scikit-learn and the training modules are imported
inside the command functions.

Exit codes: 0 success, 2 unusable data / settings / bundle (the message says which),
3 the exported model failed the accuracy gate (no bundle written unless ``--force``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
from pathlib import Path
from typing import get_args

from device.inference.bundle import TASK_TYPES
from training.config import ConfigError, ExportFormatName, FlipMode, TrainConfig
from training.curate.cli import register as register_curate
from training.label.cli import register as register_label
from training.models import BACKBONES

EXIT_DATA = 2
EXIT_GATE = 3
TRAIN_EXTRA = "pip install -e '.[train]'"

# Flags that map one to one onto TrainConfig fields: (flag, field, type, help).
_CONFIG_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--image-size", "image_size", int, "square input size in pixels (default: the backbone's)"),
    ("--epochs", "epochs", int, "maximum epochs (early stopping usually ends sooner)"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--learning-rate", "learning_rate", float, "learning rate of the head / end-to-end"),
    ("--seed", "seed", int, "seed of the split, augmentation and initialization"),
    (
        "--max-int8-drop",
        "max_int8_drop",
        float,
        "the gate: accuracy points (mAP for multilabel) the exported model may lose against "
        "the float model on the test split (default 1.0)",
    ),
    (
        "--time-budget",
        "time_budget",
        float,
        "minutes the whole run may take; the model search fits in it (default 15)",
    ),
    ("--positive", "positive", str, "binary: name of the positive class"),
    ("--labels-csv", "labels_csv", str, "multilabel: CSV of path,label1;label2"),
    ("--taxonomy-file", "taxonomy_file", str, "hierarchical: taxonomy file"),
)


def _backbone_help() -> str:
    return "; ".join(f"{name}: {spec.description}" for name, spec in BACKBONES.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``eval`` to the ``kestrel`` command line."""
    train = subparsers.add_parser(
        "train",
        help="train a classifier on a folder of labeled images into a bundle",
        description="Train an image classifier on labeled images, export it (full int8 by "
        "default), check it against the float model through the device runtime (the accuracy "
        "gate) and write a bundle with its report. Settings: defaults < --config file < flags.",
    )
    train.add_argument("data", type=Path, help="folder of labeled images")
    train.add_argument(
        "--task", choices=TASK_TYPES, default=None, help="task type (required here or in --config)"
    )
    train.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    train.add_argument("--backbone", choices=list(BACKBONES), default=None, help=_backbone_help())
    for flag, _, kind, text in _CONFIG_FLAGS:
        train.add_argument(flag, type=kind, default=None, help=text)
    train.add_argument(
        "--fine-tune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train the top blocks of a pretrained backbone (slower, often better); "
        "--no-fine-tune: never (default: the search decides)",
    )
    train.add_argument(
        "--fast",
        action="store_true",
        default=None,
        help="a quick first model: the cheapest suitable candidate, no search",
    )
    train.add_argument(
        "--distribute",
        action="store_true",
        default=None,
        help="fit under tf.distribute.MirroredStrategy (all GPUs of the machine)",
    )
    train.add_argument(
        "--format",
        choices=list(get_args(ExportFormatName)),
        default=None,
        help="export format (default int8: uint8 input, CPU and Edge TPU)",
    )
    train.add_argument(
        "--flip",
        choices=list(get_args(FlipMode)),
        default=None,
        help="random mirroring of training images (default: horizontal, or none when the "
        "data shows that left and right matter)",
    )
    train.add_argument("--config", type=Path, default=None, help="YAML file of settings")
    train.add_argument(
        "--force",
        action="store_true",
        help="write the bundle even if it fails the accuracy gate (recorded in its report)",
    )
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=cmd_train)
    _register_eval(subparsers)
    register_curate(subparsers)  # kestrel curate: training/curate/cli.py
    register_label(subparsers)  # kestrel label: training/label/cli.py


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="evaluate a bundle on a labeled folder through the device runtime",
        description="Run a bundle through the device runtime (not TensorFlow) on labeled "
        "images and write the same report as kestrel train.",
    )
    evaluate.add_argument("bundle", type=Path, help="bundle folder")
    evaluate.add_argument("data", type=Path, help="folder of labeled images")
    evaluate.add_argument(
        "--split",
        choices=["test", "all"],
        default="test",
        help="test (default): the test split that kestrel train makes of this folder (its "
        "test/ folder, or the same seeded split: pass the training --seed); all: every image, "
        "for a folder kept apart from training",
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the split for --split test (default 0)"
    )
    evaluate.add_argument("--labels-csv", type=Path, default=None, help="multilabel: CSV")
    evaluate.add_argument("--taxonomy-file", type=Path, default=None, help="taxonomy file")
    evaluate.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="where to write report.json / report.md / confusion.png "
        "(default: ./eval-<bundle>-<data>)",
    )
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_eval)


def _missing_training_deps() -> str | None:
    for module in ("tensorflow", "sklearn", "tqdm", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            return (
                f"kestrel: this command needs the training extras ({module} is not installed); "
                f"install them with: {TRAIN_EXTRA}"
            )
    return None


def _error(message: str) -> None:
    text = str(message)
    print(text if text.startswith("kestrel:") else f"kestrel: {text}", file=sys.stderr)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags. Raises ConfigError."""
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    task_in_file = False
    if args.config:
        import yaml

        raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        task_in_file = "task" in raw
    if args.task is None and not task_in_file:
        raise ConfigError("--task is required (binary, multiclass, multilabel or hierarchical)")
    values = {field: getattr(args, field) for _, field, _, _ in _CONFIG_FLAGS}
    values.update(
        task=args.task,
        backbone=args.backbone,
        fine_tune=args.fine_tune,
        fast=args.fast,
        distribute=args.distribute,
        export_format=args.format,
        flip=args.flip,
    )
    return config.override(source="command line", **values)


def _command_line(args: argparse.Namespace) -> str:
    """The kestrel train command as given (rebuilt from the parsed options)."""
    parts = ["train", str(args.data), "--out", str(args.out)]
    for name in ("task", "backbone", "format", "flip", "config"):
        if getattr(args, name) is not None:
            parts += [f"--{name}", str(getattr(args, name))]
    for flag, field, _, _ in _CONFIG_FLAGS:
        if getattr(args, field) is not None:
            parts += [flag, str(getattr(args, field))]
    parts += (
        [] if args.fine_tune is None else ["--fine-tune" if args.fine_tune else "--no-fine-tune"]
    )
    parts += ["--fast"] if args.fast else []
    parts += ["--distribute"] if args.distribute else []
    parts += ["--force"] if args.force else []
    return "kestrel " + shlex.join(parts)


def cmd_train(args: argparse.Namespace) -> int:
    missing = _missing_training_deps()
    if missing:
        _error(missing)
        return EXIT_DATA
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_DATA
    # TensorFlow's C++ info lines would drown the progress bars; warnings and errors stay.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

    from training.data import DataError
    from training.train import TrainError, train

    try:
        result = train(
            args.data,
            args.out,
            config,
            force=args.force,
            progress=not args.quiet,
            command=_command_line(args),
        )
    except (DataError, TrainError, ConfigError) as exc:
        _error(str(exc))
        return EXIT_DATA
    if not result.passed and not args.force:
        return EXIT_GATE
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    missing = _missing_training_deps()
    if missing:
        _error(missing)
        return EXIT_DATA
    from device.inference.bundle import BundleError
    from training.data import DataError
    from training.evaluate import evaluate_bundle
    from training.report import write_report

    report_dir = args.report_dir or Path(f"eval-{args.bundle.name}-{args.data.name}")
    try:
        result = evaluate_bundle(
            args.bundle,
            args.data,
            split=args.split,
            seed=args.seed,
            labels_csv=args.labels_csv,
            taxonomy_file=args.taxonomy_file,
            progress=not args.quiet,
        )
    except (DataError, BundleError, ValueError) as exc:
        _error(str(exc))
        return EXIT_DATA
    write_report(report_dir, result)
    print(f"kestrel: report written to {report_dir}", file=sys.stderr)
    return 0
