"""Backbones and heads: a registry of specs (data), and the few functions that build models.

A Kestrel model is ``pixels (0..255) -> Rescaling -> backbone -> head -> [activation]``.
Rescaling lives inside the model, so the exported int8 model takes camera pixels as uint8
and the manifest's normalization is the identity.

Importing this module is cheap (no TensorFlow): the command line reads the registry for its
``--backbone`` choices. The builders import Keras when called.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from device.inference.bundle import InputSpec, Normalization

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class BackboneSpec:
    """What Kestrel needs to know about a feature extractor.

    Attributes:
        name: Registry key (``--backbone``).
        description: One line for ``--help`` and the manifest.
        default_size: Square input size used when ``image_size`` is not set.
        min_size: Smallest input size the architecture accepts.
        channels: Default input channels (3 = RGB, 1 = grayscale).
        normalization: ``(mean, std)`` on 0..255 pixels that the backbone was trained with;
            applied by a Rescaling layer inside the model.
        pretrained: Whether ``build`` loads trained weights (then the fast path of cached
            embeddings applies); otherwise the whole network is trained from scratch.
        embedding_size: Length of the pooled feature vector.
        build: ``(size, channels) -> keras.Model`` from normalized float input to the
            embedding vector.
        block_pattern: Regular expression whose first match in a layer name says which block
            the layer belongs to (for fine-tuning the top blocks).
    """

    name: str
    description: str
    default_size: int
    min_size: int
    channels: int
    normalization: tuple[float, float]
    pretrained: bool
    embedding_size: int
    build: Callable[[int, int], keras.Model]
    block_pattern: str

    def check_input(self, size: int, channels: int) -> None:
        """Raise ValueError when the backbone cannot take this input."""
        if size < self.min_size:
            raise ValueError(
                f"backbone {self.name}: image_size must be at least {self.min_size}, got {size}"
            )
        if self.pretrained and channels != 3:
            raise ValueError(
                f"backbone {self.name}: its pretrained weights need colour (3-channel) input; "
                "grayscale images are converted to RGB by the preprocessing anyway"
            )


def _efficientnet_lite0(size: int, channels: int) -> keras.Model:
    from training.backbones.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(
        input_shape=(size, size, channels), include_top=False, weights="imagenet"
    )


def _mobilenetv2(alpha: float) -> Callable[[int, int], keras.Model]:
    def build(size: int, channels: int) -> keras.Model:
        import keras

        # weights=None: keras.applications would download ImageNet weights (fails offline).
        return keras.applications.MobileNetV2(
            input_shape=(size, size, channels),
            alpha=alpha,
            include_top=False,
            weights=None,
            pooling="avg",
        )

    return build


def _small_cnn(size: int, channels: int) -> keras.Model:
    """Three conv blocks (32, 64, 128 filters) for tiny inputs; int8-friendly (ReLU, BN)."""
    import keras

    inputs = keras.Input((size, size, channels), name="image")
    x = inputs
    for block, filters in enumerate((32, 64, 128), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}"
            )(x)
            x = keras.layers.BatchNormalization(name=f"block{block}_bn{conv}")(x)
            x = keras.layers.ReLU(name=f"block{block}_relu{conv}")(x)
        if block < 3:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


# keras.applications names: Conv1, bn_Conv1, expanded_conv_*, block_<n>_*, Conv_1, Conv_1_bn.
_MOBILENET_BLOCKS = r"^(?:bn_)?(Conv1|expanded_conv|block_\d+|Conv_1)"


def _mobilenetv2_spec(alpha: float, default_size: int) -> BackboneSpec:
    """A randomly initialized MobileNetV2 of width ``alpha`` (1.0 is plain ``mobilenetv2``)."""
    return BackboneSpec(
        name="mobilenetv2" if alpha == 1.0 else f"mobilenetv2-{alpha}",
        description=f"MobileNetV2 alpha {alpha}, random init: trained from scratch "
        f"({default_size} px)",
        default_size=default_size,
        min_size=32,
        channels=3,
        normalization=(127.5, 127.5),
        pretrained=False,
        embedding_size=1280,
        build=_mobilenetv2(alpha),
        block_pattern=_MOBILENET_BLOCKS,
    )


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec(
            name="efficientnet-lite0",
            description="EfficientNet-Lite0, ImageNet-pretrained (default; 224 px)",
            default_size=224,
            min_size=32,
            channels=3,
            normalization=(127.0, 128.0),
            pretrained=True,
            embedding_size=1280,
            build=_efficientnet_lite0,
            block_pattern=r"^(stem|block\d+[a-z]|top)",
        ),
        _mobilenetv2_spec(1.0, default_size=224),
        _mobilenetv2_spec(0.35, default_size=96),
        BackboneSpec(
            name="small-cnn",
            description="small CNN for tiny inputs, random init: trained from scratch (64 px)",
            default_size=64,
            min_size=8,
            channels=3,
            normalization=(0.0, 255.0),
            pretrained=False,
            embedding_size=128,
            build=_small_cnn,
            block_pattern=r"^(block\d+)",
        ),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}") from None


@dataclass(frozen=True)
class HeadSpec:
    """The classification layer of a task: how many units and which activation."""

    units: Callable[[int], int]  # number of labels -> output units
    activation: str  # activation of the probabilities ("softmax" or "sigmoid")
    multi_hot: bool  # targets are per-label 0/1 (sigmoid losses) rather than one class


HEADS: dict[str, HeadSpec] = {
    "binary": HeadSpec(units=lambda n: 1, activation="sigmoid", multi_hot=True),
    "multiclass": HeadSpec(units=lambda n: n, activation="softmax", multi_hot=False),
    "multilabel": HeadSpec(units=lambda n: n, activation="sigmoid", multi_hot=True),
    "hierarchical": HeadSpec(units=lambda n: n, activation="softmax", multi_hot=False),
}

# Tasks whose exported model outputs logits when the output mode is "auto": an int8 softmax
# has a fixed 1/256 resolution, which would zero the small leaf probabilities that the device
# sums up the taxonomy.
LOGITS_BY_DEFAULT = frozenset({"hierarchical"})


def output_activation(task: str, mode: str = "auto") -> str:
    """The manifest's ``output.activation``: "softmax", "sigmoid" or "none" (logits)."""
    logits = mode == "logits" or (mode == "auto" and task in LOGITS_BY_DEFAULT)
    return "none" if logits else HEADS[task].activation


