"""The model bundle: the one contract between training and device.

A bundle is a folder holding ``model.tflite``, ``labels.txt`` and ``manifest.json``.
``training`` writes bundles with :func:`write_bundle`; the device reads them with
:func:`load_bundle`, which refuses any bundle whose parts disagree, naming the field and
the expected vs actual value. Tensor shapes and dtypes are checked against the manifest
when the interpreter is built (see :mod:`device.inference.engine`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from device import __version__
from device.inference.taxonomy import lineage

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
EDGETPU_MODEL_FILE = "model_edgetpu.tflite"  # optional: the model compiled by edgetpu_compiler

TaskType = Literal["binary", "multiclass", "multilabel", "hierarchical"]
TASK_TYPES: tuple[str, ...] = get_args(TaskType)


class BundleError(ValueError):
    """A bundle is missing, unreadable or inconsistent. The message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalization(_Strict):
    """Maps 0..255 pixels to the float values the model's input tensor stands for:
    ``(pixel - mean) / std`` per channel, in the bundle's colour order."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @model_validator(mode="after")
    def _positive_std(self) -> Normalization:
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        return self


class InputSpec(_Strict):
    """What the model's input tensor expects, and how a camera frame is fitted to it."""

    height: int = Field(gt=0, description="Input height in pixels.")
    width: int = Field(gt=0, description="Input width in pixels.")
    channels: Literal[1, 3] = Field(3, description="1 for grayscale models, 3 for colour.")
    color_order: Literal["RGB", "BGR"] = Field("RGB", description="Channel order of the input.")
    dtype: Literal["uint8", "int8", "float32"] = Field(description="Input tensor dtype.")
    fit: Literal["center_crop", "letterbox", "stretch"] = Field(
        "center_crop", description="How a frame of another aspect ratio is fitted to the input."
    )
    interpolation: Literal["area", "linear"] = Field(
        "area", description="Resize interpolation (area is the better choice for shrinking)."
    )
    denoise: Literal["none", "gaussian", "median"] = Field(
        "none", description="Optional noise reduction applied after resizing."
    )
    normalization: Normalization = Field(default_factory=Normalization)


class TensorQuantization(_Strict):
    """Affine quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float = Field(gt=0)
    zero_point: int


class Quantization(_Strict):
    scheme: Literal["int8", "float16", "dynamic", "float32"]
    input: TensorQuantization | None = None
    output: TensorQuantization | None = None


class OutputSpec(_Strict):
    activation: Literal["softmax", "sigmoid", "none"] = Field(
        description="Activation already inside the model; 'none' means logits that the device "
        "turns into probabilities (softmax for binary/multiclass/hierarchical, sigmoid for "
        "multilabel)."
    )
    size: int = Field(gt=0, description="Number of output values per image.")


class Thresholds(_Strict):
    binary: float = Field(0.5, ge=0, le=1, description="Positive-class probability threshold.")
    abstain: float | None = Field(
        None, ge=0, le=1, description="Multiclass: answer 'unknown' when the top score is below."
    )
    per_label: dict[str, float] = Field(
        default_factory=dict, description="Multilabel: threshold per label (default 0.5)."
    )
    hierarchy: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Hierarchical: a node is reported when its summed probability "
        "reaches this value; the answer backs off to the parent otherwise.",
    )


class Provenance(_Strict):
    tool: str = "kestrel"
    version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    command: str = ""
    source: str = Field("", description="Where the weights and data came from.")


class Manifest(_Strict):
    """``manifest.json``: everything the device must know to run and decode a model."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(min_length=1)
    task: TaskType
    labels: list[str] = Field(min_length=1)
    input: InputSpec
    output: OutputSpec
    quantization: Quantization
    thresholds: Thresholds = Field(default_factory=Thresholds)
    taxonomy: dict[str, str | None] | None = Field(
        None,
        description="Hierarchical: parent of every node (labels are the leaves); None "
        "marks a top-level node.",
    )
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    edgetpu_model_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description=f"sha256 of {EDGETPU_MODEL_FILE}, if any."
    )
    backbone: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_by: Provenance = Field(default_factory=Provenance)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if len(set(self.labels)) != len(self.labels):
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            raise ValueError(f"labels must be unique, duplicated: {dupes}")
        expected = {1, 2} if self.task == "binary" else {len(self.labels)}
        if self.task == "binary" and len(self.labels) != 2:
            raise ValueError(f"binary task needs 2 labels [negative, positive], got {self.labels}")
        if self.output.size not in expected:
            raise ValueError(
                f"output.size: expected {' or '.join(map(str, sorted(expected)))} for task "
                f"{self.task} with {len(self.labels)} labels, got {self.output.size}"
            )
        unknown = set(self.thresholds.per_label) - set(self.labels)
        if unknown:
            raise ValueError(f"thresholds.per_label names unknown labels {sorted(unknown)}")
        if self.task == "hierarchical":
            _check_taxonomy(self.labels, self.taxonomy)
        elif self.taxonomy is not None:
            raise ValueError(f"taxonomy is only for hierarchical tasks, task is {self.task}")
        return self


