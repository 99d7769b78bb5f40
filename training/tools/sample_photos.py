"""Int8 representative photos, available offline: what the build scripts quantize a model
with, and the held-out crops of their float-vs-int8 agreement checks.

No ImageNet images can be fetched here, so the representative set is made of random crops
(scale, aspect, flip) of the real photographs that ship inside scikit-image and scikit-learn
(all public domain, CC0 or CC-BY; see each loader's documentation). Crops are passed through the
device's own preprocessing, so the int8 converter sees exactly what the device will feed the
model.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from device.inference.bundle import InputSpec
from device.inference.preprocess import InputQuantizer, prepare

COLOUR_PHOTOS = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
)
GRAY_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock")


def offline_photos() -> dict[str, np.ndarray]:
    """Every real photo that ships offline, as BGR uint8 arrays keyed by name."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos: dict[str, np.ndarray] = {}
    for name in COLOUR_PHOTOS:
        photos[name] = cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)
    for name in GRAY_PHOTOS:
        photos[name] = cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_GRAY2BGR)
    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images, strict=True):
        name = filename.rsplit("/", 1)[-1].split(".")[0]
        photos[f"sklearn_{name}"] = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return photos


def random_crops(
    photos: dict[str, np.ndarray], count: int, seed: int
) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` random crops (10-100 % of the area, aspect 3:4 to 4:3, random flip), cycling
    through the photos so every one contributes equally."""
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    for i in range(count):
        name = names[i % len(names)]
        image = photos[name]
        h, w = image.shape[:2]
        area = rng.uniform(0.1, 1.0) * h * w
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, max(16, round(np.sqrt(area / aspect)))))
        cw = int(min(w, max(16, round(np.sqrt(area * aspect)))))
        y = int(rng.integers(0, h - ch + 1))
        x = int(rng.integers(0, w - cw + 1))
        crop = image[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        yield name, np.ascontiguousarray(crop)


def prepared_crops(
    photos: dict[str, np.ndarray], spec: InputSpec, count: int, seed: int
) -> np.ndarray:
    """Random crops run through the device's preprocessing to uint8 pixels, (N, H, W, C)."""
    # The pixels the device sees, before normalization and the model's own quantization.
    pixels = InputQuantizer.identity()
    crops = random_crops(photos, count, seed)
    return np.stack([prepare(crop, spec, pixels, "BGR") for _, crop in crops])
