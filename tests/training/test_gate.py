"""The int8 accuracy gate on metrics with known answers."""

import pytest

from training.gate import compare_float_int8

# ---- the gate -------------------------------------------------------------------------------


def _metrics_with(accuracy: float, f1s: dict[str, float]) -> dict:
    return {
        "task": "multiclass",
        "accuracy": accuracy,
        "per_class": [{"label": k, "f1": v} for k, v in f1s.items()],
    }


def test_gate_fails_and_names_the_worst_classes():
    float_m = _metrics_with(0.912, {"shirt": 0.80, "pullover": 0.85, "bag": 0.97})
    int8_m = _metrics_with(0.889, {"shirt": 0.739, "pullover": 0.82, "bag": 0.975})
    gate = compare_float_int8(float_m, int8_m, max_drop_points=1.0)
    assert not gate["passed"]
    assert gate["drop_points"] == pytest.approx(2.3)
    assert [r["label"] for r in gate["worst_classes"]] == ["shirt", "pullover"]
    assert gate["message"].startswith("int8 loses 2.3 points of accuracy (0.912 -> 0.889)")
    assert "shirt (-6.1), pullover (-3.0)" in gate["message"]


def test_gate_passes_within_the_limit_and_uses_map_for_multilabel():
    gate = compare_float_int8(_metrics_with(0.9, {"a": 0.9}), _metrics_with(0.895, {"a": 0.9}))
    assert gate["passed"] and gate["drop_points"] == 0.5 and gate["worst_classes"] == []
    better = compare_float_int8(_metrics_with(0.9, {}), _metrics_with(0.91, {}))
    assert better["passed"] and better["drop_points"] == -1.0
    ml = compare_float_int8(
        {"task": "multilabel", "map": 0.95, "accuracy": 0.5, "per_class": []},
        {"task": "multilabel", "map": 0.90, "accuracy": 0.5, "per_class": []},
    )
    assert ml["metric"] == "mAP" and not ml["passed"] and ml["drop_points"] == 5.0


def test_gate_tells_a_small_split_loss_from_chance():
    # 30 test images: one flipped image is 3.3 points, but 1 image proves nothing.
    small_float = _metrics_with(1.0, {"a": 1.0}) | {"n": 30}
    small_int8 = _metrics_with(29 / 30, {"a": 0.97}) | {"n": 30}
    gate = compare_float_int8(small_float, small_int8, max_drop_points=1.0)
    assert gate["passed"] and gate["within_chance"] and gate["lost_images"] == 1.0
    assert "within chance" in gate["message"]
    # 5 lost images of 30 are beyond chance (p = 0.5**5 < 0.05): the gate fails.
    worse = compare_float_int8(small_float, _metrics_with(25 / 30, {}) | {"n": 30})
    assert not worse["passed"] and not worse["within_chance"]
    # 10,000 images: 1.5 points is 150 images, the point limit alone decides.
    big = compare_float_int8(
        _metrics_with(0.90, {}) | {"n": 10000}, _metrics_with(0.885, {}) | {"n": 10000}
    )
    assert not big["passed"] and big["lost_images"] == 150
