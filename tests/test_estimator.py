"""MoonxpClassifier: scikit-learn's own estimator checks, its Array API dispatch, and its place in sklearn tools."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # scikit-learn's array API checks skip without it

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import moonxp  # noqa: E402
from moonxp.estimator import MoonxpClassifier, initial_params  # noqa: E402


def _checks():
    """scikit-learn's checks for MoonxpClassifier, those on CuPy or CUDA marked `cuda` (skipped without a GPU)."""
    mark = parametrize_with_checks([MoonxpClassifier(random_state=0)])
    names, cases, ids = mark.args[0], list(mark.args[1]), mark.kwargs["ids"]
    params = []
    for case in cases:
        values = case.values if hasattr(case, "values") else case
        name = ids(values[1]) if callable(ids) else str(values[1])
        gpu = "cupy" in name or "cuda" in name
        marks = list(getattr(case, "marks", ())) + ([pytest.mark.cuda] if gpu else [])
        params.append(pytest.param(*values, marks=marks, id=f"{ids(values[0])}-{name}"))
    return pytest.mark.parametrize(names, params)


@_checks()
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
