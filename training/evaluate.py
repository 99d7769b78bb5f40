"""Running a bundle through the device runtime on prepared pixels, and ``kestrel eval``.

Everything here goes through :class:`device.inference.engine.Classifier` — the interpreter,
the input quantizer and :func:`device.inference.decode.make_probabilities` that the device
uses — never through TensorFlow, so the figures are the device's figures.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.inference.bundle import Bundle, BundleError, Manifest, Thresholds, load_bundle
from device.inference.decode import make_probabilities
from device.inference.engine import Classifier
from device.inference.runtime import Accelerator
from training.data.pixels import PixelArray
from training.metrics import compute_metrics
from training.runtime import workstation_runtime

if TYPE_CHECKING:
    from training.data import Dataset

log = logging.getLogger(__name__)

RUN_CHUNK = 256  # images quantized at once (pixels read from disk come in chunks this size)


@dataclass
class BundleRun:
    """What one pass of a bundle over a set of images gives."""

    probs: np.ndarray  # (N, L) probabilities in label order (binary: [negative, positive])
    latency_ms: dict[str, Any]  # per-image invoke ms: p50, p90, mean (+ images, threads)


def run_bundle(
    bundle: Bundle | Path | str,
    pixels: PixelArray,
    *,
    progress: bool = True,
    threads: int | None = None,
    accelerator: Accelerator = "cpu",
) -> BundleRun:
    """Invoke a bundle on every image of ``pixels`` through the device runtime.

    ``pixels`` are (N, H, W, C) uint8 already prepared by the device's preprocessing
    (:func:`training.data.load_pixels`); they are quantized for the model with the engine's own
    :class:`~device.inference.preprocess.InputQuantizer`, invoked one at a time as on the device,
    and the raw outputs mapped with :func:`device.inference.decode.make_probabilities`. A binary
    model with one output (P(positive)) gives two columns, ``[1 - p, p]``, in label order like
    the others.
    The latency is of :meth:`Classifier.infer` (set input, invoke, read output) per image,
    after the engine's warm-up.
    """
    classifier = Classifier(
        bundle, accelerator=accelerator, threads=threads, runtime=workstation_runtime()
    )
    manifest = classifier.bundle.manifest
    spec = manifest.input
    expected = (spec.height, spec.width, spec.channels)
    if len(pixels.shape) != 4 or tuple(pixels.shape[1:]) != expected or pixels.dtype != np.uint8:
        raise ValueError(
            f"pixels for {classifier.bundle.path}: expected (N, {', '.join(map(str, expected))}) "
            f"uint8 prepared by the device's preprocessing, got {pixels.shape} {pixels.dtype}"
        )
    n = len(pixels)
    probabilities = make_probabilities(manifest, classifier.output_quantization)
    size = manifest.output.size
    probs = np.empty((n, size), dtype=np.float32)
    times = np.empty(n, dtype=np.float64)
    bar = _progress(n, progress, f"Evaluating {classifier.bundle.name}")
    for start in range(0, n, RUN_CHUNK):
        chunk = pixels[start : start + RUN_CHUNK]
        # One lookup-table pass over the chunk at once (a (n*H, W, C) image to OpenCV).
        flat = np.ascontiguousarray(chunk.reshape(len(chunk) * spec.height, *expected[1:]))
        tensors = classifier.quantizer(flat).reshape(chunk.shape)
        for i, tensor in enumerate(tensors, start):
            began = time.perf_counter()
            raw = classifier.infer(tensor)
            times[i] = time.perf_counter() - began
            probs[i] = probabilities(raw)
        bar.update(len(chunk))
    bar.close()
    if manifest.task == "binary" and size == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    used_threads = threads or os.cpu_count() or 1  # the runtime's own default
    return BundleRun(probs=probs, latency_ms=_latency(times, classifier.accelerator, used_threads))


def _progress(total: int, enabled: bool, description: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", file=sys.stderr, leave=False,
                disable=not enabled)  # fmt: skip


def _latency(seconds: np.ndarray, accelerator: str, threads: int) -> dict[str, Any]:
    ms = seconds * 1e3
    out: dict[str, Any] = {"images": len(ms), "accelerator": accelerator, "threads": threads}
    if len(ms):
        out |= {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p90": round(float(np.percentile(ms, 90)), 3),
            "mean": round(float(ms.mean()), 3),
        }
    return out


def evaluate_pixels(
    bundle: Bundle | Path | str,
    pixels: PixelArray,
    targets: np.ndarray,
    *,
    thresholds: Mapping[str, Any] | Thresholds | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """One report section: the bundle's metrics on prepared pixels plus its latency.

    The decisions use ``thresholds`` when given, else the bundle's own. The section is
    :func:`training.metrics.compute_metrics`'s dict plus ``latency_ms``, ``scheme`` (the
    bundle's quantization) and ``bundle`` (its name) — the shape of a report's ``"float"`` and
    ``"int8"`` sections.
    """
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    manifest = loaded.manifest
    run = run_bundle(loaded, pixels, progress=progress, threads=threads)
    limits = manifest.thresholds if thresholds is None else thresholds
    section = compute_metrics(
        manifest.task, run.probs, targets, manifest.labels, limits, manifest.taxonomy
    )
    section["latency_ms"] = run.latency_ms
    section["scheme"] = manifest.quantization.scheme
    section["bundle"] = manifest.name
    return section


def check_labels(
    bundle_labels: list[str], data_labels: list[str], data_root: Path, bundle_path: Path
) -> list[str]:
    """Raise if the data has labels the bundle cannot predict; return warnings for bundle
    labels the data has no images of (their recall is then undefined)."""
    extra = [label for label in data_labels if label not in bundle_labels]
    missing = [label for label in bundle_labels if label not in data_labels]
    if extra:
        raise BundleError(
            f"{data_root}: labels {extra} are not labels of the bundle {bundle_path} "
            f"(it knows {_listing(bundle_labels)}); rename or remove those folders"
            + (
                f"; the bundle's labels missing from the data: {_listing(missing)}"
                if missing
                else ""
            )
        )
    if missing:
        return [f"the data has no images of the bundle's labels {_listing(missing)}"]
    return []


def _listing(labels: list[str], limit: int = 10) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" ... and {len(labels) - limit} more" if len(labels) > limit else "")


def _taxonomy_warnings(
    data_taxonomy: Mapping[str, str | None] | None,
    bundle_taxonomy: Mapping[str, str | None] | None,
    labels: list[str],
) -> list[str]:
    if not data_taxonomy or not bundle_taxonomy:
        return []
    moved = [
        f"{label} (data: under {data_taxonomy[label]}, bundle: under {bundle_taxonomy[label]})"
        for label in labels
        if label in data_taxonomy and data_taxonomy[label] != bundle_taxonomy.get(label)
    ]
    if not moved:
        return []
    return [
        "the data's taxonomy differs from the bundle's; figures use the bundle's: "
        + "; ".join(moved[:5])
        + (f" ... and {len(moved) - 5} more" if len(moved) > 5 else "")
    ]


def evaluate_bundle(
    bundle_path: Path | str,
    data_root: Path | str,
    task: str | None = None,
    *,
    split: str = "test",
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int | None = None,
    taxonomy_file: Path | None = None,
    labels_csv: Path | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``kestrel eval BUNDLE DATA``: a bundle on a labeled folder, through the device runtime.

    Loads and checks the folder with :func:`training.data.load_dataset` (the same layouts as
    ``kestrel train``; every class may be small), checks that its labels are the bundle's (an
    unknown label is an error; bundle labels without images are a warning), runs the bundle on
    ``split`` — the ``"test"`` split as ``kestrel train`` would carve it (the default, as on the
    command line, so training images are never reported as test images; ``val_fraction``,
    ``test_fraction`` and ``seed`` default to :class:`training.config.TrainConfig`'s; a
    folder's own ``test/`` is used as is) or ``"all"`` images (a folder that is a test set) —
    and computes the figures with the bundle's thresholds.

    Returns a report dict for :func:`training.report.write_report`: ``name``, ``task``,
    ``kind`` ("eval"), ``bundle``, ``split``, ``dataset`` (the dataset summary), ``skipped``,
    ``warnings``, ``thresholds`` and ``int8`` — the section of the bundle as shipped (whatever
    its quantization scheme, named in the section's ``scheme``), shaped like the trainer's.
    """
    if split not in ("all", "test"):
        raise ValueError(f"split: expected 'all' or 'test', got {split!r}")
    bundle = load_bundle(bundle_path)
    manifest = bundle.manifest
    if task is not None and task != manifest.task:
        raise BundleError(
            f"{bundle.path}: task: the bundle is a {manifest.task} model, "
            f"asked to evaluate it as {task}"
        )
    dataset = _eval_dataset(
        manifest,
        Path(data_root),
        everything=split == "all",
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        taxonomy_file=taxonomy_file,
        labels_csv=labels_csv,
        progress=progress,
    )
    warnings = list(dataset.warnings)
    warnings += check_labels(manifest.labels, dataset.labels, Path(data_root), bundle.path)
    warnings += _taxonomy_warnings(dataset.taxonomy, manifest.taxonomy, dataset.labels)
    section = _evaluate_split(bundle, dataset, split, data_root, threads, progress)
    summary = dataset.summary()
    return {
        "kind": "eval",
        "name": manifest.name,
        "task": manifest.task,
        "labels": list(manifest.labels),
        "bundle": str(bundle.path),
        "split": split,
        "dataset": summary,
        "skipped": summary.get("skipped", []),
        "warnings": warnings,
        "thresholds": manifest.thresholds.model_dump(mode="json"),
        "int8": section,
    }


