"""Smoke test of bench/estimator_vs_mlp.py (CI: `pytest bench --benchmark-disable`): its protocol runs and pairs the models."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

import estimator_vs_mlp  # noqa: E402  (bench/ is on the path of its own tests)
from sklearn.datasets import make_moons  # noqa: E402


def test_every_model_is_scored_and_timed_on_the_same_folds():
    X, y = make_moons(60, noise=0.1, random_state=0)
    results = estimator_vs_mlp.measure(X, y, folds=3, scaled=True, seeds=(0,))
    assert list(results) == list(estimator_vs_mlp.MODELS)
    for accuracy, seconds in results.values():
        assert 0.5 < accuracy <= 1.0 and seconds > 0
    assert results["MoonxpClassifier()"][0] > 0.9
