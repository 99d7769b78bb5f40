"""What a training run records about itself: the bundle's manifest fields and report.json.

Both are built from the results of the earlier phases of :func:`training.train.train`;
nothing here trains or measures anything.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device import __version__
from device.inference.bundle import TaskType
from training.config import TrainConfig
from training.export import io_quantization
from training.models import HEADS, BackboneSpec, input_spec

if TYPE_CHECKING:
    from training.data import Dataset
    from training.metrics import Calibration

# Manifest metrics keep the headline figures; the full ones (per class, confusion) are in
# report.json next to it.
_COMPACT_KEYS = ("levels", "abstain", "backoff")


@dataclass(frozen=True)
class Evaluation:
    """The float reference and the exported model, measured through the device runtime.

    Attributes:
        reference: compute_metrics figures of the float32 model on the test split.
        candidate: The same for the exported model (the two are one when it is float32).
        calibration: Thresholds fitted to the exported model's validation outputs.
        gate: The verdict of the int8 gate, with ``format`` and ``forced``.
    """

    reference: dict[str, Any]
    candidate: dict[str, Any]
    calibration: Calibration
    gate: dict[str, Any]


@dataclass(frozen=True)
class BundleIdentity:
    """The manifest fields that every bundle of one training run shares (the gate's
    temporary bundles and the final one); only the model, its input dtype and its
    quantization differ."""

    shared: dict[str, Any]
    size: int
    channels: int

    @property
    def command(self) -> str:
        return self.shared["created_by"]["command"]

    @property
    def backbone(self) -> str:
        return self.shared["backbone"]

    def fields_for(self, model_bytes: bytes, scheme: str, input_dtype: str) -> dict[str, Any]:
        return {
            **self.shared,
            "input": input_spec(self.size, self.channels, input_dtype).model_dump(),
            "quantization": {"scheme": scheme, **io_quantization(model_bytes)},
        }


def bundle_identity(
    name: str,
    dataset: Dataset,
    config: TrainConfig,
    backbone: BackboneSpec,
    input_shape: tuple[int, int],
    activation: str,
    command: str,
) -> BundleIdentity:
    """The shared fields: labels, output, taxonomy, backbone and provenance.

    Args:
        name: The bundle's name (its folder's name).
        dataset: The loaded dataset (labels, taxonomy, root folder).
        config: The run's settings (task).
        backbone: The backbone trained.
        input_shape: (size, channels) of the model input.
        activation: The exported model's output activation ("none" for logits).
        command: The command line to record.
    """
    task: TaskType = config.task
    size, channels = input_shape
    shared: dict[str, Any] = {
        "name": name,
        "task": task,
        "labels": dataset.labels,
        "output": {"activation": activation, "size": HEADS[task].units(len(dataset.labels))},
        "taxonomy": dataset.taxonomy if task == "hierarchical" else None,
        "backbone": f"{backbone.name} ({backbone.description}), input {size}x{size}x{channels}",
        "created_by": {
            "command": command,
            "source": f"trained on the images of '{dataset.root.name}' by kestrel {__version__}",
        },
    }
    return BundleIdentity(shared, size, channels)


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """The dataset's summary as recorded: the folder's name, not the machine's absolute path."""
    summary = dataset.summary()
    summary["root"] = dataset.root.name
    return summary


def compact_metrics(figures: dict[str, Any]) -> dict[str, Any]:
    """Headline figures of a compute_metrics dict: scalars plus a few small sub-dicts."""
    out = {k: v for k, v in figures.items() if isinstance(v, int | float | str) or v is None}
    out.update({k: figures[k] for k in _COMPACT_KEYS if k in figures})
    return out


def manifest_fields(
    identity: BundleIdentity,
    model_bytes: bytes,
    input_dtype: str,
    evaluation: Evaluation,
    dataset: Dataset,
    baselines: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The final bundle's manifest: the shared fields, thresholds and compact metrics."""
    fmt = evaluation.gate["format"]
    summary = dataset_summary(dataset)
    fields = identity.fields_for(model_bytes, fmt, input_dtype)
    fields["thresholds"] = evaluation.calibration.thresholds
    fields["metrics"] = {
        "test": {
            "float": compact_metrics(evaluation.reference),
            fmt: compact_metrics(evaluation.candidate),
        },
        "gate": {k: v for k, v in evaluation.gate.items() if k not in ("per_class",)},
        "latency_ms": evaluation.candidate["latency_ms"],
        # The taxonomy is in the manifest already.
        "dataset": {k: v for k, v in summary.items() if k != "taxonomy"},
        "baselines": {name: figures.get("accuracy") for name, figures in baselines.items()},
    }
    return fields


def train_report(
    identity: BundleIdentity,
    dataset: Dataset,
    config: TrainConfig,
    evaluation: Evaluation,
    baselines: dict[str, dict[str, Any]],
    training: dict[str, Any],
    *,
    pretrained: bool,
) -> dict[str, Any]:
    """What report.json holds for a training run.

    Args:
        identity: The bundle's shared manifest fields.
        dataset: The loaded dataset.
        config: The run's settings.
        evaluation: The gate phase's measurements.
        baselines: Figures of the classical baselines, by name.
        training: The "training" section (mode, epochs, export, model size, seconds).
        pretrained: Whether the backbone was pretrained (what the baselines were fed).
    """
    return {
        "kind": "train",
        "name": identity.shared["name"],
        "task": config.task,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": identity.command,
        "labels": dataset.labels,
        "dataset": dataset_summary(dataset),
        "skipped": [{"path": p, "reason": r} for p, r in dataset.skipped],
        "warnings": list(dataset.warnings),
        "thresholds": evaluation.calibration.thresholds,
        "calibration": evaluation.calibration.notes,
        "float": evaluation.reference,
        "int8": evaluation.candidate,
        "gate": evaluation.gate,
        "baselines": baselines,
        "baselines_note": _baselines_note(pretrained),
        "training": {"backbone": identity.backbone, **training},
        "config": config.to_dict(),
    }


def _baselines_note(pretrained: bool) -> str:
    return (
        "Classical scikit-learn models on the same split, fed raw pixels (· raw pixels: each "
        "image downscaled to its native size, at most 32 px, values 0..1) or the embeddings "
        "(· embeddings) that the head "
        + (
            "was trained on (the frozen pretrained backbone's, without augmentation)"
            if pretrained
            else "sees (the trained network's; this backbone has no pretrained weights)"
        )
        + "; the slow ones train on a sample of at most 5,000 images."
    )


def phase_line(seconds: dict[str, float]) -> str:
    """Seconds per phase on one line, as the report shows them."""
    return ", ".join(f"{name} {value:.1f}" for name, value in seconds.items())


def default_command(data_root: Path, config: TrainConfig) -> str:
    """The ``kestrel train`` command that reproduces ``config`` (settings that differ from
    the defaults), for runs not started from the command line."""
    defaults = TrainConfig()
    changed = {
        k: v for k, v in config.to_dict().items() if getattr(defaults, k) != v and k != "task"
    }
    parts = ["train", data_root.name, "--task", config.task]
    parts += [f"{k}={v}" for k, v in changed.items()]
    return "kestrel " + shlex.join(parts)


__all__ = [
    "BundleIdentity",
    "Evaluation",
    "bundle_identity",
    "compact_metrics",
    "dataset_summary",
    "default_command",
    "manifest_fields",
    "phase_line",
    "train_report",
]
