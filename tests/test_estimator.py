"""MoonxpClassifier: scikit-learn's own estimator checks, its Array API dispatch, and its place in sklearn tools."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest
from array_api_compat import device as device_of

sklearn = pytest.importorskip("sklearn")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # scikit-learn's array API checks skip without it

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
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


HOMEWORK = {"loss": "perceptron", "lr": 0.1, "max_iter": 128, "n_iter_no_change": 128}  # never stops early


def test_perceptron_fit_is_moonxp_train_on_signed_labels():
    X, y = moons()
    with pytest.warns(ConvergenceWarning, match="max_iter=128"):
        clf = MoonxpClassifier(random_state=3, **HOMEWORK).fit(X, y)
    params, errors = moonxp.train(initial_params(2, 50, 3), X, y * 2.0 - 1, lr=0.1, iters=128)
    np.testing.assert_array_equal(clf.loss_curve_, errors[:-1])
    assert clf.n_iter_ == 128 and clf.best_loss_ == min(clf.loss_curve_)
    for p, q in zip(clf.params_, params):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(clf.decision_function(X), moonxp.forward(params, X))
    assert clf.score(X, y) > 0.95
    assert clf.n_features_in_ == 2 and list(clf.classes_) == [0, 1]


def test_defaults_learn_noisy_moons_behind_a_scaler():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = make_moons(n_samples=400, noise=0.2, random_state=0)
    pipe = make_pipeline(StandardScaler(), MoonxpClassifier(random_state=0)).fit(X[:300], y[:300])
    assert pipe.score(X[300:], y[300:]) >= 0.95  # held out; the homework's defaults score ~0.88 here
    clf = pipe[-1]
    assert 20 < clf.n_iter_ < clf.max_iter  # stopped by the tol rule, without a ConvergenceWarning


def test_stops_on_the_tol_rule_like_scikit_learn():
    X, y = moons(200, noise=0.2)
    clf = MoonxpClassifier(random_state=0, tol=1e-3, n_iter_no_change=5).fit(X, y)
    curve = clf.loss_curve_
    assert len(curve) == clf.n_iter_ < clf.max_iter
    best_before = min(curve[:-6])
    assert all(loss > best_before - 1e-3 for loss in curve[-6:])  # 6 steps (> 5) without improving by tol
    assert clf.best_loss_ == min(curve)


def test_max_iter_reached_warns_and_counts():
    X, y = moons(100, noise=0.2)
    with pytest.warns(ConvergenceWarning, match="max_iter=7"):
        clf = MoonxpClassifier(random_state=0, max_iter=7).fit(X, y)
    assert clf.n_iter_ == 7 and len(clf.loss_curve_) == 7


def test_warm_start_continues_where_fit_stopped():
    X, y = moons(100, noise=0.2)
    quiet = {"random_state": 0, "n_iter_no_change": 100}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = MoonxpClassifier(max_iter=30, **quiet).fit(X, y)
        warm = MoonxpClassifier(max_iter=10, warm_start=True, **quiet).fit(X, y)
        warm.set_params(max_iter=20).fit(X, y)
        cold = MoonxpClassifier(max_iter=10, **quiet).fit(X, y)
        cold.fit(X, y)
    assert warm.n_iter_ == 30 and warm.loss_curve_ == whole.loss_curve_
    for p, q in zip(warm.params_, whole.params_):
        np.testing.assert_array_equal(p, q)
    assert cold.n_iter_ == 10  # without warm_start, fit starts anew
    with pytest.raises(ValueError, match="warm_start can only be used where y has the same classes"):
        warm.fit(X, y + 1)


def test_partial_fit_is_one_step_per_call():
    X, y = moons(100, noise=0.2)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        MoonxpClassifier().partial_fit(X, y)
    clf = MoonxpClassifier(random_state=0)
    for _ in range(5):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.warns(ConvergenceWarning):
        fitted = MoonxpClassifier(random_state=0, max_iter=5).fit(X, y)
    assert clf.n_iter_ == 5 and clf.loss_curve_ == fitted.loss_curve_
    np.testing.assert_array_equal(clf.W_, fitted.W_)
    clf.partial_fit(X[y == 1], y[y == 1])  # a batch of one class is fine after the first call
    assert clf.n_iter_ == 6
    with pytest.raises(ValueError, match="labels outside classes_"):
        clf.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        clf.partial_fit(X, y, classes=[0, 2])


def test_sample_weight_is_repetition_and_zero_is_removal():
    X, y = moons(60, noise=0.2)
    counts = np.random.default_rng(0).integers(0, 4, len(X))
    kwargs = {"random_state": 0, "max_iter": 50, "n_iter_no_change": 50}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = MoonxpClassifier(**kwargs).fit(X, y, sample_weight=counts)
        repeated = MoonxpClassifier(**kwargs).fit(X.repeat(counts, axis=0), y.repeat(counts))
        halves = MoonxpClassifier(**kwargs).fit(X, y, sample_weight=0.5)
        plain = MoonxpClassifier(**kwargs).fit(X, y)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(weighted.W_, repeated.W_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(halves.W_, plain.W_, rtol=1e-12, atol=1e-15)  # a constant weight changes nothing
    assert not np.allclose(weighted.W_, plain.W_)
    for bad, phrase in [(-counts, "finite and >= 0"), (counts[:-1], r"sample_weight.shape == \(59,\)"),
                        (0 * counts, "zero for every sample")]:
        with pytest.raises(ValueError, match=phrase):
            MoonxpClassifier().fit(X, y, sample_weight=bad)


def test_predict_proba_is_the_sigmoid_of_the_output():
    X, y = moons(100, noise=0.2)
    clf = MoonxpClassifier(random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-clf.decision_function(X))), rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    assert not hasattr(MoonxpClassifier(loss="perceptron"), "predict_proba")  # no probabilities from a hinge


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


@pytest.mark.parametrize("params, phrase", [
    ({"hidden": 0}, r"'hidden' parameter of MoonxpClassifier must be an int in the range \[1, inf\). Got 0"),
    ({"hidden": 2.0}, r"'hidden' parameter .* must be an int"),
    ({"lr": -1.0}, r"'lr' parameter .* must be a float in the range \(0, inf\). Got -1.0"),
    ({"lr": float("nan")}, r"'lr' parameter .* must be a float"),
    ({"max_iter": 0}, r"'max_iter' parameter .* in the range \[1, 1000000\]. Got 0"),
    ({"max_iter": 10**12}, r"'max_iter' parameter .* in the range \[1, 1000000\]"),
    ({"tol": -1e-3}, r"'tol' parameter .* in the range \[0, inf\)"),
    ({"n_iter_no_change": 0}, r"'n_iter_no_change' parameter .* in the range \[1, inf\)"),
    ({"loss": "hinge"}, r"'loss' parameter .* must be a str among .*perceptron.* Got 'hinge'"),
    ({"warm_start": 1}, r"'warm_start' parameter .* must be an instance of 'bool'"),
    ({"compile": "yes"}, r"'compile' parameter .* must be an instance of 'bool' or None")])
def test_bad_parameters_fail_in_fit_naming_the_parameter_and_range(params, phrase):
    clf = MoonxpClassifier(**params)  # scikit-learn's rule: __init__ stores, fit validates
    for call in (lambda: clf.fit(*moons(20)), lambda: clf.partial_fit(*moons(20), classes=[0, 1])):
        with pytest.raises(ValueError, match=phrase):
            call()


def test_compile_without_a_compiler_is_one_clear_error():
    with pytest.raises(TypeError, match="no compiler: compile=True needs JAX or PyTorch arrays"):
        MoonxpClassifier(compile=True).fit(*moons(20))  # NumPy arrays, no dispatch


def test_a_problem_too_large_for_memory_is_refused_before_any_work(monkeypatch):
    import moonxp.estimator as estimator
    X, y = moons(100)
    with pytest.raises(ValueError, match=r"hidden=1000000000 units x 2 features x 100 samples need about .* GiB"):
        MoonxpClassifier(hidden=10**9).fit(X, y)
    monkeypatch.setattr(estimator, "host_memory", lambda: 8 * 50 * 100 * 4)  # less than the step needs
    with pytest.raises(ValueError, match="more than the 0.0 GiB available"):
        MoonxpClassifier().fit(X, y)


# ---------------------------------------------------------------- Array API dispatch

def test_dispatch_keeps_namespace_device_and_dtype(case):
    """fit, partial_fit and the predictions on the case's arrays stay in its namespace, on its device, in its dtype."""
    from helpers import assert_on_case
    if case.name == "jax":
        pytest.skip("scikit-learn's array API dispatch does not cover JAX")
    X, y = moons(60)
    weights = np.linspace(0.5, 2.0, 60)
    reference = MoonxpClassifier(random_state=0).fit(X, y, sample_weight=weights)
    Xc, wc = case.asarray(X), case.asarray(weights)
    yc = case.xp.asarray(y, device=case.device)  # integer labels (float ones trip scikit-learn 1.7's type_of_target on array-api-strict)
    with sklearn.config_context(array_api_dispatch=True):
        clf = MoonxpClassifier(random_state=0).fit(Xc, yc, sample_weight=wc)
        stepped = MoonxpClassifier(random_state=0).partial_fit(Xc, yc, classes=[0, 1]).partial_fit(Xc, yc)
        for a in (clf.W_, clf.b_, clf.v_, stepped.W_, clf.decision_function(Xc), clf.predict_proba(Xc)):
            assert_on_case(a, case)
        labels = clf.predict(Xc)  # y's labels, on X's device
        assert type(labels) is type(Xc) and device_of(labels) == device_of(Xc) and labels.dtype == yc.dtype
        predicted = moonxp.to_host(clf.predict(Xc))
        accuracy = clf.score(Xc, yc)
    assert accuracy > 0.9 and stepped.n_iter_ == 2
    agreement = (predicted == reference.predict(X)).mean()
    assert agreement >= (1.0 if case.dtype_name == "float64" else 0.95)
    if case.dtype_name == "float64":
        assert clf.n_iter_ == reference.n_iter_
        np.testing.assert_allclose(clf.loss_curve_, reference.loss_curve_, rtol=1e-9, atol=1e-12)


