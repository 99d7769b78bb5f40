"""Metrics and threshold calibration on arrays with known answers."""

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from device.inference.bundle import Thresholds
from device.inference.decode import Hierarchy, decode_hierarchical
from training.metrics import calibrate, compute_metrics, greedy_paths, stop_depth

LABELS = ["cat", "dog", "fox"]


def one_hot_probs(predicted: np.ndarray, n_labels: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities whose arg-max is ``predicted``, the rest spread evenly."""
    probs = np.full((len(predicted), n_labels), (1 - confidence) / (n_labels - 1), np.float32)
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


# ---- multiclass -----------------------------------------------------------------------------


def test_perfect_multiclass_classifier():
    targets = np.repeat(np.arange(3), [5, 7, 4])
    metrics = compute_metrics("multiclass", one_hot_probs(targets, 3), targets, LABELS, {})
    assert metrics["n"] == 16
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    assert metrics["confusion_matrix"] == np.diag([5, 7, 4]).tolist()
    assert metrics["confusion_labels"] == LABELS
    assert [row["support"] for row in metrics["per_class"]] == [5, 7, 4]
    assert "abstain" not in metrics


def test_classifier_always_wrong_on_one_class():
    targets = np.repeat(np.arange(3), [10, 10, 10])
    predicted = targets.copy()
    predicted[targets == 2] = 1  # every fox is called a dog
    metrics = compute_metrics("multiclass", one_hot_probs(predicted, 3), targets, LABELS, {})
    rows = {row["label"]: row for row in metrics["per_class"]}
    assert metrics["accuracy"] == pytest.approx(20 / 30, abs=1e-4)
    assert rows["fox"]["recall"] == 0.0 and rows["fox"]["f1"] == 0.0
    assert rows["fox"]["precision"] == 0.0  # never predicted: zero, not NaN
    assert rows["dog"]["precision"] == 0.5 and rows["dog"]["recall"] == 1.0
    assert rows["cat"]["f1"] == 1.0
    assert metrics["confusion_matrix"][2] == [0, 10, 0]
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-4)


def test_multiclass_figures_agree_with_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, 300)
    probs = rng.dirichlet(np.ones(5), 300).astype(np.float32)
    probs[np.arange(300), targets] += rng.uniform(0, 0.6, 300).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = list("abcde")
    metrics = compute_metrics("multiclass", probs, targets, labels, {})
    predicted = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=range(5), zero_division=0
    )
    for i, row in enumerate(metrics["per_class"]):
        assert row["precision"] == pytest.approx(precision[i], abs=1e-4)
        assert row["recall"] == pytest.approx(recall[i], abs=1e-4)
        assert row["f1"] == pytest.approx(f1[i], abs=1e-4)
        assert row["support"] == support[i]
    assert metrics["macro_f1"] == pytest.approx(f1_score(targets, predicted, average="macro"), 1e-3)
    assert metrics["confusion_matrix"] == confusion_matrix(targets, predicted).tolist()


def test_default_abstain_leaves_at_most_4_percent_unknown_and_raises_accuracy():
    # 90 right answers spread over 0.6..0.99, then 10 wrong ones at 0.35..0.5: rejecting them
    # all (10 %) is more than the default allows; the 4 least confident go.
    targets = np.zeros(100, dtype=np.int64)
    predicted = np.r_[np.zeros(90, int), np.ones(10, int)]
    conf = np.r_[np.linspace(0.99, 0.6, 90), np.linspace(0.5, 0.35, 10)]
    probs = np.stack([np.where(predicted == 0, conf, (1 - conf) / 2),
                      np.where(predicted == 1, conf, (1 - conf) / 2),
                      np.full(100, 0.0)], axis=1)  # fmt: skip
    probs[:, 2] = 1 - probs[:, :2].sum(axis=1)
    calibration = calibrate("multiclass", probs, targets, LABELS)
    threshold = calibration.thresholds["abstain"]
    assert conf[96] < threshold < conf[95]  # the four lowest rejected
    metrics = compute_metrics("multiclass", probs, targets, LABELS, calibration.thresholds)
    assert metrics["abstain"]["unknown_rate"] == pytest.approx(0.04)
    assert metrics["abstain"]["accuracy_on_answered"] > metrics["accuracy"]
    assert "at most 4% unknown" in calibration.notes[0]
    # Every confident answer right and the unsure ones too: nothing to gain, no abstain.
    right = one_hot_probs(np.zeros(100, int), 3, 0.9)
    assert calibrate("multiclass", right, targets, LABELS).thresholds["abstain"] is None
    curve = metrics["coverage_curve"]
    assert curve[0][:2] == [1.0, 0.9] and curve[-1][0] == 0.5 and curve[-1][1] == 1.0


def test_abstain_threshold_separates_confident_right_from_unsure_wrong():
    # 80 right answers at 0.9 confidence, 20 wrong ones at 0.4: accuracy 0.8 < 0.95.
    targets = np.zeros(100, dtype=np.int64)
    predicted = np.r_[np.zeros(80, int), np.ones(20, int)]
    probs = np.r_[one_hot_probs(predicted[:80], 3, 0.9), one_hot_probs(predicted[80:], 3, 0.4)]
    # The default rule may not reject 20 %; the precision-target rule (opt-in) does.
    assert calibrate("multiclass", probs, targets, LABELS).thresholds["abstain"] is None
    calibration = calibrate("multiclass", probs, targets, LABELS, abstain_max_unknown=None)
    assert calibration.thresholds["abstain"] == pytest.approx(0.65)
    assert "abstain 0.65" in calibration.notes[0]
    Thresholds.model_validate(calibration.thresholds)
    metrics = compute_metrics("multiclass", probs, targets, LABELS, calibration.thresholds)
    assert metrics["accuracy"] == 0.8  # top-1, every image answered
    assert metrics["abstain"]["coverage"] == 0.8
    assert metrics["abstain"]["accuracy_on_answered"] == 1.0
    assert metrics["abstain"]["unknown_rate"] == 0.2


def test_abstain_is_none_when_not_needed_or_not_reachable():
    targets = np.repeat(np.arange(3), 10)
    assert (
        calibrate("multiclass", one_hot_probs(targets, 3), targets, LABELS).thresholds["abstain"]
        is None
    )
    # The confident answers are the wrong ones: no threshold reaches the target precision.
    predicted = np.r_[targets[:15], (targets[15:] + 1) % 3]
    probs = np.r_[one_hot_probs(predicted[:15], 3, 0.5), one_hot_probs(predicted[15:], 3, 0.95)]
    calibration = calibrate("multiclass", probs, targets, LABELS, abstain_max_unknown=None)
    assert calibration.thresholds["abstain"] is None
    assert "no confidence threshold" in calibration.notes[0]
    # Reachable only by rejecting 90 % of the images: refused.
    predicted = np.r_[targets[:3], (targets[3:] + 1) % 3]
    probs = np.r_[one_hot_probs(predicted[:3], 3, 0.95), one_hot_probs(predicted[3:], 3, 0.5)]
    calibration = calibrate("multiclass", probs, targets, LABELS, abstain_max_unknown=None)
    assert calibration.thresholds["abstain"] is None
    assert "minimum" in calibration.notes[0]


# ---- binary ---------------------------------------------------------------------------------


def test_binary_threshold_recovered_on_separable_data():
    rng = np.random.default_rng(0)
    # A badly calibrated but perfectly separating model: positives 0.2-0.3, negatives 0-0.1.
    positives = rng.uniform(0.2, 0.3, 40)
    negatives = rng.uniform(0.0, 0.1, 60)
    scores = np.r_[negatives, positives].astype(np.float32)
    targets = np.r_[np.zeros(60, int), np.ones(40, int)]
    labels = ["no_face", "face"]
    thresholds = calibrate("binary", scores, targets, labels).thresholds
    assert negatives.max() < thresholds["binary"] < positives.min()
    assert thresholds["binary"] == pytest.approx((negatives.max() + positives.min()) / 2, abs=1e-6)
    metrics = compute_metrics("binary", scores[:, None], targets, labels, thresholds)
    assert metrics["accuracy"] == 1.0
    assert metrics["roc_auc"] == 1.0 and metrics["average_precision"] == 1.0
    assert metrics["confusion_matrix"] == [[60, 0], [0, 40]]
    # Two-column probabilities give the same figures, and a wide gap gives 0.5 itself.
    both = np.stack([1 - scores, scores], axis=1)
    assert compute_metrics("binary", both, targets, labels, thresholds)["accuracy"] == 1.0
    wide = np.r_[negatives, positives + 0.6].astype(np.float32)
    assert calibrate("binary", wide, targets, labels).thresholds["binary"] == 0.5


def test_binary_threshold_maximises_f1():
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 2, 400)
    scores = np.clip(rng.normal(0.35 + 0.3 * targets, 0.15), 0, 1).astype(np.float32)
    chosen = calibrate("binary", scores, targets, ["neg", "pos"]).thresholds["binary"]
    # Brute force over many scores as thresholds: none beats the chosen one.
    best = max(f1_score(targets, scores >= t) for t in np.unique(scores)[::4])
    assert f1_score(targets, scores >= chosen) >= best - 1e-9


def test_binary_degenerate_validation_keeps_default():
    calibration = calibrate("binary", np.array([0.9, 0.8, 0.7]), np.array([1, 1, 1]), ["n", "p"])
    assert calibration.thresholds["binary"] == 0.5
    assert "kept the default" in calibration.notes[0]


# ---- multilabel -----------------------------------------------------------------------------


def test_multilabel_thresholds_ap_and_exact_match():
    rng = np.random.default_rng(2)
    labels = ["shirt", "bag", "shoe", "hat"]
    targets = (rng.random((200, 4)) < 0.4).astype(np.float32)
    targets[:, 3] = 0  # "hat" never appears in validation
    probs = rng.uniform(0.0, 0.3, (200, 4)).astype(np.float32)
    probs[:, 0] += targets[:, 0] * 0.5  # separable: negatives < 0.3 <= 0.5 <= positives
    probs[:, 1] += targets[:, 1] * 0.35 + 0.1  # separable only below 0.5
    probs[:, 2] = rng.random(200)  # noise
    calibration = calibrate("multilabel", probs, targets, labels)
    per_label = calibration.thresholds["per_label"]
    assert set(per_label) == set(labels)
    assert (
        probs[targets[:, 0] == 0, 0].max()
        < per_label["shirt"]
        <= probs[targets[:, 0] == 1, 0].min()
    )
    assert (
        probs[targets[:, 1] == 0, 1].max() < per_label["bag"] <= probs[targets[:, 1] == 1, 1].min()
    )
    assert per_label["hat"] == 0.5
    assert any("hat (0/200 positive)" in note for note in calibration.notes)

    metrics = compute_metrics("multilabel", probs, targets, labels, calibration.thresholds)
    rows = {row["label"]: row for row in metrics["per_class"]}
    assert rows["shirt"]["f1"] == 1.0 and rows["bag"]["f1"] == 1.0
    for j, label in enumerate(labels[:3]):
        expected = average_precision_score(targets[:, j], probs[:, j])
        assert rows[label]["ap"] == pytest.approx(expected, abs=1e-4)
    assert rows["hat"]["ap"] is None and rows["hat"]["support"] == 0
    expected_map = np.mean([average_precision_score(targets[:, j], probs[:, j]) for j in range(3)])
    assert metrics["map"] == pytest.approx(expected_map, abs=1e-4)
    predicted = (probs >= np.array([per_label[x] for x in labels])).astype(int)
    assert metrics["accuracy"] == pytest.approx(np.mean(np.all(predicted == targets, 1)), abs=1e-4)
    assert metrics["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro"), 1e-3)
    assert "confusion_matrix" not in metrics


# ---- hierarchical ---------------------------------------------------------------------------

LEAVES = ["t-shirt", "shirt", "trouser", "bag"]
TAXONOMY = {
    "tops": None,
    "bottoms": None,
    "bag": None,
    "t-shirt": "tops",
    "shirt": "tops",
    "trouser": "bottoms",
}


def test_hierarchical_levels_and_backoff():
    # 10 of each leaf; every t-shirt is taken for a shirt (right top-level node, wrong leaf),
    # and split 0.45 / 0.50 so the device backs off to "tops" at threshold 0.6.
    targets = np.repeat(np.arange(4), 10)
    probs = one_hot_probs(targets, 4, 0.97)
    probs[:10] = [0.45, 0.5, 0.03, 0.02]
    metrics = compute_metrics("hierarchical", probs, targets, LEAVES, {"hierarchy": 0.6}, TAXONOMY)
    assert metrics["accuracy"] == 0.75
    assert metrics["levels"] == [{"level": 1, "accuracy": 1.0}, {"level": 2, "accuracy": 0.75}]
    assert metrics["confusion_matrix"][0] == [0, 10, 0, 0]
    backoff = metrics["backoff"]
    assert backoff["accuracy"] == 1.0  # "tops" is right for every t-shirt
    assert backoff["leaf_rate"] == 0.75
    assert backoff["unknown_rate"] == 0.0
    # bags answer at depth 1, trousers and shirts at 2, t-shirts back off to depth 1
    assert backoff["mean_depth"] == pytest.approx((10 * 1 + 10 * 2 + 10 * 2 + 10 * 1) / 40)
    # At 0.5 the device names the (wrong) shirt: back-off accuracy falls to 0.75.
    low = compute_metrics("hierarchical", probs, targets, LEAVES, {"hierarchy": 0.5}, TAXONOMY)
    assert low["backoff"]["accuracy"] == 0.75


def test_hierarchy_threshold_reaches_target_accuracy():
    targets = np.repeat(np.arange(4), 10)
    probs = one_hot_probs(targets, 4, 0.97)
    probs[:10] = [0.45, 0.5, 0.03, 0.02]  # unsure t-shirts: only "tops" is safe
    calibration = calibrate("hierarchical", probs, targets, LEAVES, TAXONOMY)
    threshold = calibration.thresholds["hierarchy"]
    assert 0.5 < threshold <= 0.97  # above the shirt's 0.5, at most the confident leaves' 0.97
    metrics = compute_metrics(
        "hierarchical", probs, targets, LEAVES, calibration.thresholds, TAXONOMY
    )
    assert metrics["backoff"]["accuracy"] == 1.0
    assert metrics["backoff"]["leaf_rate"] == 0.75  # the confident leaves are still named
    # A model right everywhere keeps the 0.5 floor.
    easy = calibrate(
        "hierarchical", one_hot_probs(targets, 4), targets, LEAVES, TAXONOMY
    ).thresholds
    assert easy["hierarchy"] == 0.5


def test_hierarchy_threshold_is_the_smallest_reaching_the_target():
    """On a hard random validation set, against the device decoder through compute_metrics."""
    rng = np.random.default_rng(5)
    targets = rng.integers(0, 4, 3000)
    probs = rng.dirichlet(np.full(4, 0.7), 3000).astype(np.float32)
    probs[np.arange(3000), targets] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    chosen = calibrate("hierarchical", probs, targets, LEAVES, TAXONOMY).thresholds["hierarchy"]
    assert 0.5 < chosen < 0.99

    def backoff_accuracy(threshold):
        return compute_metrics(
            "hierarchical", probs, targets, LEAVES, {"hierarchy": threshold}, TAXONOMY
        )["backoff"]["accuracy"]

    assert backoff_accuracy(chosen) >= 0.95
    assert backoff_accuracy(chosen - 0.002) < 0.95


def test_greedy_path_trick_matches_the_device_decoder():
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.full(4, 0.5), 50).astype(np.float32)
    hierarchy = Hierarchy.build(LEAVES, TAXONOMY)
    paths, scores = greedy_paths(probs, hierarchy)
    for row, path, path_scores in zip(probs, paths, scores, strict=True):
        for threshold in (0.3, 0.5, 0.62, 0.8, 0.95):
            answer = decode_hierarchical(row, hierarchy, threshold)
            assert len(answer.path) == stop_depth(path_scores, threshold)
            assert [x.label for x in answer.path] == path[: len(answer.path)]


# ---- bad input ------------------------------------------------------------------------------


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"probs: expected shape \(N, 3\)"):
        compute_metrics("multiclass", np.zeros((4, 2)), np.zeros(4, int), LABELS, {})
    with pytest.raises(ValueError, match="label indices must lie in"):
        compute_metrics("multiclass", np.zeros((2, 3)), np.array([0, 3]), LABELS, {})
    with pytest.raises(ValueError, match="task: expected one of"):
        compute_metrics("regression", np.zeros((2, 3)), np.zeros(2, int), LABELS, {})
    with pytest.raises(ValueError, match="taxonomy"):
        compute_metrics("hierarchical", np.zeros((2, 4)), np.zeros(2, int), LEAVES, {})
    with pytest.raises(ValueError, match="multilabel targets"):
        compute_metrics("multilabel", np.zeros((2, 3)), np.zeros(2), LABELS, {})
