"""moonxp.train and moonxp.evaluate against a NumPy float64 reference loop, on every backend."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

import moonxp
from helpers import assert_close, assert_near, assert_on_case
from moonxp import Params

ITERS = 6  # short runs: the homework's 128 iterations are pinned in test_reproduction


def ref_train(params: Params, X, T, lr: float, iters: int):
    """The homework's loop in NumPy float64: errors[i] = E before update i, errors[iters] = E after the last."""
    W, B, V = (np.array(p, dtype=np.float64) for p in params)
    N, errors = len(X), []
    for i in range(iters + 1):
        Z = X.dot(W) + B
        A = np.maximum(0, Z)
        Y = A.dot(V)
        errors.append(np.maximum(0, -Y * T).mean())
        if i == iters:
            break
        DY = (-Y * T > 0) * (-T)
        DZ = np.outer(DY, V) * (Z > 0)
        W = W - lr * X.T.dot(DZ) / N
        B = B - lr * DZ.sum(axis=0) / N
        V = V - lr * A.T.dot(DY) / N
    return Params(W, B, V), np.array(errors)


def on(case, params: Params, *arrays):
    return (Params(*(case.asarray(p) for p in params)), *(case.asarray(a) for a in arrays))


@pytest.fixture(scope="module")
def problem():
    """A small moons problem whose error stays well above 0 over ITERS updates (N=40, H=8)."""
    return moonxp.make_problem(3, n_samples=40, hidden=8)


def test_train_matches_reference_loop(case, problem):
    X, T, p = problem
    expected_params, expected_errors = ref_train(p, X, T, 0.1, ITERS)
    assert expected_errors[0] > expected_errors[-1] > 0.01  # it learns, and the loss is not trivially 0
    params, errors = moonxp.train(*on(case, p, X, T), lr=0.1, iters=ITERS)
    assert tuple(errors.shape) == (ITERS + 1,)
    assert_close(errors, expected_errors, case)
    assert isinstance(params, Params)
    for a, e in zip(params, expected_params):
        assert_close(a, e, case)


def test_train_zero_iterations_measures_only(case, problem):
    X, T, p = problem
    params, errors = moonxp.train(*on(case, p, X, T), iters=0)
    assert tuple(errors.shape) == (1,)
    assert_close(errors, ref_train(p, X, T, 0.1, 0)[1], case)
    for a, e in zip(params, p):
        assert_close(a, e.astype(case.dtype_name).astype(np.float64), case, scale=0)  # unchanged, exactly