def test_autograd_state_is_detached():
    torch = pytest.importorskip("torch")
    X, y = moons(60)
    Xt = torch.tensor(X, requires_grad=True)
    wt = torch.ones(60, dtype=torch.float64, requires_grad=True)
    with sklearn.config_context(array_api_dispatch=True):
        clf = MoonxpClassifier(random_state=0, max_iter=5, warm_start=True)
        with pytest.warns(ConvergenceWarning):
            clf.fit(Xt, torch.tensor(y), sample_weight=wt).fit(Xt, torch.tensor(y))
        clf.partial_fit(Xt, torch.tensor(y))
        outputs = [clf.decision_function(Xt), clf.predict_proba(Xt)]
    for a in (clf.W_, clf.b_, clf.v_, *outputs):
        assert not a.requires_grad and a.grad_fn is None
    assert Xt.grad is None


def _forbid(monkeypatch, cls, names):
    def refuse(*args, **kwargs):
        raise AssertionError("fit moved data to the host")
    for name in names:
        monkeypatch.setattr(cls, name, refuse, raising=False)


@pytest.mark.parametrize("library", ["torch", "array_api_strict"])
def test_fit_never_copies_the_data_to_the_host(library, monkeypatch):
    module = pytest.importorskip(library)
    X, y = moons(40)
    Xc, yc = module.asarray(X), module.asarray(y)
    cls = type(Xc)
    _forbid(monkeypatch, cls, ["__array__", "numpy", "tolist", "__dlpack__", "cpu"])
    weights = module.asarray(np.linspace(0.5, 2.0, 40))
    with sklearn.config_context(array_api_dispatch=True), pytest.warns(ConvergenceWarning):
        clf = MoonxpClassifier(random_state=0, max_iter=8, warm_start=True).fit(Xc, yc, sample_weight=weights)
        clf.fit(Xc, yc).partial_fit(Xc, yc)
    assert type(clf.W_) is cls and clf.n_iter_ == 17


