"""Hyper-parameters of ``kestrel train``: one documented dataclass.

Every field has a default that works with a few dozen images per class. A YAML file
(``--config train.yaml``) overrides the defaults; command-line flags override the file.
This module imports no TensorFlow, so the CLI can validate a config cheaply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from device.inference.bundle import TASK_TYPES, TaskType

# The names of training.export.EXPORT_FORMATS (not imported: that module loads TensorFlow).
ExportFormatName = Literal["int8", "float16", "dynamic", "float32"]
OutputMode = Literal["auto", "probabilities", "logits"]
FlipMode = Literal["none", "horizontal", "vertical", "horizontal_and_vertical"]
DEFAULT_FLIP: FlipMode = "horizontal"  # when nothing decided otherwise (no data look ran)


class ConfigError(ValueError):
    """A training configuration that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained, exported and gated.

    Training runs in one of two ways, chosen by the backbone:

    * pretrained backbone (``efficientnet-lite0``): the backbone is frozen, the embeddings of
      ``augment_copies`` augmented copies of every training image are computed once, and a
      small head is trained on them for up to ``epochs`` epochs (the fast path). With
      ``fine_tune`` the top ``fine_tune_blocks`` blocks are then trained end to end on
      augmented pixels for ``fine_tune_epochs`` epochs at ``fine_tune_learning_rate``.
    * randomly initialized backbone (``mobilenetv2``, ``small-cnn``): the whole network is
      trained end to end on augmented pixels for up to ``epochs`` epochs.

    ``backbone``, ``image_size``, ``grayscale`` and ``fine_tune`` left at None are chosen from
    the data by a short search within ``time_budget`` (:mod:`training.search`); a value given
    (flag or file) always wins.
    """

    # --- task and data ---------------------------------------------------------------------
    task: TaskType = "multiclass"
    """binary, multiclass, multilabel or hierarchical."""
    positive: str | None = None
    """Binary: the name of the positive class (default: decided by training.data)."""
    labels_csv: str | None = None
    """Multilabel: CSV of ``path,label1;label2`` (default: looked up in the data folder)."""
    taxonomy_file: str | None = None
    """Hierarchical: taxonomy file instead of nested folders."""
    val_fraction: float = 0.15
    """Share of each class held out for early stopping and threshold calibration."""
    test_fraction: float = 0.15
    """Share of each class held out for the final test (and the int8 gate)."""
    min_images_per_class: int = 5
    """Classes with fewer images are an error (named), before any training."""

    # --- model --------------------------------------------------------------------------------
    backbone: str | None = None
    """A key of training.models.BACKBONES (efficientnet-lite0, mobilenetv2, small-cnn, ...);
    None = chosen from the data by a short search (:mod:`training.search`)."""
    image_size: int | None = None
    """Square input size in pixels; None = chosen from the data's native size (no 8 -> 224
    blow-ups; :mod:`training.candidates`)."""
    grayscale: bool | None = None
    """One input channel instead of three; None = the backbone's default. Pretrained
    backbones need colour."""
    output: OutputMode = "auto"
    """What the exported model outputs: probabilities (softmax/sigmoid inside the model) or
    logits (the device applies them). auto = logits for hierarchical tasks, where an int8
    softmax's fixed 1/256 resolution would zero the small leaf probabilities that the
    taxonomy sums need, probabilities otherwise."""
    dropout: float = 0.2
    """Dropout before the classification layer."""

    # --- optimisation -------------------------------------------------------------------------
    epochs: int = 50
    """Maximum epochs of the head (fast path) or of end-to-end training (random init);
    early stopping usually ends sooner."""
    batch_size: int = 32
    """Images (or cached embeddings) per training step."""
    learning_rate: float = 0.001
    """Adam learning rate of the head on cached embeddings, or of end-to-end training."""
    label_smoothing: float = 0.1
    """Softens the one-hot targets; keeps the head from over-confident answers on few images."""
    early_stopping_patience: int = 8
    """Stop after this many epochs without a better validation loss; the best weights are
    kept. 0 disables early stopping."""
    class_weighting: bool = True
    """Weight each example by the inverse frequency of its class, so a rare class counts as
    much as a frequent one (binary, multiclass, hierarchical; multilabel relies on the
    per-label thresholds instead)."""
    seed: int = 0
    """Seeds the split, augmentation, initialization and shuffling: same seed, same model."""
    deterministic_ops: bool = True
    """tf.config.experimental.enable_op_determinism: bit-identical reruns (a little slower)."""

    # --- fine-tuning (pretrained backbones) -----------------------------------------------
    fine_tune: bool | None = None
    """After the head, also train the top blocks of the backbone on augmented pixels;
    None = the search decides (tried as a candidate of its own)."""
    fine_tune_blocks: int = 12
    """How many of the backbone's last blocks are unfrozen (batch norm stays frozen).
    EfficientNet-Lite0 has 16; on Fashion-MNIST 12 blocks for 12 epochs took int8 accuracy
    from 0.87 (head only) to 0.90, where 2 blocks for 5 epochs gained little."""
    fine_tune_epochs: int = 12
    """Epochs of fine-tuning (each one is a full pass through the backbone: slow on a CPU;
    early stopping may end sooner, and weights that do not lower the validation loss are
    discarded)."""
    fine_tune_learning_rate: float = 1e-4
    """Adam learning rate of fine-tuning; low, so the pretrained features are not wrecked."""

    # --- augmentation (applied to training images only) -----------------------------------
    augment_copies: int = 3
    """Fast path: embeddings are cached for this many versions of each training image, the
    original plus augment_copies - 1 augmented ones. 1 disables augmentation there."""
    flip: FlipMode | None = None
    """Random mirroring; left open (None), the data decides: horizontal, or none when mirrored
    training copies cost a quick classifier accuracy (left and right matter: text, digits;
    see training.mirror)."""
    rotation: float = 0.05
    """Random rotation up to this fraction of a full turn (0.05 = 18 degrees)."""
    zoom: float = 0.1
    """Random zoom in or out by up to this fraction (crop / pad with reflection)."""
    translation: float = 0.05
    """Random shift by up to this fraction of the width and height."""
    brightness: float = 0.1
    """Random brightness change up to this fraction of the 0..255 range."""
    contrast: float = 0.1
    """Random contrast change by up to this factor."""
    noise: float = 0.0
    """Standard deviation of added Gaussian pixel noise on 0..255 (e.g. 4 for grainy night
    cameras); 0 = none."""

    # --- the search over candidate models (training.search) --------------------------------
    time_budget: float = 15.0
    """Minutes the whole run may take (a 2-core machine's 15 minutes by default): candidates
    that would not fit are left out, each fit stops when its share of the budget is used, and a
    budget too small for even the fastest candidate is an error before training starts."""
    fast: bool = False
    """A quick first model: only the cheapest suitable candidate, no search."""
    distribute: bool = False
    """Fit under ``tf.distribute.MirroredStrategy``: data-parallel over every GPU of a bigger
    machine (batches are split between the replicas)."""
    embedding_cache: bool = True
    """Keep the frozen backbone's embeddings of un-augmented images in the on-disk cache
    (:mod:`training.embeddings`, keyed by file content, backbone and input size), so a second
    run embeds only new or changed files."""

    # --- export and the accuracy gate -------------------------------------------------------
    export_format: ExportFormatName = "int8"
    """int8 (full integer, uint8 input: CPU and Edge TPU), float16, dynamic or float32."""
    calibration_images: int = 300
    """Real training images used to calibrate the int8 quantization."""
    max_int8_drop: float = 1.0
    """The gate: the exported model may lose at most this many accuracy points (mAP points
    for multilabel) against the float model on the test split, through the device runtime."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys and wrong values raise :class:`ConfigError`."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(unknown)}; "
                f"known settings: {', '.join(cls.field_names())}"
            )
        return cls().override(source=source, **values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML mapping of settings (any subset of the fields)."""
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        # YAML writers often use dashes, as the command line does.
        return cls.from_mapping({str(k).replace("-", "_"): v for k, v in raw.items()}, str(path))

    def override(self, source: str = "override", **values: Any) -> TrainConfig:
        """A copy with ``values`` replaced; ``None`` values are ignored (flag not given)."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(given) - set(self.field_names()))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        hints = {f.name: f.type for f in fields(self)}
        coerced = {k: _coerce(v, hints[k], k, source) for k, v in given.items()}
        config = dataclasses.replace(self, **coerced)
        config.validate(source)
        return config

    def validate(self, source: str = "config") -> None:
        """Raise :class:`ConfigError` naming the first field with an impossible value."""
        checks: list[tuple[str, bool, str]] = [
            ("task", self.task in TASK_TYPES, f"one of {', '.join(TASK_TYPES)}"),
            ("val_fraction", 0 < self.val_fraction < 1, "between 0 and 1"),
            ("test_fraction", 0 < self.test_fraction < 1, "between 0 and 1"),
            (
                "test_fraction",
                self.val_fraction + self.test_fraction < 1,
                "such that val_fraction + test_fraction < 1",
            ),
            ("min_images_per_class", self.min_images_per_class >= 1, "at least 1"),
            ("image_size", self.image_size is None or self.image_size >= 8, "at least 8"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("epochs", self.epochs >= 1, "at least 1"),
            ("batch_size", self.batch_size >= 1, "at least 1"),
            ("learning_rate", self.learning_rate > 0, "positive"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("early_stopping_patience", self.early_stopping_patience >= 0, "0 or more"),
            ("fine_tune_blocks", self.fine_tune_blocks >= 1, "at least 1"),
            ("fine_tune_epochs", self.fine_tune_epochs >= 1, "at least 1"),
            ("fine_tune_learning_rate", self.fine_tune_learning_rate > 0, "positive"),
            ("augment_copies", self.augment_copies >= 1, "at least 1"),
            ("flip", self.flip in (None, *get_args(FlipMode)), _choices(get_args(FlipMode))),
            ("rotation", 0 <= self.rotation <= 0.5, "in [0, 0.5] (fraction of a turn)"),
            ("zoom", 0 <= self.zoom < 1, "in [0, 1)"),
            ("translation", 0 <= self.translation < 1, "in [0, 1)"),
            ("brightness", 0 <= self.brightness <= 1, "in [0, 1]"),
            ("contrast", 0 <= self.contrast < 1, "in [0, 1)"),
            ("noise", self.noise >= 0, "0 or more"),
            ("export_format", self.export_format in get_args(ExportFormatName), "a format"),
            ("output", self.output in get_args(OutputMode), "auto, probabilities or logits"),
            ("calibration_images", self.calibration_images >= 1, "at least 1"),
            ("time_budget", self.time_budget > 0, "positive (minutes)"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"{source}: {name} must be {expected}, got {getattr(self, name)!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, name: str, source: str) -> Any:
    """Check a value against the field's annotation (a string here: postponed annotations)."""
    hint = str(hint)
    optional = "None" in hint
    if value is None and optional:
        return None
    try:
        if hint.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if hint.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise TypeError
            return int(value)
        if hint.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError
            return float(value)
        if hint.startswith("str"):
            return str(value)
    except TypeError:
        kind = hint.split(" ")[0]
        raise ConfigError(
            f"{source}: {name} must be {kind}, got {value!r} ({type(value).__name__})"
        ) from None
    return value  # Literal fields: checked by validate()


def _choices(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]


__all__ = [
    "DEFAULT_FLIP",
    "ConfigError",
    "ExportFormatName",
    "FlipMode",
    "OutputMode",
    "TrainConfig",
]
