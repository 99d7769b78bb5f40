"""The ``kestrel`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from device import __version__
from device.config import ConfigError
from device.inference.bundle import BundleError
from device.inference.decode import Prediction
from device.inference.preprocess import ImageError, read_image
from device.inference.runtime import RuntimeMissing, edgetpu_options
from device.ota.push import add_parser as add_push_parser
from device.paths import DEFAULT_MODEL, SAMPLES_DIR, is_image_file

if TYPE_CHECKING:
    from device.inference.engine import Classifier


def default_model() -> Path:
    """The bundle used when none is given: $KESTREL_MODEL, else the shipped ImageNet model."""
    return Path(os.environ.get("KESTREL_MODEL", DEFAULT_MODEL))


def iter_images(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders expanded (recursively, sorted) to their image files."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
        else:
            yield path


def format_prediction(path: Path, prediction: Prediction) -> str:
    """One line per image: the answer, the taxonomy path if any, the top scores."""
    answer = ", ".join(f"{x.label} ({x.score:.2f})" for x in prediction.labels) or "(none)"
    parts = [f"{path}: {answer}"]
    if prediction.path:
        parts.append("[" + " > ".join(x.label for x in prediction.path) + "]")
    parts.append("top: " + ", ".join(f"{x.label} {x.score:.2f}" for x in prediction.scores))
    return "  ".join(parts)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="bundle folder (default: $KESTREL_MODEL or the shipped ImageNet model)",
    )
    parser.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "edgetpu"],
        default="auto",
        help="Coral Edge TPU when available (auto), or force one (default: auto)",
    )
    parser.add_argument(
        "--accelerator-device",
        type=_coral_device,
        default=None,
        help="which Coral: ':0' (the first), 'usb', 'usb:1', 'pci', 'pci:0' (default: the first)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the interpreter (default: all cores)",
    )


def _classifier(args: argparse.Namespace, top_k: int = 5) -> Classifier:
    from device.inference.engine import Classifier

    return Classifier(
        args.model or default_model(),
        accelerator=args.accelerator,
        accelerator_device=args.accelerator_device,
        threads=args.threads,
        top_k=top_k,
    )


def cmd_classify(args: argparse.Namespace) -> int:
    classifier = _classifier(args, top_k=args.top_k)
    failures = 0
    seen = 0
    for path in iter_images(args.paths):
        seen += 1
        try:
            frame = read_image(str(path))
            prediction = classifier.classify(frame, "BGR")
        except (ImageError, OSError) as exc:
            failures += 1
            print(f"kestrel: {_image_problem(path, exc)}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": str(path), **prediction.to_dict()}), flush=True)
        else:
            print(format_prediction(path, prediction), flush=True)
    if seen == 0:
        print(f"kestrel: no images found in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    if failures:
        print(f"kestrel: {failures} of {seen} images could not be classified", file=sys.stderr)
        return 1
    return 0


def _image_problem(path: Path, exc: Exception) -> str:
    """An image error as one line that names the file once."""
    if isinstance(exc, OSError):  # without the raw errno: "nope.jpg: no such file"
        why = "no such file" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        return f"{path}: {why}"
    return str(exc) if str(path) in str(exc) else f"{path}: {exc}"


def cmd_bench(args: argparse.Namespace) -> int:
    from device.inference.latency import format_report, readable_images, run_benchmark

    paths = list(iter_images(args.images or [str(SAMPLES_DIR)]))
    images, problems = readable_images(paths)
    for problem in problems:
        print(f"kestrel: bench: skipping {problem}", file=sys.stderr)
    if not images:
        wanted = " ".join(args.images or [str(SAMPLES_DIR)])
        print(f"kestrel: bench: no readable image in {wanted}", file=sys.stderr)
        return 1
    classifier = _classifier(args)
    result = run_benchmark(classifier, images, iterations=args.iterations, rounds=args.rounds)
    print(format_report(result, classifier))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from device.config import load_config
    from device.config.checks import check_config
    from device.run.daemon import run

    # Validate everything before any camera or broker is touched.
    config = load_config(args.config)
    if args.model is not None:
        config = config.model_copy(update={"model": args.model})
    where = str(args.config) if args.config is not None else "(built-in defaults)"
    check_config(config, where, running=True)
    try:
        return run(config)
    except (ConfigError, BundleError) as exc:  # refused while starting: name the file too
        raise ConfigError(f"{where}: {exc}") from None


def cmd_config_check(args: argparse.Namespace) -> int:
    from device.capture import redact_url
    from device.config import load_config
    from device.config.checks import check_config

    config = load_config(args.file)
    for warning in check_config(config, str(args.file), running=False):
        print(f"kestrel: warning: {warning}", file=sys.stderr)
    shown = [redact_url(s) if "://" in s else s for s in (str(c.source) for c in config.cameras)]
    cameras = ", ".join(f"{c.name} ({s})" for c, s in zip(config.cameras, shown, strict=True))
    print(
        f"{args.file}: ok — device {config.device_id}, model {config.model.name}, "
        f"cameras: {cameras}"
    )
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from device.config import schema_text

    sys.stdout.write(schema_text())
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _coral_device(text: str) -> str:
    try:
        edgetpu_options(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("accelerator_device: ")) from None
    return text


def _print_help(parser: argparse.ArgumentParser) -> int:
    """A command group given alone (``kestrel config``): its subcommands, not a usage error."""
    parser.print_help()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kestrel", description="Image classification at the edge: train, run, publish."
    )
    parser.add_argument("--version", action="version", version=f"kestrel {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)

    classify = sub.add_parser("classify", help="classify image files or folders")
    classify.add_argument("paths", nargs="+", help="image files or folders of images")
    _add_model_options(classify)
    classify.add_argument("--top-k", type=int, default=5, help="scores shown per image")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.set_defaults(func=cmd_classify)

    bench = sub.add_parser("bench", help="time each stage of the inference pipeline")
    _add_model_options(bench)
    bench.add_argument("--images", nargs="*", help="images to decode (default: shipped samples)")
    bench.add_argument("--iterations", type=_positive, default=100, help="calls per round")
    bench.add_argument("--rounds", type=_positive, default=5, help="alternating measurement rounds")
    bench.set_defaults(func=cmd_bench)

    run = sub.add_parser("run", help="run the daemon: cameras -> labels -> MQTT")
    run.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML configuration (default: embedded defaults — the shipped model, "
        "a camera if present or the demo source, a mosquitto it starts itself)",
    )
    run.add_argument("--model", type=Path, default=None, help="override the configured bundle")
    run.set_defaults(func=cmd_run)

    config = sub.add_parser("config", help="check a configuration file, print the schema")
    config_sub = config.add_subparsers(dest="config_command")
    config.set_defaults(func=lambda args: _print_help(config))
    check = config_sub.add_parser("check", help="validate a YAML configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_config_check)
    schema = config_sub.add_parser("schema", help="print the JSON schema of the configuration")
    schema.set_defaults(func=cmd_config_schema)

    add_push_parser(sub)

    # Other halves (training: train, eval) add their commands through the entry-point group
    # "kestrel.commands", so the device never imports them by name.
    for entry_point in entry_points(group="kestrel.commands"):
        entry_point.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (BundleError, RuntimeMissing, ConfigError) as exc:
        print(f"kestrel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
