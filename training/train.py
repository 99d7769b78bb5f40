"""``kestrel train``: labeled images -> a tested, quantized bundle, with an int8 accuracy gate.

The steps, each timed (``TrainResult.timings``):

1. load and check the dataset (:mod:`training.data`): a bad dataset fails before training;
2. decode every image once through the device's own preprocessing;
3. train (:mod:`training.strategies`, built on :mod:`training.fit`): pretrained backbone
   -> frozen, embeddings of a few augmented copies of every training image cached once, a
   small head trained on them (optionally followed by fine-tuning the top blocks on pixels);
   random-init backbone -> end to end on pixels;
4. export the chosen format (int8 quantized with real training images as representative data,
   :mod:`training.export`) and a float32 reference;
5. run both through the device runtime: thresholds calibrated on each one's validation
   outputs, metrics on the test split, the gate (``max_int8_drop``, :mod:`training.gate`);
6. classical baselines on the same embeddings and split;
7. write the bundle with its report (:mod:`training.manifest`), atomically, unless the gate
   failed (then only with ``force``, and the failure is recorded in the manifest and the
   report).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.inference.bundle import MANIFEST_FILE, write_bundle
from training import data as data_mod
from training import evaluate, metrics, report
from training.config import TrainConfig
from training.export import REFERENCE_FORMAT, convert_with_reference, representative_pixels
from training.gate import compare_float_int8
from training.manifest import (
    BundleIdentity,
    Evaluation,
    bundle_identity,
    default_command,
    manifest_fields,
    phase_line,
    train_report,
)
from training.models import get_backbone, input_spec, resolve_input
from training.phases import DecodedData, Phases, Setup, Trained, say
from training.strategies import train_model

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        bundle_path: The written bundle, or None when the gate failed without ``force``.
        report: Everything measured (what report.json holds).
        gate: The verdict of :func:`training.gate.compare_float_int8` (``passed``,
            ``drop_points``, ``message``, ...).
        timings: Wall seconds per phase.
    """

    bundle_path: Path | None
    report: dict[str, Any]
    gate: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.gate.get("passed"))


class TrainError(ValueError):
    """A training request that cannot run (e.g. an output folder that is not a bundle)."""


@dataclass(frozen=True)
class _Exported:
    """The converted models: the chosen format and the float32 reference."""

    format_name: str
    model: bytes
    reference: bytes
    representative_images: int  # how many images int8 quantization was calibrated on


# --------------------------------------------------------------------------------------------
# Settings and data


def _resolve_setup(config: TrainConfig) -> Setup:
    try:
        backbone = get_backbone(config.backbone)
        size, channels = resolve_input(backbone, config.image_size, config.grayscale)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    dtype = "uint8" if config.export_format == "int8" else "float32"
    return Setup(backbone, size, channels, input_spec(size, channels, dtype))


def _check_out_dir(out_dir: Path, data_root: Path) -> None:
    """Refuse to replace anything but a bundle: write_bundle swaps the folder wholesale."""
    out, root = out_dir.resolve(), data_root.resolve()
    if out == root or root in out.parents or out in root.parents:
        raise TrainError(f"{out_dir}: the output folder must lie outside the data folder")
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file())
    ):
        raise TrainError(
            f"{out_dir}: exists and is not a Kestrel bundle; refusing to replace it "
            "(choose another --out or remove it)"
        )


def _load_data(
    data_root: Path, config: TrainConfig, setup: Setup, phases: Phases, progress: bool
) -> DecodedData:
    with phases("data"):
        dataset = data_mod.load_dataset(
            data_root,
            config.task,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
            min_images_per_class=config.min_images_per_class,
            positive=config.positive,
            taxonomy_file=config.taxonomy_file,
            labels_csv=config.labels_csv,
            progress=progress,
        )
    splits = (dataset.train, dataset.val, dataset.test)
    with phases("pixels"):
        pixels = [data_mod.load_pixels(split, setup.input, progress=progress) for split in splits]
    targets = [data_mod.target_array(split, dataset.labels, config.task) for split in splits]
    if progress:
        train_px, val_px, test_px = pixels
        say(
            f"{len(train_px)} train / {len(val_px)} val / {len(test_px)} test images, "
            f"{len(dataset.labels)} labels; {setup.backbone.name} at "
            f"{setup.size}x{setup.size}x{setup.channels}"
        )
    return DecodedData(dataset, *pixels, *targets)


def _export(trained: Trained, data: DecodedData, config: TrainConfig, progress: bool) -> _Exported:
    images = representative_pixels(
        data.train_px, config.calibration_images, trained.augmenter, config.seed
    )
    fmt = config.export_format
    model_bytes, reference_bytes = convert_with_reference(
        trained.model, fmt, images, progress=progress
    )
    return _Exported(fmt, model_bytes, reference_bytes, len(images))


# --------------------------------------------------------------------------------------------
# The gate and the baselines

_Measured = dict[str, tuple[dict[str, Any], metrics.Calibration]]


def _measure_through_device(
    identity: BundleIdentity,
    exported: _Exported,
    data: DecodedData,
    setup: Setup,
    config: TrainConfig,
    progress: bool,
) -> _Measured:
    """Test metrics and calibration of the reference and the exported model, each measured on
    a temporary bundle through the device runtime."""
    runs = [(REFERENCE_FORMAT, exported.reference, "float32")]
    if exported.format_name != REFERENCE_FORMAT:
        runs.append((exported.format_name, exported.model, setup.input.dtype))
    eval_px = np.concatenate([data.val_px, data.test_px])
    measured: _Measured = {}
    with tempfile.TemporaryDirectory(prefix="kestrel-gate-") as tmp:
        for name, model_bytes, dtype in runs:
            fields = identity.fields_for(model_bytes, name, dtype)
            bundle = write_bundle(Path(tmp) / name, model_bytes, fields)
            if progress:
                say(f"evaluating the {name} model through the device runtime")
            run = evaluate.run_bundle(bundle, eval_px, progress=progress)
            measured[name] = _figures(run.probs, run.latency_ms, name, data, config)
    return measured