def _eval_dataset(
    manifest: Manifest,
    data_root: Path,
    *,
    everything: bool,
    val_fraction: float | None,
    test_fraction: float | None,
    seed: int | None,
    taxonomy_file: Path | None,
    labels_csv: Path | None,
    progress: bool,
) -> Dataset:
    """The labeled folder, split as ``kestrel train`` would split it, or whole (``everything``).

    Unset fractions and seed are :class:`training.config.TrainConfig`'s, so the test split is
    the one training held out.
    """
    from training.config import TrainConfig
    from training.data import load_dataset

    defaults = TrainConfig()
    val_fraction = defaults.val_fraction if val_fraction is None else val_fraction
    test_fraction = defaults.test_fraction if test_fraction is None else test_fraction
    return load_dataset(
        data_root,
        manifest.task,
        val_fraction=0.0 if everything else val_fraction,
        test_fraction=0.0 if everything else test_fraction,
        seed=defaults.seed if seed is None else seed,
        min_images_per_class=1,
        positive=manifest.labels[1] if manifest.task == "binary" else None,
        taxonomy_file=taxonomy_file,
        labels_csv=labels_csv,
        progress=progress,
    )


def _evaluate_split(
    bundle: Bundle,
    dataset: Dataset,
    split: str,
    data_root: Path | str,
    threads: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The bundle's report section on the ``split`` images of ``dataset``."""
    from training.data import Pixels, target_array
    from training.data.pixels import fits_in_memory

    manifest = bundle.manifest
    samples = [*dataset.train, *dataset.val, *dataset.test] if split == "all" else dataset.test
    if not samples:
        raise ValueError(f"{data_root}: no images in the {split} split to evaluate on")
    targets = target_array(samples, manifest.labels, manifest.task)
    spec = manifest.input
    held = fits_in_memory(len(samples), spec)
    pixels = Pixels.load(samples, spec, in_memory=held, progress=progress)
    return evaluate_pixels(bundle, pixels, targets, progress=progress, threads=threads)
