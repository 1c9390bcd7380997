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


# ---------------------------------------------------------------- the homework inside

def moons(n: int = 80, noise: float = 0.1, seed: int = 0):
    X, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    return X * 2 - 1, y


def test_initial_weights_are_the_homeworks_draw_at_two_inputs():
    params = initial_params(2, 50, 0)
    rng = np.random.RandomState(0)
    expected = (rng.normal(0, 1 / 2.0**0.5, [2, 50]), rng.normal(0, 1, [50]), rng.normal(0, 1 / 50**0.5, [50]))
    for p, e in zip(params, expected):
        np.testing.assert_array_equal(p, e)
    W = initial_params(30, 2000, 1).W
    assert W.shape == (30, 2000)
    assert abs(W.var() - 1 / 30) < 0.1 / 30  # N(0, 1/D): preactivations keep their scale for any D


def test_fit_is_moonxp_train_on_signed_labels():
    X, y = moons()
    clf = MoonxpClassifier(random_state=3).fit(X, y)
    params, errors = moonxp.train(initial_params(2, 50, 3), X, y * 2.0 - 1, lr=0.1, iters=128)
    np.testing.assert_array_equal(clf.errors_, errors)
    for p, q in zip(clf.params_, params):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(clf.decision_function(X), moonxp.forward(params, X))
    assert clf.score(X, y) > 0.95
    assert clf.n_features_in_ == 2 and list(clf.classes_) == [0, 1]


