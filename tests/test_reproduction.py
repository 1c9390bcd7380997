"""The homework, digit for digit: `python -m moonxp` prints its lines, and train follows its NumPy code."""

from __future__ import annotations

import io

import numpy
import pytest
import sklearn.datasets

import moonxp
from helpers import HOMEWORK_LINES
from moonxp.app.cli import main

SNAPSHOTS = [0, 1, 3, 7, 15, 31, 63, 127]


def homework_errors() -> tuple[numpy.ndarray, tuple]:
    """The homework's own code (global seeding, make_moons, W B V, backprop, descent): 129 errors and data.

    errors[i] is Ed before update i (what the homework prints at "It: i"); errors[128] after the last update.
    """
    state = numpy.random.get_state()
    try:
        numpy.random.seed(0)
        Xd, Td = sklearn.datasets.make_moons(n_samples=100)
        Xd = Xd * 2 - 1
        Td = Td * 2 - 1
        X1d = Xd[:, 0]
        X2d = Xd[:, 1]

        NH = 50
        W = numpy.random.normal(0, 1 / 2.0**0.5, [2, NH])
        B = numpy.random.normal(0, 1, [NH])
        V = numpy.random.normal(0, 1 / NH**0.5, [NH])
    finally:
        numpy.random.set_state(state)
    initial = (W, B, V)

    def forward(X1, X2):
        X = numpy.array([X1.flatten(), X2.flatten()]).T
        Z = X.dot(W) + B
        A = numpy.maximum(0, Z)
        Y = A.dot(V)
        return Y.reshape(X1.shape)

    def backprop(X1, X2, T):
        X = numpy.array([X1.flatten(), X2.flatten()]).T
        Z = X.dot(W) + B
        A = numpy.maximum(0, Z)
        Y = A.dot(V)
        DY = (-Y * T > 0) * (-T)
        DZ = numpy.outer(DY, V) * (Z > 0)
        # the solution: gradients averaged over the whole dataset
        DW = X.T.dot(DZ) / len(X)
        DB = DZ.mean(axis=0)
        DV = A.T.dot(DY) / len(X)
        return DW, DB, DV

    errors = []
    for i in range(128):
        Yd = forward(X1d, X2d)
        errors.append(numpy.maximum(0, -Yd * Td).mean())
        DW, DB, DV = backprop(X1d, X2d, Td)
        W, B, V = W - 0.1 * DW, B - 0.1 * DB, V - 0.1 * DV
    errors.append(numpy.maximum(0, -forward(X1d, X2d) * Td).mean())
    return numpy.array(errors), (Xd, Td, initial)


@pytest.fixture(scope="module")
def reference():
    return homework_errors()


def lines(errors) -> list[str]:
    return ["It: %d, Error: %.3f" % (i, errors[i]) for i in SNAPSHOTS]


def test_homework_code_prints_the_homework_lines(reference):
    """The pinned lines are the homework's (its printed It: 7, 15 and 31 lines among them)."""
    errors, _ = reference
    assert lines(errors) == HOMEWORK_LINES


def test_python_m_moonxp_prints_the_homework_lines(tmp_path):
    out = io.StringIO()
    assert main(["--out", str(tmp_path), "--no-plot"], stdout=out, stderr=io.StringIO()) == 0
    printed = [line for line in out.getvalue().splitlines() if line.startswith("It:")]
    assert printed == HOMEWORK_LINES


def test_make_problem_draws_the_homeworks_numbers(reference):
    _, (Xd, Td, initial) = reference
    X, T, params = moonxp.make_problem(0)
    numpy.testing.assert_array_equal(X, Xd)
    numpy.testing.assert_array_equal(T, Td)
    for p, q in zip(params, initial):
        numpy.testing.assert_array_equal(p, q)


def test_make_problem_leaves_the_global_generator_alone():
    numpy.random.seed(123)
    expected = numpy.random.random_sample()
    numpy.random.seed(123)
    moonxp.make_problem(0)
    assert numpy.random.random_sample() == expected


def test_train_follows_the_homework_trajectory(reference, homework):
    errors, _ = reference
    X, T, params = homework
    _, trained = moonxp.train(params, X, T, lr=0.1, iters=128)
    assert trained.shape == (129,)
    numpy.testing.assert_allclose(trained, errors, rtol=1e-12, atol=1e-12)


def test_homework_lines_on_every_float64_backend(case64, homework):
    X, T, params = homework
    _, errors = moonxp.train(moonxp.Params(*(case64.asarray(p) for p in params)), case64.asarray(X),
                             case64.asarray(T))
    assert lines(moonxp.to_host(errors)) == HOMEWORK_LINES