def test_train_errors_are_before_each_update(problem):
    """errors[i] is the loss of the params after i updates; the last is the loss of the returned params."""
    X, T, p = problem
    params, errors = moonxp.train(p, X, T, lr=0.1, iters=ITERS)
    for i in range(ITERS + 1):
        partial, partial_errors = moonxp.train(p, X, T, lr=0.1, iters=i)
        assert partial_errors[-1] == pytest.approx(errors[i], rel=1e-13, abs=1e-15)
    assert moonxp.loss(moonxp.forward(params, X), T) == pytest.approx(errors[-1], rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(errors, ref_train(p, X, T, 0.1, ITERS)[1], rtol=1e-12, atol=1e-15)


def test_train_batch_equals_each_network(case):
    """B = 3 networks trained in one call equal 3 separate runs, also with batch dims (3, 2)."""
    X, T, p = moonxp.make_ensemble(0, 6, n_samples=40, hidden=8)
    batch = Params(*(a.reshape(3, 2, *a.shape[1:]) for a in p))
    params, errors = moonxp.train(*on(case, batch, X, T), lr=0.1, iters=ITERS)
    assert tuple(errors.shape) == (3, 2, ITERS + 1)
    for a in (*params, errors):
        assert_on_case(a, case)
    errors_host = moonxp.to_host(errors)
    params_host = [moonxp.to_host(a) for a in params]
    for index in np.ndindex(3, 2):
        one = Params(*(a[index] for a in batch))
        single_params, single_errors = moonxp.train(*on(case, one, X, T), lr=0.1, iters=ITERS)
        assert_near(errors_host[index], moonxp.to_host(single_errors), case)
        expected_params, expected_errors = ref_train(one, X, T, 0.1, ITERS)
        assert_near(errors_host[index], expected_errors, case)
        for a, e in zip(params_host, expected_params):
            assert_near(a[index], e, case)


def test_train_batch_with_own_data_per_network(case):
    """X (B, N, 2), T (B, N): each network trains on its own data set."""
    data = [moonxp.make_problem(seed, n_samples=40, hidden=8) for seed in (1, 2)]
    X, T = np.stack([d[0] for d in data]), np.stack([d[1] for d in data])
    p = Params(*(np.stack([d[2][k] for d in data]) for k in range(3)))
    _, errors = moonxp.train(*on(case, p, X, T), lr=0.1, iters=ITERS)
    expected = np.stack([ref_train(d[2], d[0], d[1], 0.1, ITERS)[1] for d in data])
    assert_close(errors, expected, case)


def test_evaluate_error_and_accuracy(case, problem):
    X, T, p = problem
    Y = np.maximum(X @ p.W + p.b, 0) @ p.v
    error, accuracy = moonxp.evaluate(*on(case, p, X, T))
    assert 0 < np.mean(Y * T > 0) < 1
    assert_close(error, np.asarray(np.maximum(0, -Y * T).mean()), case)
    assert_close(accuracy, np.asarray(np.mean(Y * T > 0)), case)


def test_evaluate_batch(case):
    X, T, p = moonxp.make_ensemble(5, 3, n_samples=40, hidden=8)
    error, accuracy = moonxp.evaluate(*on(case, p, X, T))
    Y = np.stack([np.maximum(X @ p.W[k] + p.b[k], 0) @ p.v[k] for k in range(3)])
    assert_close(error, np.maximum(0, -Y * T).mean(axis=-1), case)
    assert_close(accuracy, np.mean(Y * T > 0, axis=-1), case)


def test_trained_homework_classifies_every_point(homework):
    X, T, p = homework
    params, _ = moonxp.train(p, X, T)
    error, accuracy = moonxp.evaluate(params, X, T)
    assert float(error) == 0.0
    assert float(accuracy) == 1.0


def test_divergence_raises_naming_the_iteration(case, problem):
    X, T, p = problem
    with pytest.raises(moonxp.DivergedError, match="iteration 1") as info:
        moonxp.train(*on(case, p, X, T), lr=1e300, iters=3)
    assert info.value.iteration == 1
    assert "learning rate" in str(info.value)


def test_divergence_in_one_network_of_a_batch(problem):
    X, T, p = problem
    # network 1's huge v (y ~ 1e160) makes its first update overflow; the others train normally
    batch = Params(*(np.stack([a, b, a]) for a, b in zip(p, p._replace(v=p.v * 1e160))))
    with pytest.raises(moonxp.DivergedError, match=r"iteration 1 \(1 of 3 networks\)") as info:
        moonxp.train(batch, X, T, lr=0.1, iters=3)
    assert info.value.iteration == 1


def test_divergence_raises_without_warnings(problem):
    X, T, p = problem
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(moonxp.DivergedError):
            moonxp.train(p, X, T, lr=1e300, iters=3)


def test_training_reads_back_once_per_check_not_per_step(monkeypatch):
    """64 more steps cost 4 more read-backs (check_every=16): none per step, on any backend."""
    pytest.importorskip("array_api_strict")
    backend = moonxp.resolve("cpu", "array-api-strict", "float64")
    X, T, p = moonxp.make_problem(0)
    params, Xd, Td = Params(*(backend.asarray(a) for a in p)), backend.asarray(X), backend.asarray(T)
    reads = []
    Array = type(Xd)
    for name in ("__bool__", "__float__", "__int__", "__index__", "__dlpack__"):
        real = getattr(Array, name)
        monkeypatch.setattr(Array, name, lambda self, *a, _real=real, _name=name, **k: (reads.append(_name),
                                                                                          _real(self, *a, **k))[1])
    moonxp.train(params, Xd, Td, iters=64, check_every=16)
    shorter = len(reads)
    reads.clear()
    moonxp.train(params, Xd, Td, iters=128, check_every=16)
    assert len(reads) - shorter == 4 and set(reads) == {"__bool__"}


def test_an_infinite_error_inside_a_chunk_is_caught():
    from moonxp.engine.training import _check_finite
    import array_api_compat.numpy as np_xp
    errors = [np.array([0.3, 0.3]), np.array([0.2, 0.1]), np.array([0.1, 0.1]), np.array([np.inf, 0.1]),
              np.array([0.05, 0.1])]  # the latest 3 are the last chunk
    with pytest.raises(moonxp.DivergedError, match=r"iteration 3 \(1 of 2 networks\)") as info:
        _check_finite(np_xp, errors, 3, moonxp.make_ensemble(0, 2, hidden=3)[2], 0.1)
    assert info.value.iteration == 3


def test_evaluate_refuses_points_batched_beyond_the_params(problem):
    X, T, p = problem
    batch = moonxp.make_ensemble(0, 3, n_samples=len(X))[2]
    with pytest.raises(moonxp.InvalidInputError, match="exceed the params"):
        moonxp.evaluate(batch, np.stack([np.stack([X] * 3)] * 2), T)


@pytest.mark.parametrize("tiles", [None, 100], ids=["whole", "point-tiles"])
def test_network_blocks_on_threads_equal_one_thread_exactly(monkeypatch, tiles):
    """Batched NumPy training runs blocks of networks on worker threads for whole chunks: same bits as one thread,
    with each network's points whole or in tiles, own data per network or shared."""
    from moonxp.engine import policy, training
    X, T, p = moonxp.make_ensemble(0, 5, n_samples=40, hidden=8)
    own = (np.stack([X] * 5) + np.linspace(0, 0.1, 5)[:, None, None], np.stack([T] * 5))
    limit = policy.limit_tiles(tiles) if tiles else contextlib.nullcontext()
    runs = {}
    with limit:
        for workers in (1, 3):
            monkeypatch.setattr(policy, "cores", lambda workers=workers: workers)
            assert len(training._network_blocks(p, policy.policy(np, "cpu", np.float64), False)) == workers
            runs[workers] = [moonxp.train(p, *data, lr=0.1, iters=20, check_every=8) for data in ((X, T), own)]
    for (one, many) in zip(runs[1], runs[3]):
        for a, b in zip((*one[0], one[1]), (*many[0], many[1])):
            np.testing.assert_array_equal(b, a)
