"""Decoding for the four task types, on synthetic outputs."""

import numpy as np
import pytest

from device.inference.bundle import Manifest, TensorQuantization
from device.inference.decode import (
    UNKNOWN,
    Hierarchy,
    decode_binary,
    decode_hierarchical,
    decode_multiclass,
    decode_multilabel,
    dequantize,
    make_decoder,
    softmax,
    top_k,
)

TAXONOMY = {
    "animal": None,
    "insect": "animal",
    "bird": "animal",
    "aphid": "insect",
    "beetle": "insect",
    "sparrow": "bird",
    "vehicle": None,
    "car": "vehicle",
}
LEAVES = ["aphid", "beetle", "sparrow", "car"]


def test_dequantize_int8_does_not_wrap():
    raw = np.array([[-128, 127, 0]], dtype=np.int8)
    values = dequantize(raw, TensorQuantization(scale=0.5, zero_point=-128))
    np.testing.assert_allclose(values, [0.0, 127.5, 64.0])
    uint = dequantize(np.array([255, 0], np.uint8), TensorQuantization(scale=1 / 256, zero_point=0))
    np.testing.assert_allclose(uint, [255 / 256, 0.0])


def test_softmax_is_stable_for_large_logits():
    probs = softmax(np.array([1000.0, 1000.0, -1000.0], np.float32))
    np.testing.assert_allclose(probs, [0.5, 0.5, 0.0], atol=1e-6)


def test_top_k_orders_by_score_and_clamps_k():
    probs = np.array([0.1, 0.5, 0.15, 0.25])
    assert [x.label for x in top_k(probs, "abcd", 2)] == ["b", "d"]
    assert [x.label for x in top_k(probs, "abcd", 10)] == ["b", "d", "c", "a"]


@pytest.mark.parametrize(("p", "expected"), [(0.8, "person"), (0.59, "empty"), (0.6, "person")])
def test_binary_uses_the_calibrated_threshold(p, expected):
    prediction = decode_binary(np.array([p]), ["empty", "person"], threshold=0.6)
    assert prediction.label == expected
    assert prediction.scores[0].label == "person" and prediction.scores[0].score == pytest.approx(p)


def test_binary_two_way_softmax_reads_the_positive_column():
    assert decode_binary(np.array([0.3, 0.7]), ["empty", "person"], 0.5).label == "person"


def test_multiclass_abstains_when_unsure():
    labels = ["cat", "dog", "fox"]
    sure = decode_multiclass(np.array([0.8, 0.15, 0.05]), labels, k=2, abstain=0.5)
    assert sure.label == "cat" and [x.label for x in sure.scores] == ["cat", "dog"]
    unsure = decode_multiclass(np.array([0.4, 0.35, 0.25]), labels, k=3, abstain=0.5)
    assert unsure.label == UNKNOWN and unsure.labels[0].score == pytest.approx(0.4)
    assert unsure.scores[0].label == "cat"  # the ranking is still reported


def test_multiclass_min_score_hides_weak_scores_but_keeps_the_best():
    pred = decode_multiclass(np.array([0.5, 0.3, 0.2]), ["a", "b", "c"], k=3, min_score=0.25)
    assert [x.label for x in pred.scores] == ["a", "b"]
    pred = decode_multiclass(np.array([0.4, 0.3, 0.3]), ["a", "b", "c"], k=3, min_score=0.9)
    assert [x.label for x in pred.scores] == ["a"]


def test_multilabel_per_label_thresholds():
    labels = ["bird", "cat", "rain"]
    probs = np.array([0.35, 0.9, 0.45])
    pred = decode_multilabel(probs, labels, {"bird": 0.3, "rain": 0.5})
    assert [x.label for x in pred.labels] == ["cat", "bird"]  # cat uses the default 0.5
    assert decode_multilabel(np.zeros(3), labels, {}).labels == ()


def test_hierarchy_sums_leaves_up_the_tree():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    leaf_probs = np.array([0.3, 0.3, 0.1, 0.3], np.float32)
    assert hierarchy.probability(leaf_probs, "insect") == pytest.approx(0.6)
    assert hierarchy.probability(leaf_probs, "animal") == pytest.approx(0.7)
    assert hierarchy.probability(leaf_probs, "vehicle") == pytest.approx(0.3)
    assert hierarchy.probability(leaf_probs, "sparrow") == pytest.approx(0.1)
    assert hierarchy.leaves == tuple(LEAVES)


def test_hierarchical_reports_the_leaf_when_sure():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    pred = decode_hierarchical(np.array([0.9, 0.05, 0.03, 0.02]), hierarchy, threshold=0.5)
    assert [x.label for x in pred.path] == ["animal", "insect", "aphid"]
    assert pred.label == "aphid"


def test_hierarchical_backs_off_to_the_parent_when_the_leaf_is_unsure():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    pred = decode_hierarchical(np.array([0.4, 0.35, 0.05, 0.2]), hierarchy, threshold=0.5)
    assert pred.label == "insect" and pred.labels[0].score == pytest.approx(0.75)
    assert [x.label for x in pred.path] == ["animal", "insect"]
    assert pred.scores[0].label == "aphid"


def test_hierarchical_is_unknown_when_no_top_level_node_is_sure():
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    pred = decode_hierarchical(np.array([0.2, 0.1, 0.15, 0.55]), hierarchy, threshold=0.6)
    assert pred.label == UNKNOWN and pred.path == ()


def manifest(task: str, labels: list[str], size: int, **extra) -> Manifest:
    return Manifest(
        name="t",
        task=task,
        labels=labels,
        input={"height": 4, "width": 4, "dtype": "uint8"},
        output={"activation": extra.pop("activation", "none"), "size": size},
        quantization={"scheme": "int8"},
        model_sha256="0" * 64,
        **extra,
    )


def test_make_decoder_applies_softmax_to_quantized_logits():
    m = manifest("multiclass", ["a", "b", "c"], 3, thresholds={"abstain": 0.5})
    quant = TensorQuantization(scale=0.1, zero_point=0)
    decode = make_decoder(m, quant, k=3)
    pred = decode(np.array([[50, 10, 0]], np.int8))  # logits 5, 1, 0
    assert pred.label == "a"
    assert pred.scores[0].score == pytest.approx(softmax(np.array([5.0, 1.0, 0.0]))[0], rel=1e-5)


def test_make_decoder_sigmoid_for_multilabel_and_single_output_binary():
    multi = make_decoder(manifest("multilabel", ["x", "y"], 2), None)
    assert [x.label for x in multi(np.array([[3.0, -3.0]], np.float32)).labels] == ["x"]
    binary = make_decoder(manifest("binary", ["no", "yes"], 1), None)
    assert binary(np.array([[2.0]], np.float32)).label == "yes"
    assert binary(np.array([[-2.0]], np.float32)).label == "no"


def test_make_decoder_hierarchical_from_manifest():
    m = manifest(
        "hierarchical",
        LEAVES,
        4,
        activation="softmax",
        taxonomy=TAXONOMY,
        thresholds={"hierarchy": 0.5},
    )
    pred = make_decoder(m, None)(np.array([[0.4, 0.35, 0.05, 0.2]], np.float32))
    assert pred.to_dict()["hierarchy"][-1]["label"] == "insect"