def resolve_input(
    spec: BackboneSpec, image_size: int | None, grayscale: bool | None
) -> tuple[int, int]:
    """(size, channels) from the config, falling back to the backbone's defaults."""
    size = image_size or spec.default_size
    channels = spec.channels if grayscale is None else (1 if grayscale else 3)
    spec.check_input(size, channels)
    return size, channels


def input_spec(size: int, channels: int, dtype: str) -> InputSpec:
    """The device input of a Kestrel model: centre crop, area resize, raw 0..255 pixels
    (the model rescales them itself, so the normalization is the identity)."""
    return InputSpec(
        height=size,
        width=size,
        channels=channels,
        color_order="RGB",
        dtype=dtype,
        fit="center_crop",
        interpolation="area",
        denoise="none",
        normalization=Normalization(),
    )


def build_head(task: str, num_labels: int, embedding_size: int, dropout: float) -> keras.Model:
    """Embedding -> logits (dropout, then one dense layer)."""
    import keras

    inputs = keras.Input((embedding_size,), name="embedding")
    x = keras.layers.Dropout(dropout, name="head_dropout")(inputs) if dropout > 0 else inputs
    logits = keras.layers.Dense(HEADS[task].units(num_labels), name="logits")(x)
    return keras.Model(inputs, logits, name="head")


def build_embedder(
    spec: BackboneSpec, backbone: keras.Model, size: int, channels: int
) -> keras.Model:
    """Pixels (float 0..255) -> embedding: the backbone with its rescaling in front."""
    import keras

    mean, std = spec.normalization
    inputs = keras.Input((size, size, channels), name="pixels")
    x = keras.layers.Rescaling(1 / std, offset=-mean / std, name="normalize")(inputs)
    return keras.Model(inputs, backbone(x), name="embedder")


def assemble(embedder: keras.Model, head: keras.Model, activation: str) -> keras.Model:
    """The model that is exported: pixels -> embedding -> head -> activation (or logits)."""
    import keras

    inputs = keras.Input(embedder.input_shape[1:], name="pixels")
    x = head(embedder(inputs))
    if activation != "none":
        x = keras.layers.Activation(activation, name=activation)(x)
    return keras.Model(inputs, x, name="kestrel_classifier")


def blocks(spec: BackboneSpec, backbone: keras.Model) -> list[list[Any]]:
    """The backbone's layers grouped into blocks, in order; layers matching no block (the
    input, pooling) and blocks without weights are left out."""
    pattern = re.compile(spec.block_pattern)
    groups: dict[str, list[Any]] = {}
    for layer in backbone.layers:
        match = pattern.match(layer.name)
        if match:
            groups.setdefault(match.group(1), []).append(layer)
    return [group for group in groups.values() if any(layer.weights for layer in group)]


def unfreeze_top_blocks(spec: BackboneSpec, backbone: keras.Model, count: int) -> int:
    """Make the last ``count`` blocks trainable, batch norm excepted (its statistics from
    pretraining are worth more than estimates from a few dozen images). Returns the number
    of layers unfrozen."""
    import keras

    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    unfrozen = 0
    for group in blocks(spec, backbone)[-count:]:
        for layer in group:
            if not isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
                unfrozen += 1
    return unfrozen
