"""Divergence: the first non-finite iteration named with the learning rate, checked every k steps, on every
backend and in the CLI (exit 3 with whole metrics)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import moonxp
import moonxp.validate
from moonxp import DivergedError, Params

from helpers import cli, leftovers, strict_json


def first_diverged_iteration(lr: float) -> int:
    """Where the homework's run diverges at learning rate `lr`, checked at every iteration."""
    X, T, p = moonxp.make_problem(0)
    with pytest.raises(DivergedError) as info:
        moonxp.train(p, X, T, lr=lr, iters=128, check_every=1)
    return info.value.iteration


# ---------------------------------------------------------------- divergence

def test_divergence_names_the_first_bad_iteration_and_the_learning_rate(homework):
    X, T, p = homework
    with pytest.raises(DivergedError) as info:
        moonxp.train(p, X, T, lr=1e6, iters=128)
    i = info.value.iteration
    assert f"training diverged at iteration {i}:" in str(info.value)
    assert "use a smaller learning rate than 1e+06" in str(info.value)
    assert isinstance(info.value, FloatingPointError) and isinstance(info.value, moonxp.MoonxpError)
    assert i == first_diverged_iteration(1e6)                      # found the same when checking every step
    errors = moonxp.train(p, X, T, lr=1e6, iters=i - 1)[1]        # and the state before it is finite
    assert np.isfinite(errors).all()


def test_divergence_on_every_backend(case, homework):
    X, T, p = homework
    huge = np.finfo(case.dtype_name).max ** 0.75                    # finite, but y = a v overflows
    params = Params(*(case.asarray(a) for a in p._replace(v=p.v * huge, W=p.W * huge)))
    with pytest.raises(DivergedError, match="diverged at iteration 0"):
        moonxp.train(params, case.asarray(X), case.asarray(T), iters=4)


def test_divergence_is_checked_every_k_iterations_not_every_step(homework):
    X, T, p = homework
    checks = []
    moonxp.train(p, X, T, iters=64, check_every=16, progress=lambda done, total: checks.append(done))
    assert checks == [16, 32, 48, 64]                              # one host read-back per check, not per step
    checks.clear()
    with pytest.raises(DivergedError):
        moonxp.train(p, X, T, lr=1e6, iters=128, check_every=16, progress=lambda done, total: checks.append(done))
    assert checks == [16]                                          # iteration 27 is caught at the check after it


def test_validation_runs_once_per_call_not_per_iteration(homework, monkeypatch):
    X, T, p = homework
    reads = []
    real = moonxp.validate._finite
    monkeypatch.setattr(moonxp.validate, "_finite", lambda *a: reads.append(1) or real(*a))
    counts = []
    for iters in (1, 40):
        reads.clear()
        moonxp.train(p, X, T, iters=iters)
        counts.append(len(reads))
    assert counts[0] == counts[1] <= 2                              # params and X: one read-back each


def test_cli_divergence_exit_3_with_whole_metrics(tmp_path):
    code, out, err = cli("--lr", "1e6", "--no-plot", "--out", str(tmp_path))
    assert code == 3
    i = first_diverged_iteration(1e6)
    assert err == f"moonxp: training diverged at iteration {i}: the error or the parameters are no longer finite; " \
                  f"use a smaller learning rate than 1e+06\n"       # one line, the true iteration, no warnings
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "diverged" and f"iteration {i}" in metrics["message"]
    assert metrics["config"]["lr"] == 1e6
    assert [s["iteration"] for s in metrics["snapshots"]] == [0, 1, 3, 7, 15]
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["metrics.json"]


def test_cli_divergence_of_an_ensemble(tmp_path):
    code, out, err = cli("--lr", "1e300", "--ensemble", "3", "--iters", "4", "--no-plot", "--out", str(tmp_path))
    assert code == 3 and "diverged at iteration 1 (3 of 3 networks)" in err and err.count("\n") == 1
    assert strict_json(tmp_path / "metrics.json")["status"] == "diverged"


# ---------------------------------------------------------------- divergence in the final state

def test_non_finite_parameters_after_a_step_are_divergence(homework):
    with pytest.raises(moonxp.DivergedError, match="diverged at iteration 1:"):
        moonxp.train(homework[2], np.array([[-0.8, 1.0]]), np.array([1.0]), lr=1e308, iters=1)
    for check_every in (1, 16):                                    # caught at the check, whatever its period
        with pytest.raises(moonxp.DivergedError, match="diverged at iteration 1:"):
            moonxp.train(homework[2], np.array([[-0.8, 1.0]]), np.array([1.0]), lr=1e308, iters=5,
                         check_every=check_every)


def test_moonxp_errors_with_their_own_arguments_pickle_whole():
    """A worker process or a Dask task sends them pickled: message and fields arrive unchanged."""
    import pickle
    from moonxp.errors import CompileError
    for error in (DivergedError(7, 0.5, " (2 of 4 networks)"), CompileError("jax.jit", "XLA failed")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error) and vars(back) == vars(error)
