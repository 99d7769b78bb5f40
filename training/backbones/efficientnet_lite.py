"""EfficientNet-Lite backbones for Keras 3, with ImageNet weights ported from PyTorch.

EfficientNet-Lite is the edge-friendly EfficientNet variant: ReLU6 instead of swish, no
squeeze-excite, and a stem/head that do not scale with width. It quantizes well and every
op maps to a TFLite builtin.

The ImageNet weights live in ``models/backbones/efficientnet-lite0/`` and were converted
from the PyTorch checkpoint by ``training/tools/port_efficientnet_lite.py`` (see the README in that
folder for provenance). They are stored as a ``.npz`` keyed by ``"<layer name>/<weight name>"``
and loaded by name, so the file does not depend on layer order.

Input contract: float32 RGB already normalized as ``(pixel - 127) / 128`` on 0..255 pixels
(see :data:`EFFICIENTNET_LITE0_NORMALIZATION`). Normalization is not part of the model; the
caller prepends it.

Importing this module needs Keras and numpy only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from device.paths import BACKBONES_DIR

__all__ = [
    "EFFICIENTNET_LITE0_INPUT_SIZE",
    "EFFICIENTNET_LITE0_NORMALIZATION",
    "EFFICIENTNET_LITE_SPECS",
    "WEIGHTS_DIR",
    "BlockSpec",
    "EfficientNetLiteSpec",
    "WeightsMismatchError",
    "build_efficientnet_lite",
    "build_efficientnet_lite0",
    "keras_weight_arrays",
    "load_weights_by_name",
    "stage_plan",
]

#: ``(mean, std)`` applied to 0..255 RGB pixels: ``x = (pixel - mean) / std``.
EFFICIENTNET_LITE0_NORMALIZATION: tuple[float, float] = (127.0, 128.0)
#: Native (training) resolution of EfficientNet-Lite0.
EFFICIENTNET_LITE0_INPUT_SIZE: int = 224

#: Folder holding one sub-folder of committed weights per model name.
WEIGHTS_DIR = BACKBONES_DIR

# Values used by the upstream model (TF reference and the PyTorch port alike). PyTorch's
# momentum 0.01 is Keras's 0.99 (they weight the running average from opposite sides).
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99
_DEPTH_DIVISOR = 8
# Stem and head widths of every Lite model: fixed, not scaled by width_coefficient.
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_CLASSIFIER = "predictions"


@dataclass(frozen=True)
class BlockSpec:
    """One stage of MBConv blocks (before width/depth scaling)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# EfficientNet-Lite base stages (== B0 without squeeze-excite); from the upstream