# ---------------------------------------------------------------- scikit-learn's tools

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # the perceptron at lr 0.3
def test_pipeline_grid_search_cross_validation_clone_and_pickle():
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = moons(120, noise=0.2)
    pipe = make_pipeline(StandardScaler(), MoonxpClassifier(random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(pipe, {"moonxpclassifier__hidden": [5, 50], "moonxpclassifier__lr": [0.3, 1.0],
                                 "moonxpclassifier__loss": ["log_loss", "perceptron"]}, cv=3).fit(X, y)
    assert set(search.best_params_) == {"moonxpclassifier__hidden", "moonxpclassifier__lr", "moonxpclassifier__loss"}
    assert search.best_score_ > 0.8
    fitted = pipe.fit(X, y)
    copy = clone(fitted)
    assert copy.get_params()["moonxpclassifier__max_iter"] == 1000 and not hasattr(copy[-1], "W_")
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
    clf = MoonxpClassifier(random_state=0).fit(table, y)
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
    rows = {line[:48].strip(): float(line.split()[-2]) for line in capsys.readouterr().out.splitlines()
            if line.startswith(("Moonxp", "MLP", "Perceptron"))}
    assert set(rows) == set(example.MODELS)
    assert rows["MoonxpClassifier()"] >= rows["MLPClassifier(hidden_layer_sizes=(50,))"] - 0.01  # D = 30, scaled
    assert rows["MoonxpClassifier(homework: perceptron loss)"] > 0.9
