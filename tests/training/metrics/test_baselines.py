"""Classical baselines on real data (scikit-learn's digits)."""

import dataclasses
import importlib
import time

import numpy as np
import pytest

from training.metrics import baselines

# The module, not the function that training.metrics re-exports under the same name.
baselines_module = importlib.import_module("training.metrics.baselines")

# ---- baselines ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()  # 1,797 real 8x8 handwritten digits
    x, y = data.data.astype(np.float32), data.target
    return x[:1200], y[:1200], x[1200:], y[1200:]


class _Clock:
    """A perf_counter that moves only when told: each baseline's "seconds" is then known."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str):  # anything else the module uses from `time`
        return getattr(time, name)


class _TimedEstimator:
    """A real estimator whose fit and predict each take a known time on the fake clock."""

    def __init__(self, estimator, clock: _Clock, fit_s: float, predict_s: float) -> None:
        self.estimator, self.clock, self.fit_s, self.predict_s = estimator, clock, fit_s, predict_s

    def fit(self, x, y):
        self.clock.now += self.fit_s
        self.estimator.fit(x, y)
        return self

    def predict(self, x):
        self.clock.now += self.predict_s
        return self.estimator.predict(x)


@pytest.fixture
def timed_baselines(monkeypatch):
    """Every baseline's fit + predict costs a different, known time; sub-sampling (not part of
    fit + predict) costs time too. Returns the expected seconds per baseline."""
    clock, expected = _Clock(), {}
    monkeypatch.setattr(baselines_module, "time", clock)
    real_table, real_subsample = baselines_module._baseline_table, baselines_module._subsample

    def table():
        timed = []
        for k, spec in enumerate(real_table()):
            fit_s, predict_s = 1.0 + k, 0.25 * (k + 1)
            expected[spec.name] = fit_s + predict_s

            def build(n, seed, build=spec.build, fit_s=fit_s, predict_s=predict_s):
                return _TimedEstimator(build(n, seed), clock, fit_s, predict_s)

            timed.append(dataclasses.replace(spec, build=build))
        return timed

    def subsample(*args, **kwargs):
        clock.now += 100.0
        return real_subsample(*args, **kwargs)

    monkeypatch.setattr(baselines_module, "_baseline_table", table)
    monkeypatch.setattr(baselines_module, "_subsample", subsample)
    return expected


def test_baselines_on_real_digits(digits, timed_baselines):
    train_x, train_y, test_x, test_y = digits
    results = baselines(train_x, train_y, test_x, test_y, "multiclass", max_train=500)
    assert len(results) == 5
    for name, entry in results.items():
        # "seconds" is that model's own fit + predict time: not the run so far, not the
        # sampling before it.
        assert entry["seconds"] == pytest.approx(timed_baselines[name]), name
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