# efficientnet_lite_builder.py, block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
_BASE_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec(1, 3, 1, 1, 32, 16),
    BlockSpec(2, 3, 2, 6, 16, 24),
    BlockSpec(2, 5, 2, 6, 24, 40),
    BlockSpec(3, 3, 2, 6, 40, 80),
    BlockSpec(3, 5, 1, 6, 80, 112),
    BlockSpec(4, 5, 2, 6, 112, 192),
    BlockSpec(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class EfficientNetLiteSpec:
    """Scaling coefficients of one EfficientNet-Lite variant.

    Attributes:
        name: Model name, also the name of its weights folder under ``models/backbones``.
        width_coefficient: Channel multiplier for the blocks (not stem/head).
        depth_coefficient: Repeat multiplier for all stages but the first and last.
        resolution: Native input size in pixels (square).
        dropout: Dropout rate before the classifier used in training.
        weights_file: File name of the committed ImageNet weights, or None if none are shipped.
    """

    name: str
    width_coefficient: float
    depth_coefficient: float
    resolution: int
    dropout: float
    weights_file: str | None = None


#: Registry of known variants. Adding weights for another variant = port them and set
#: ``weights_file``; the architecture of all five is already checked against the upstream
#: PyTorch parameter counts (see tests/training/tools/test_efficientnet_lite_port.py).
EFFICIENTNET_LITE_SPECS: dict[str, EfficientNetLiteSpec] = {
    s.name: s
    for s in (
        EfficientNetLiteSpec(
            "efficientnet-lite0", 1.0, 1.0, 224, 0.2, "efficientnet-lite0-imagenet.npz"
        ),
        EfficientNetLiteSpec("efficientnet-lite1", 1.0, 1.1, 240, 0.2),
        EfficientNetLiteSpec("efficientnet-lite2", 1.1, 1.2, 260, 0.3),
        EfficientNetLiteSpec("efficientnet-lite3", 1.2, 1.4, 280, 0.3),
        EfficientNetLiteSpec("efficientnet-lite4", 1.4, 1.8, 300, 0.3),
    )
}


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model (missing, extra or mis-shaped array)."""


def _round_filters(filters: int, width_coefficient: float) -> int:
    """Scale a channel count and round to a multiple of 8, as the TF reference does."""
    if width_coefficient == 1.0:
        return filters
    scaled = filters * width_coefficient
    new = max(_DEPTH_DIVISOR, int(scaled + _DEPTH_DIVISOR / 2) // _DEPTH_DIVISOR * _DEPTH_DIVISOR)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += _DEPTH_DIVISOR
    return int(new)


def _round_repeats(repeats: int, depth_coefficient: float) -> int:
    return math.ceil(depth_coefficient * repeats)


def stage_plan(spec: EfficientNetLiteSpec) -> list[BlockSpec]:
    """Scaled stages of ``spec``; Lite keeps first/last stage repeats and the stem fixed."""
    last = len(_BASE_BLOCKS) - 1
    plan = []
    for i, block in enumerate(_BASE_BLOCKS):
        fixed = i in (0, last)
        repeats = block.repeats if fixed else _round_repeats(block.repeats, spec.depth_coefficient)
        # The first stage reads the stem output, whose width is never scaled.
        filters_in = (
            _STEM_FILTERS if i == 0 else _round_filters(block.filters_in, spec.width_coefficient)
        )
        plan.append(
            BlockSpec(
                repeats=repeats,
                kernel_size=block.kernel_size,
                stride=block.stride,
                expand_ratio=block.expand_ratio,
                filters_in=filters_in,
                filters_out=_round_filters(block.filters_out, spec.width_coefficient),
            )
        )
    return plan


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)


def _mbconv(
    x: keras.KerasTensor,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    stride: int,
    expand_ratio: int,
    prefix: str,
) -> keras.KerasTensor:
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 linear projection."""
    inputs = x
    filters = filters_in * expand_ratio
    if expand_ratio != 1:
        x = keras.layers.Conv2D(
            filters, 1, padding="same", use_bias=False, name=f"{prefix}_expand_conv"
        )(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu6")(x)
    # "same" is TF SAME: for stride 2 it pads (k-1)//2 before and the rest after (extra
    # row/column at the bottom/right), which is exactly what the PyTorch port's
    # Conv2dStaticSamePadding does; verified by the reference logits.
    x = keras.layers.DepthwiseConv2D(
        kernel_size, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
    )(x)
    x = _batch_norm(f"{prefix}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_relu6")(x)
    x = keras.layers.Conv2D(
        filters_out, 1, padding="same", use_bias=False, name=f"{prefix}_project_conv"
    )(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def build_efficientnet_lite(
    name: str,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
    dropout: float | None = None,
    weights: str | Path | None = "imagenet",
) -> keras.Model:
    """Build any EfficientNet-Lite variant from :data:`EFFICIENTNET_LITE_SPECS`.

    Args:
        name: Registry key, e.g. ``"efficientnet-lite0"``.
        input_shape: ``(height, width, 3)``; defaults to the variant's native resolution.
            Spatial dims may be None (all layers are size-agnostic).
        include_top: True: output ``num_classes`` logits (no softmax). False: output the
            globally average-pooled feature vector (1280-d) after the head conv.
        num_classes: Classifier size, used only with ``include_top``.
        dropout: Dropout before the classifier; defaults to the variant's training value.
        weights: ``"imagenet"`` (committed weights of this variant), a path to an ``.npz``
            written by :func:`keras_weight_arrays`, or None for random initialization.

    Returns:
        An uncompiled ``keras.Model`` named after the variant.

    Raises:
        KeyError: Unknown variant name.
        ValueError: ``"imagenet"`` requested where no committed weights exist, or with a
            classifier that is not the 1000-class ImageNet one.
        WeightsMismatchError: The weights file misses an array or has a wrong shape.
    """
    if name not in EFFICIENTNET_LITE_SPECS:
        raise KeyError(
            f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(EFFICIENTNET_LITE_SPECS)}"
        )
    spec = EFFICIENTNET_LITE_SPECS[name]
    weights_path = _resolve_weights(spec, weights, include_top, num_classes)
    if input_shape is None:
        input_shape = (spec.resolution, spec.resolution, 3)
    if dropout is None:
        dropout = spec.dropout

    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(
        _STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)

    # Block names follow keras.applications: block<stage><letter>, e.g. block2a, block2b.
    for stage, block in enumerate(stage_plan(spec), start=1):
        for rep in range(block.repeats):
            x = _mbconv(
                x,
                filters_in=block.filters_in if rep == 0 else block.filters_out,
                filters_out=block.filters_out,
                kernel_size=block.kernel_size,
                stride=block.stride if rep == 0 else 1,
                expand_ratio=block.expand_ratio,
                prefix=f"block{stage}{chr(ord('a') + rep)}",
            )

    x = keras.layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = keras.layers.ReLU(6.0, name="top_relu6")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="top_dropout")(x)
        x = keras.layers.Dense(num_classes, name=_CLASSIFIER)(x)

    model = keras.Model(inputs, x, name=name.replace("-", "_"))
    if weights_path is not None:
        with np.load(weights_path) as data:
            arrays = {key: data[key] for key in data.files}
        # Without the top, the file's classifier arrays are expected to be left over.
        optional = () if include_top else (f"{_CLASSIFIER}/",)
        load_weights_by_name(model, arrays, ignore_prefixes=optional, source=str(weights_path))
    return model


def build_efficientnet_lite0(
    input_shape: tuple[int | None, int | None, int] = (224, 224, 3),
    include_top: bool = True,
    num_classes: int = 1000,
    dropout: float = 0.2,
    weights: str | Path | None = "imagenet",
) -> keras.Model:
    """Build EfficientNet-Lite0, by default with ImageNet weights.

    Input: float RGB normalized as ``(pixel - 127) / 128`` (not done inside the model).

    Args:
        input_shape: ``(height, width, 3)``; 224x224 is the native size.
        include_top: True: 1000 ImageNet logits (no softmax), or ``num_classes`` logits.
            False: the pooled 1280-d feature vector, for use as a (frozen) backbone.
        num_classes: Classifier size, used only with ``include_top``.
        dropout: Dropout before the classifier (active only in training).
        weights: ``"imagenet"`` loads ``models/backbones/efficientnet-lite0/``; a path loads
            that ``.npz`` by layer name; None leaves the random initialization.

    Returns:
        An uncompiled ``keras.Model``.
    """
    return build_efficientnet_lite(
        "efficientnet-lite0",
        input_shape=input_shape,
        include_top=include_top,
        num_classes=num_classes,
        dropout=dropout,
        weights=weights,
    )


def _resolve_weights(
    spec: EfficientNetLiteSpec,
    weights: str | Path | None,
    include_top: bool,
    num_classes: int,
) -> Path | None:
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        if spec.weights_file is None:
            raise ValueError(f"no ImageNet weights are committed for {spec.name}")
        if include_top and num_classes != 1000:
            raise ValueError(
                "weights='imagenet' with include_top=True needs num_classes=1000; "
                "use include_top=False and add your own classifier"
            )
        path = WEIGHTS_DIR / spec.name / spec.weights_file
    else:
        path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def keras_weight_arrays(model: keras.Model) -> dict[str, np.ndarray]:
    """All weights of ``model`` keyed ``"<layer name>/<weight name>"``, e.g. ``stem_bn/gamma``.

    This is the format of the committed ``.npz`` (``np.savez_compressed(path, **arrays)``).
    """
    arrays: dict[str, np.ndarray] = {}
    for layer in model.layers:
        for var in layer.weights:
            arrays[f"{layer.name}/{var.name}"] = np.asarray(var.numpy())
    return arrays


def load_weights_by_name(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    ignore_prefixes: tuple[str, ...] = (),
    source: str = "weights",
) -> None:
    """Assign ``arrays`` (keyed as in :func:`keras_weight_arrays`) to ``model`` by name.

    Every model weight must be present with the exact shape, and every array must be used
    (except keys starting with one of ``ignore_prefixes``), so a renamed or missing layer
    can never be silently left at its random initialization.

    Raises:
        WeightsMismatchError: naming the first offending layer/weight key.
    """
    used: set[str] = set()
    assignments = []
    for layer in model.layers:
        for var in layer.weights:
            key = f"{layer.name}/{var.name}"
            if key not in arrays:
                raise WeightsMismatchError(
                    f"{source}: missing array {key!r} for layer {layer.name!r}"
                )
            value = arrays[key]
            if tuple(value.shape) != tuple(var.shape):
                raise WeightsMismatchError(
                    f"{source}: array {key!r} for layer {layer.name!r} has shape "
                    f"{tuple(value.shape)}, the model expects {tuple(var.shape)}"
                )
            assignments.append((var, value))
            used.add(key)
    unused = sorted(k for k in arrays if k not in used and not k.startswith(ignore_prefixes))
    if unused:
        raise WeightsMismatchError(f"{source}: arrays match no layer of the model: {unused}")
    # Assign only once everything checked out, so a failure leaves the model untouched.
    for var, value in assignments:
        var.assign(value.astype(var.dtype, copy=False))