def test_any_two_labels_and_the_positive_class():
    X, y = moons()
    labels = np.where(y == 1, "yes", "no")
    clf = MoonxpClassifier(random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["no", "yes"]
    predicted = clf.predict(X)
    assert set(predicted) <= {"no", "yes"}
    np.testing.assert_array_equal(predicted == "yes", clf.decision_function(X) > 0)


def test_more_than_two_classes_is_one_clear_error():
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(ValueError, match="Only binary classification is supported.*OneVsRestClassifier"):
        MoonxpClassifier().fit(X, np.arange(30) % 3)
    with pytest.raises(ValueError, match="one class only"):
        MoonxpClassifier().fit(X, np.zeros(30))


@pytest.mark.parametrize("params, phrase", [({"hidden": 0}, "hidden must be an integer >= 1"),
                                            ({"lr": -1.0}, "learning rate must be a finite number > 0"),
                                            ({"iters": 2.5}, "iters must be an integer >= 0")])
def test_bad_hyperparameters_fail_in_fit(params, phrase):
    clf = MoonxpClassifier(**params)  # scikit-learn's rule: __init__ stores, fit validates
    with pytest.raises(ValueError, match=phrase):
        clf.fit(*moons(20))


# ---------------------------------------------------------------- Array API dispatch

def test_dispatch_keeps_namespace_device_and_dtype(case):
    """fit/predict on the case's arrays stay in its namespace, on its device, in its dtype."""
    from conftest import assert_on_case
    if case.name == "jax":
        pytest.skip("scikit-learn's array API dispatch does not cover JAX")
    X, y = moons(60)
    reference = MoonxpClassifier(random_state=0).fit(X, y)
    Xc, yc = case.asarray(X), case.asarray(y)
    with sklearn.config_context(array_api_dispatch=True):
        clf = MoonxpClassifier(random_state=0).fit(Xc, yc)
        for a in (clf.W_, clf.b_, clf.v_, clf.errors_, clf.decision_function(Xc), clf.predict(Xc)):
            assert_on_case(a, case)
        predicted = moonxp.to_host(clf.predict(Xc))
        accuracy = clf.score(Xc, yc)
    assert accuracy > 0.9
    agreement = (predicted == reference.predict(X)).mean()
    assert agreement >= (1.0 if case.dtype_name == "float64" else 0.95)
    if case.dtype_name == "float64":
        np.testing.assert_allclose(moonxp.to_host(clf.errors_), reference.errors_, rtol=1e-9, atol=1e-12)


def _forbid(monkeypatch, cls, names):
    def refuse(*args, **kwargs):
        raise AssertionError("fit moved data to the host")
    for name in names:
        monkeypatch.setattr(cls, name, refuse, raising=False)


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_fit_never_copies_the_data_to_the_host(library, monkeypatch):
    module = pytest.importorskip(library)
    X, y = moons(40)
    Xc, yc = module.asarray(X), module.asarray(y * 1.0)
    cls = type(Xc)
    _forbid(monkeypatch, cls, ["__array__", "numpy", "tolist", "__dlpack__", "cpu"])
    with sklearn.config_context(array_api_dispatch=True):
        clf = MoonxpClassifier(random_state=0, iters=8).fit(Xc, yc)
    assert type(clf.W_) is cls and type(clf.errors_) is cls


# ---------------------------------------------------------------- scikit-learn's tools

def test_pipeline_grid_search_cross_validation_clone_and_pickle():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = moons(120, noise=0.2)
    pipe = make_pipeline(StandardScaler(), MoonxpClassifier(random_state=0, iters=64))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(pipe, {"moonxpclassifier__hidden": [5, 50], "moonxpclassifier__lr": [0.05, 0.1],
                                 "moonxpclassifier__iters": [16, 64]}, cv=3).fit(X, y)
    assert set(search.best_params_) == {"moonxpclassifier__hidden", "moonxpclassifier__lr", "moonxpclassifier__iters"}
    assert search.best_score_ > 0.8
    fitted = pipe.fit(X, y)
    copy = clone(fitted)
    assert copy.get_params()["moonxpclassifier__iters"] == 64 and not hasattr(copy[-1], "W_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.decision_function(X), fitted.decision_function(X))


def test_decision_boundary_display_on_the_moons():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from sklearn.inspection import DecisionBoundaryDisplay
    X, y = moons()
    clf = MoonxpClassifier(random_state=0).fit(X, y)
    ax = Figure().add_subplot()
    display = DecisionBoundaryDisplay.from_estimator(clf, X, response_method="decision_function", ax=ax)
    assert display.response.shape == display.xx0.shape
    inside = clf.decision_function(np.c_[display.xx0.ravel(), display.xx1.ravel()]).reshape(display.xx0.shape)
    np.testing.assert_allclose(display.response, inside)
    assert (display.response > 0).any() and (display.response < 0).any()


def test_import_moonxp_does_not_import_scikit_learn():
    import subprocess
    import sys
    code = "import sys, moonxp; bad = [m for m in ('sklearn', 'matplotlib', 'scipy') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_feature_names_from_a_dataframe():
    pa = pytest.importorskip("pyarrow")  # a dataframe library scikit-learn reads column names from
    X, y = moons(40)
    table = pa.table({"x1": X[:, 0], "x2": X[:, 1]})
    clf = MoonxpClassifier(random_state=0, iters=4).fit(table, y)
    assert list(clf.feature_names_in_) == ["x1", "x2"]
    with pytest.warns(UserWarning, match="does not have valid feature names"):  # scikit-learn's own warning
        np.testing.assert_array_equal(clf.predict(table), clf.predict(X))
    renamed = pa.table({"u": X[:, 0], "x2": X[:, 1]})
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(renamed)


@pytest.mark.slow
def test_breast_cancer_example_prints_the_three_models(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "examples" / "breast_cancer.py"
    spec = importlib.util.spec_from_file_location("breast_cancer", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main()
    rows = {line.split("(")[0]: float(line.split()[-2]) for line in capsys.readouterr().out.splitlines()
            if line.startswith(("Moonxp", "MLP", "Perceptron"))}
    assert set(rows) == {"MoonxpClassifier", "MLPClassifier", "Perceptron"}
    assert rows["MoonxpClassifier"] > 0.9  # 30 features, D-input network, behind a StandardScaler