def _figures(
    probs: np.ndarray, latency_ms: Any, scheme: str, data: DecodedData, config: TrainConfig
) -> tuple[dict[str, Any], metrics.Calibration]:
    """Calibration on the validation outputs, metrics with it on the test outputs."""
    dataset, n_val = data.dataset, len(data.val_px)
    val_probs, test_probs = probs[:n_val], probs[n_val:]
    # Each model gets thresholds fitted to its own outputs: the device compares the exported
    # model's (int8) numbers with them.
    calibration = metrics.calibrate(
        config.task, val_probs, data.y_val, dataset.labels, dataset.taxonomy
    )
    section = metrics.compute_metrics(
        config.task,
        test_probs,
        data.y_test,
        dataset.labels,
        calibration.thresholds,
        dataset.taxonomy,
    )
    section |= {"latency_ms": latency_ms, "scheme": scheme}
    return section, calibration


def _judge(measured: _Measured, config: TrainConfig, force: bool) -> Evaluation:
    fmt = config.export_format
    (reference, _), (candidate, calibration) = measured[REFERENCE_FORMAT], measured[fmt]
    gate = compare_float_int8(reference, candidate, config.max_int8_drop)
    gate["format"] = fmt
    gate["forced"] = bool(force and not gate["passed"])
    say(("gate passed: " if gate["passed"] else "GATE FAILED: ") + gate["message"])
    return Evaluation(reference, candidate, calibration, gate)


def _baselines(
    trained: Trained, data: DecodedData, config: TrainConfig, phases: Phases, progress: bool
) -> dict[str, dict[str, Any]]:
    if progress:
        say("classical baselines on the same embeddings")
    with phases("baselines"):
        return metrics.baselines(
            trained.baseline_train,
            data.y_train,
            trained.test_embeddings,
            data.y_test,
            config.task,
            seed=config.seed,
        )


# --------------------------------------------------------------------------------------------
# The whole run


def train(
    data_root: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train, export, gate and write a bundle; see the module docstring for the steps.

    Args:
        data_root: The labeled image folder.
        out_dir: The bundle folder to write (replaced atomically if it holds a bundle).
        config: Hyper-parameters.
        force: Write the bundle even when the exported model fails the accuracy gate (the
            failure is recorded in its manifest and report).
        progress: Progress bars and status lines on stderr.
        command: The command line to record in the manifest (default: rebuilt from config).

    Raises:
        training.data.DataError: The dataset is unusable (before any training).
        TrainError, ValueError: Impossible settings (e.g. an image size too small).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    config.validate()
    phases = Phases()
    started = time.perf_counter()
    setup = _resolve_setup(config)
    _check_out_dir(out_dir, data_root)

    data = _load_data(data_root, config, setup, phases, progress)
    trained = train_model(setup, data, config, phases, progress)
    with phases("export"):
        exported = _export(trained, data, config, progress)
    identity = bundle_identity(
        out_dir.name,
        data.dataset,
        config,
        setup.backbone,
        (setup.size, setup.channels),
        trained.activation,
        command or default_command(data_root, config),
    )
    with phases("gate"):
        measured = _measure_through_device(identity, exported, data, setup, config, progress)
    evaluation = _judge(measured, config, force)
    baselines = _baselines(trained, data, config, phases, progress)

    phases.seconds["total"] = round(time.perf_counter() - started, 2)
    result_report = train_report(
        identity,
        data.dataset,
        config,
        evaluation,
        baselines,
        _training_section(trained, exported, phases),
        pretrained=setup.backbone.pretrained,
    )
    if not evaluation.gate["passed"] and not force:
        say(f"no bundle written to {out_dir} (use --force to write it anyway)")
        return TrainResult(None, result_report, evaluation.gate, dict(phases.seconds))

    fields = manifest_fields(
        identity, exported.model, setup.input.dtype, evaluation, data.dataset, baselines
    )
    bundle_path = _write(out_dir, exported, fields, result_report, phases)
    phases.seconds["total"] = round(time.perf_counter() - started, 2)
    if progress:
        say(
            f"wrote {bundle_path} ({len(exported.model) / 1e6:.2f} MB, {exported.format_name}) "
            f"in {phases.seconds['total']:.0f} s"
        )
    return TrainResult(bundle_path, result_report, evaluation.gate, dict(phases.seconds))


def _training_section(trained: Trained, exported: _Exported, phases: Phases) -> dict[str, Any]:
    """The report's "training" section (the backbone is added by the report)."""
    return {
        **trained.info,
        "export format": exported.format_name,
        "model size (MB)": round(len(exported.model) / 1e6, 3),
        "int8 calibration images": exported.representative_images,
        "seconds per phase": phase_line(phases.seconds),
    }


def _write(
    out_dir: Path,
    exported: _Exported,
    fields: dict[str, Any],
    result_report: dict[str, Any],
    phases: Phases,
) -> Path:
    """The bundle with its report files, written atomically."""
    with phases("write"), tempfile.TemporaryDirectory(prefix="kestrel-report-") as tmp:
        result_report["training"]["seconds per phase"] = phase_line(phases.seconds)
        report.write_report(Path(tmp), result_report)
        extra = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
        bundle = write_bundle(out_dir, exported.model, fields, extra_files=extra)
    return bundle.path


__all__ = ["TrainError", "TrainResult", "train"]
