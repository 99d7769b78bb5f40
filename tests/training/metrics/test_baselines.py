"""Classical baselines on real data (scikit-learn's digits)."""

import numpy as np
import pytest

from training.metrics import baselines

# ---- baselines ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()  # 1,797 real 8x8 handwritten digits
    x, y = data.data.astype(np.float32), data.target
    return x[:1200], y[:1200], x[1200:], y[1200:]


def test_baselines_on_real_digits(digits):
    train_x, train_y, test_x, test_y = digits
    results = baselines(train_x, train_y, test_x, test_y, "multiclass", max_train=500)
    assert len(results) == 5
    for name, entry in results.items():
        assert entry["seconds"] >= 0, name
        assert 0.5 < entry["accuracy"] <= 1.0, name
    assert results["k-nearest neighbours (k=5)"]["accuracy"] > 0.9
    assert results["k-nearest neighbours (k=5)"]["train_size"] == 1200
    assert results["SVM (RBF kernel)"]["train_size"] == 500  # the slow ones see a sample


def test_baselines_multilabel_and_skips(digits):
    train_x, train_y, test_x, test_y = digits

    def tags(y):  # two real attributes per digit: even, and greater than 4
        return np.stack([y % 2 == 0, y > 4], axis=1).astype(np.float32)

    results = baselines(train_x, tags(train_y), test_x, tags(test_y), "multilabel")
    for name, entry in results.items():
        assert 0.5 < entry["map"] <= 1.0, name
        assert 0.0 < entry["accuracy"] <= 1.0, name
    single = baselines(train_x[:20], np.zeros(20, int), test_x[:5], np.zeros(5, int), "binary")
    assert all("single class" in entry["skipped"] for entry in single.values())
