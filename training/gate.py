"""The int8 accuracy gate: does the exported (int8) model stay close enough to the float one?"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from training.metrics.per_class import rounded

# A net loss of fewer images than this cannot be told from chance: even when int8 never fixes
# an image float got wrong, 4 lost images have a one-sided exact McNemar p of 0.5**4 = 0.06.
MIN_LOST_IMAGES = 5


def main_figure(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """The one number the gate compares: accuracy, or mAP for multilabel."""
    if metrics.get("task") == "multilabel":
        return "mAP", float(metrics.get("map") or 0.0)
    return "accuracy", float(metrics["accuracy"])


def compare_float_int8(
    float_metrics: Mapping[str, Any],
    int8_metrics: Mapping[str, Any],
    max_drop_points: float = 1.0,
    min_lost_images: int = MIN_LOST_IMAGES,
) -> dict[str, Any]:
    """The int8 accuracy gate: does the int8 model stay within ``max_drop_points`` percentage
    points of the float model on the main figure (accuracy; multilabel: mAP)?

    On a small test split one image is several points, so a drop also has to amount to at
    least ``min_lost_images`` images (net) before it fails the gate: fewer is within chance
    (exact McNemar test, p > 0.05). With 10,000 test images one point is 100 images, and the
    point limit alone decides.

    Returns ``passed``, ``drop_points`` (float minus int8, in points; negative when int8 does
    better), the two figures, ``per_class`` F1 drops (points), ``worst_classes`` (up to 3 that
    lost F1, worst first) and a one-line ``message`` naming them.
    """
    metric, float_value = main_figure(float_metrics)
    _, int8_value = main_figure(int8_metrics)
    drop = round((float_value - int8_value) * 100, 2)
    per_class = _per_class_drops(float_metrics, int8_metrics)
    worst = sorted((r for r in per_class if r["drop"] > 0), key=lambda r: -r["drop"])[:3]
    n = int(int8_metrics.get("n") or float_metrics.get("n") or 0)
    lost_images = round(drop * n / 100, 1)
    over_limit = drop > max_drop_points
    # (A negative limit demands a gain: no chance allowance then.)
    within_chance = over_limit and max_drop_points >= 0 and n > 0 and lost_images < min_lost_images
    passed = not over_limit or within_chance
    change = f"{float_value:.3f} -> {int8_value:.3f}"
    if drop > 0:
        message = f"int8 loses {drop:.1f} points of {metric} ({change})"
    else:
        message = f"int8 loses nothing in {metric} ({change}, {-drop:+.1f} points)"
    if within_chance:
        message += (
            f", more than the {max_drop_points:g}-point limit but only {lost_images:g} of {n} "
            f"test images: within chance (fewer than {min_lost_images}); a larger test split "
            "would tell"
        )
    else:
        message += (
            f", within the {max_drop_points:g}-point limit"
            if passed
            else f", more than the {max_drop_points:g}-point limit"
        )
    if worst:
        message += "; most on: " + ", ".join(f"{r['label']} (-{r['drop']:.1f})" for r in worst)
    return {
        "passed": bool(passed),
        "metric": metric,
        "max_drop_points": max_drop_points,
        "drop_points": drop,
        "test_images": n,
        "lost_images": lost_images,
        "within_chance": bool(within_chance),
        "float": rounded(float_value),
        "int8": rounded(int8_value),
        "per_class": per_class,
        "worst_classes": worst,
        "message": message,
    }


def _per_class_drops(
    float_metrics: Mapping[str, Any], int8_metrics: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each class's F1 under both models and the drop in points, for classes both report."""
    int8_rows = {row["label"]: row for row in int8_metrics.get("per_class", [])}
    per_class = []
    for row in float_metrics.get("per_class", []):
        other = int8_rows.get(row["label"])
        if other is None:
            continue
        per_class.append(
            {
                "label": row["label"],
                "float_f1": row["f1"],
                "int8_f1": other["f1"],
                "drop": round((row["f1"] - other["f1"]) * 100, 2),
            }
        )
    return per_class