def _check_taxonomy(labels: list[str], taxonomy: Mapping[str, str | None] | None) -> None:
    if not taxonomy:
        raise ValueError("taxonomy: a hierarchical task needs a taxonomy (node -> parent)")
    missing = [label for label in labels if label not in taxonomy]
    if missing:
        raise ValueError(f"taxonomy: labels without a parent entry: {missing[:5]}")
    dangling = sorted({p for p in taxonomy.values() if p is not None and p not in taxonomy})
    if dangling:
        raise ValueError(f"taxonomy: parents that are not nodes: {dangling[:5]}")
    parents = set(taxonomy.values())
    inner_labels = [label for label in labels if label in parents]
    if inner_labels:
        raise ValueError(
            f"taxonomy: labels must be leaves, these have children: {inner_labels[:5]}"
        )
    for node in taxonomy:
        lineage(node, taxonomy)  # raises on a cycle


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def edgetpu_model_path(self) -> Path | None:
        path = self.path / EDGETPU_MODEL_FILE
        return path if path.is_file() else None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a large model is never held in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_labels(path: Path) -> list[str]:
    return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_bundle(path: str | Path, *, verify_hash: bool = True) -> Bundle:
    """Read and validate a bundle folder; raise :class:`BundleError` naming what is wrong."""
    try:
        return _load_bundle(Path(path), verify_hash)
    except OSError as exc:  # e.g. no read permission: name the file, never a traceback
        where = exc.filename or path
        raise BundleError(f"{where}: cannot read ({exc.strerror or exc})") from None


def _load_bundle(root: Path, verify_hash: bool) -> Bundle:
    if not root.is_dir():
        raise BundleError(
            f"{root}: not a bundle folder (expected a directory with "
            f"{MODEL_FILE}, {LABELS_FILE} and {MANIFEST_FILE})"
        )
    for name in (MANIFEST_FILE, MODEL_FILE, LABELS_FILE):
        if not (root / name).is_file():
            raise BundleError(f"{root}: missing {name}")
    manifest_path = root / MANIFEST_FILE
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, got {type(raw).__name__}")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path}: format_version: expected {FORMAT_VERSION}, got {version!r} "
            "(bundle written by an incompatible Kestrel version?)"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{manifest_path}: {_describe(exc)}") from exc

    labels = read_labels(root / LABELS_FILE)
    if labels != manifest.labels:
        raise BundleError(
            f"{root / LABELS_FILE}: labels: expected the {len(manifest.labels)} labels of "
            f"{MANIFEST_FILE}, got {len(labels)} "
            f"(first difference at line {_first_difference(labels, manifest.labels) + 1})"
        )
    if verify_hash:
        _verify_hash(root / MODEL_FILE, "model_sha256", manifest.model_sha256)
        if (root / EDGETPU_MODEL_FILE).is_file():
            _verify_hash(
                root / EDGETPU_MODEL_FILE, "edgetpu_model_sha256", manifest.edgetpu_model_sha256
            )
    return Bundle(path=root, manifest=manifest)


def _verify_hash(path: Path, field: str, expected: str | None) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise BundleError(
            f"{path}: {field}: expected {expected}, got {actual} "
            "(file changed or truncated after the bundle was written)"
        )


def _first_difference(a: list[str], b: list[str]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def write_bundle(
    out_dir: str | Path,
    model_bytes: bytes,
    manifest_fields: Mapping[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write a bundle atomically: build it in a temporary sibling folder, then move it in place.

    ``manifest_fields`` holds every manifest field except ``model_sha256``, which is computed
    here. An interrupted write never leaves a half-written bundle at ``out_dir``.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = dict(manifest_fields)
    fields["model_sha256"] = hashlib.sha256(model_bytes).hexdigest()
    try:
        manifest = Manifest.model_validate(fields)
    except ValidationError as exc:
        raise BundleError(f"manifest for {out}: {_describe(exc)}") from exc

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        (tmp / LABELS_FILE).write_text("\n".join(manifest.labels) + "\n", encoding="utf-8")
        (tmp / MANIFEST_FILE).write_text(
            json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8"
        )
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
