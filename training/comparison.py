"""The shipped model against classical baselines that can embarrass it: scikit-learn models
on the backbone's embeddings *and* on raw downscaled pixels, on the same split; and a plain
verdict on whether the model beats the best of them."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training import metrics
from training.data.pixels import PixelArray, batches
from training.learning_curve import learning_curve
from training.phases import DecodedData, Trained, say
from training.search import Chosen

RAW_MAX_SIZE = 32  # raw-pixel baselines see the images at the native size, at most this


def raw_pixels(pixels: PixelArray, size: int, grayscale: bool) -> np.ndarray:
    """(N, size * size * C) float32 in 0..1: each image area-downscaled to size x size."""
    out = []
    for image in (image for batch in batches(pixels, 256) for image in batch):
        small = image if image.shape[0] == size else cv2.resize(
            image, (size, size), interpolation=cv2.INTER_AREA
        )  # fmt: skip
        small = small.reshape(size, size, -1).astype(np.float32)
        if grayscale:
            small = small.mean(axis=2, keepdims=True)
        out.append(small.reshape(-1) / 255.0)
    return np.stack(out) if out else np.zeros((0, size * size), np.float32)


def raw_shape(native_size: int, grayscale: bool, model_size: int) -> tuple[int, int]:
    """(size, channels) of the raw-pixel baselines: native size up to RAW_MAX_SIZE."""
    return min(native_size or model_size, RAW_MAX_SIZE, model_size), 1 if grayscale else 3


def all_baselines(
    trained: Trained,
    data: DecodedData,
    task: str,
    raw: tuple[int, int],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Every baseline on the embeddings and on raw pixels (``raw`` = (size, channels))."""
    results = {
        f"{name} · embeddings": entry
        for name, entry in metrics.baselines(
            trained.baseline_train,
            data.y_train,
            trained.test_embeddings,
            data.y_test,
            task,
            seed=seed,
        ).items()
    }
    size, channels = raw
    grey = channels == 1
    raw_train = raw_pixels(data.train_px, size, grey)
    raw_test = raw_pixels(data.test_px, size, grey)
    for name, entry in metrics.baselines(
        raw_train, data.y_train, raw_test, data.y_test, task, seed=seed
    ).items():
        results[f"{name} · raw pixels {size}x{size}x{channels}"] = entry
    return results


def _figure(entry: dict[str, Any], task: str) -> float | None:
    value = entry.get("map" if task == "multilabel" else "accuracy")
    return None if value is None else float(value)


def baseline_verdict(
    model: dict[str, Any], baselines: dict[str, dict[str, Any]], task: str
) -> dict[str, Any]:
    """Does the shipped model (its test figures) beat the best baseline? Said plainly."""
    metric = "mAP" if task == "multilabel" else "accuracy"
    scored = [(f, name) for name, e in baselines.items() if (f := _figure(e, task)) is not None]
    ours = _figure(model, task)
    if not scored or ours is None:
        return {"beats": None, "message": "no baseline could be scored"}
    best, name = max(scored)
    beats = ours > best
    if ours == best:
        message = (
            f"the model only ties the best classical baseline: test {metric} {ours:.3f}, the "
            f"same as {name}"
        )
    elif beats:
        message = (
            f"the model beats every classical baseline: test {metric} {ours:.3f} vs the best, "
            f"{name}, {best:.3f}"
        )
    else:
        message = (
            f"NO candidate beats the best classical baseline: {name} reaches test {metric} "
            f"{best:.3f}, the model {ours:.3f}; this data may need more images, another input "
            "size or a longer --time-budget (the baseline itself is not shipped)"
        )
    return {"beats": bool(beats), "best": name, "best_value": best, "model": ours,
            "metric": metric, "message": message}  # fmt: skip


def compare(
    chosen: Chosen, shipped: dict[str, Any], progress: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The classical baselines (embeddings and raw pixels), the verdict of the shipped
    model's test figures against them, and (in the verdict, under ``learning_curve``) the
    learning curve."""
    config, setup = chosen.config, chosen.setup
    profile = chosen.section.get("profile") or {}
    raw = raw_shape(profile.get("native_size", 0), bool(profile.get("grayscale")), setup.size)
    if progress:
        say(f"classical baselines on the embeddings and on raw pixels ({raw[0]} px)")
    results = all_baselines(chosen.trained, chosen.data, config.task, raw, config.seed)
    verdict = baseline_verdict(shipped, results, config.task)
    if progress or verdict["beats"] is False:
        say(verdict["message"])
    verdict["learning_curve"] = learning_curve(
        chosen.trained, chosen.data, config, pretrained=setup.backbone.pretrained
    )
    if progress:
        say(verdict["learning_curve"]["summary"])
    return results, verdict


__all__ = [
    "RAW_MAX_SIZE",
    "all_baselines",
    "baseline_verdict",
    "compare",
    "raw_pixels",
    "raw_shape",
]
