"""``kestrel train``: labeled images -> a tested, quantized bundle, with an int8 accuracy gate.

The steps, each timed (``TrainResult.timings``):

1. load and check the dataset (:mod:`training.data`): a bad dataset fails before training;
2. profile it (:mod:`training.profile`: native sizes, colour or grey, images per class) and
   choose the model (:mod:`training.search`): the candidates the data and the explicit
   settings allow (:mod:`training.candidates`: frozen Lite0 head, Lite0 fine-tuned, a small
   CNN at native size for tiny images), screened on a subset, the finalists trained in full,
   exported and scored on validation within ``time_budget``; a budget too small for any
   candidate is an error before training. Each candidate decodes the images once through
   the device's preprocessing and trains as :mod:`training.strategies` says;
3. export the winner (int8 calibrated on real training images, :mod:`training.export`) and a
   float32 reference;
4. run both through the device runtime: thresholds calibrated on each one's validation
   outputs, metrics on the test split, the gate (``max_int8_drop``, :mod:`training.gate`);
   when int8 fails it, re-quantize with other calibration images first
   (:mod:`training.remedies`);
5. classical baselines on the embeddings and on raw pixels, a plain verdict against the best,
   and the learning curve (:mod:`training.comparison`, :mod:`training.learning_curve`);
6. write the bundle with its report (:mod:`training.manifest`), atomically, unless the gate
   failed (then only with ``force``, and the failure is recorded in the manifest and the
   report). Nothing is written before this step: Ctrl-C leaves no half-written bundle.
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
from training.comparison import compare
from training.config import TrainConfig
from training.data import Pixels
from training.export import REFERENCE_FORMAT, Exported, export_model, with_reference
from training.gate import compare_float_int8
from training.inputs import SetupError, resolve_setup
from training.manifest import (
    BundleIdentity,
    Evaluation,
    bundle_identity,
    default_command,
    manifest_fields,
    phase_line,
    train_report,
)
from training.phases import DecodedData, Phases, Setup, Trained, say
from training.profile import profile_dataset
from training.remedies import try_remedies
from training.search import BudgetError, Chosen, choose_model

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


# --------------------------------------------------------------------------------------------
# Settings and data


def _check_settings(config: TrainConfig) -> None:
    """Impossible explicit settings (e.g. Lite0 at 8 px) fail before any image is read."""
    if config.backbone is not None:
        try:
            resolve_setup(config)
        except SetupError as exc:
            raise TrainError(str(exc)) from None


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


def _load_dataset(
    data_root: Path, config: TrainConfig, phases: Phases, progress: bool
) -> data_mod.Dataset:
    with phases("data"):
        return data_mod.load_dataset(
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


def _choose(
    dataset: data_mod.Dataset,
    config: TrainConfig,
    phases: Phases,
    started: float,
    progress: bool,
) -> Chosen:
    """Profile the data, then search (or just train what the settings name)."""
    profile = profile_dataset(dataset, progress=False)
    if progress:
        say(profile.line())
        for note in profile.notes:
            say(note)
    begun = time.perf_counter()
    try:
        chosen = choose_model(dataset, profile, config, elapsed=begun - started, progress=progress)
    except (BudgetError, SetupError) as exc:
        raise TrainError(str(exc)) from None
    phases.seconds.update(chosen.phases)  # the final model's own phases
    if len(chosen.section["candidates"]) > 1:  # all of the search, the final model's included
        phases.seconds["search"] = round(time.perf_counter() - begun, 2)
    if progress:
        data, setup = chosen.data, chosen.setup
        say(
            f"{len(data.train_px)} train / {len(data.val_px)} val / {len(data.test_px)} test "
            f"images, {len(dataset.labels)} labels; {setup.backbone.name} at "
            f"{setup.size}x{setup.size}x{setup.channels}"
        )
        if len(chosen.section["candidates"]) > 1:
            say(f"search: {chosen.section['why']}")
    return chosen


def _export(trained: Trained, data: DecodedData, config: TrainConfig, progress: bool) -> Exported:
    return export_model(
        trained.model,
        data.train_px,
        config.export_format,
        config.calibration_images,
        trained.augmenter,
        config.seed,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# The gate and the baselines

_Measured = dict[str, tuple[dict[str, Any], metrics.Calibration]]


def _measure_through_device(
    identity: BundleIdentity,
    exported: Exported,
    data: DecodedData,
    setup: Setup,
    config: TrainConfig,
    progress: bool,
    reference: bool = True,
) -> _Measured:
    """Test metrics and calibration of the reference (unless ``reference`` is False) and the
    exported model, each measured on a temporary bundle through the device runtime."""
    runs = [(REFERENCE_FORMAT, exported.reference, "float32")] if reference else []
    if exported.format_name != REFERENCE_FORMAT:
        runs.append((exported.format_name, exported.model, setup.input.dtype))
    eval_px = Pixels.join(data.val_px, data.test_px)
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


def _gate(
    identity: BundleIdentity, exported: Exported, chosen: Chosen, force: bool, progress: bool
) -> tuple[Exported, Evaluation, list[dict[str, Any]]]:
    """The gate on the exported model; when int8 fails it, the remedies before refusing."""
    config, data, setup = chosen.config, chosen.data, chosen.setup
    measured = _measure_through_device(identity, exported, data, setup, config, progress)
    evaluation = _judge(measured, config, force)
    if evaluation.gate["passed"] or config.export_format != "int8":
        return exported, evaluation, []
    trained_float = measured[REFERENCE_FORMAT]

    def judge(candidate: Exported) -> tuple[Evaluation, dict[str, Any]]:
        # Against the float model as trained: a refitted head's own float twin can be as poor
        # as its int8 and "pass" (measured: both at chance, int8 calibrated on black images).
        again = _measure_through_device(
            identity, candidate, data, setup, config, progress, reference=False
        )
        result = _judge({**again, REFERENCE_FORMAT: trained_float}, config, force)
        return result, result.gate

    return try_remedies(chosen.trained, data, config, exported, judge, progress=progress)


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
    _check_settings(config)
    _check_out_dir(out_dir, data_root)

    dataset = _load_dataset(data_root, config, phases, progress)
    chosen = _choose(dataset, config, phases, started, progress)
    config, data, trained, setup = chosen.config, chosen.data, chosen.trained, chosen.setup
    with phases("export"):
        exported = chosen.exported or _export(trained, data, config, progress)
        exported = with_reference(exported, trained.model)
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
        exported, evaluation, remedies = _gate(identity, exported, chosen, force, progress)
    with phases("baselines"):
        baselines, verdict = compare(chosen, evaluation.candidate, progress)

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
    result_report |= _chosen_sections(chosen, verdict, remedies)
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


def _chosen_sections(
    chosen: Chosen, verdict: dict[str, Any], remedies: list[dict[str, Any]]
) -> dict[str, Any]:
    """The report's sections on the search, the baselines' verdict, the learning curve and
    the int8 remedies."""
    curve = verdict.pop("learning_curve")
    out = {"search": chosen.section, "baseline_verdict": verdict, "learning_curve": curve}
    return out | ({"int8_remedies": remedies} if remedies else {})


def _training_section(trained: Trained, exported: Exported, phases: Phases) -> dict[str, Any]:
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
    exported: Exported,
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
