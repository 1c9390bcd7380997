"""The homework's data: moonxp's NumPy draw of the moons against scikit-learn's make_moons, the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from moonxp.data import make_problem, moons
import moonxp

make_moons = pytest.importorskip("sklearn.datasets").make_moons

SIZES = (1, 2, 3, 7, 100, 101, 1000, 4097)
NOISES = (0.0, 1e-3, 0.1, 0.3, 3.0, 1e150)


@pytest.mark.parametrize("n_samples", SIZES)
@pytest.mark.parametrize("noise", NOISES)
def test_moons_are_make_moons_bit_for_bit(n_samples, noise):
    for seed in (0, 1, 2, 17, 123_456, 2**32 - 1):
        theirs, ours = np.random.RandomState(seed), np.random.RandomState(seed)
        X, labels = make_moons(n_samples=n_samples, noise=noise or None, random_state=theirs)
        with np.errstate(over="ignore"):
            expected = (X * 2 - 1, labels * 2.0 - 1)
        got = moons(ours, n_samples, noise)
        for a, b in zip(got, expected):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (seed, n_samples, noise)
        assert ours.randint(2**31) == theirs.randint(2**31)  # the generator is left where make_moons leaves it


def test_the_homework_problem_follows_make_moons():
    X, labels = make_moons(n_samples=100, noise=None, random_state=np.random.RandomState(0))
    ours, T, _ = make_problem(0)
    np.testing.assert_array_equal(ours, X * 2 - 1)
    np.testing.assert_array_equal(T, labels * 2.0 - 1)


# ---------------------------------------------------------------- the ensemble draw

@pytest.mark.parametrize("seed, networks, n_samples, noise, hidden", [
    (0, 6, 100, 0.0, 50), (7, 4, 1, 0.2, 1), (2**32 - 3, 3, 7, 0.05, 3), (123, 5, 2, 1.0, 2), (42, 3, 33, 0.1, 17),
])
def test_ensemble_network_k_is_bit_identical_to_the_run_of_seed_plus_k(seed, networks, n_samples, noise, hidden):
    X, T, params = moonxp.make_ensemble(seed, networks, n_samples, noise, hidden)
    X0, T0, _ = moonxp.make_problem(seed, n_samples, noise, hidden)
    assert X.tobytes() == X0.tobytes() and T.tobytes() == T0.tobytes()
    for k in range(networks):
        single = moonxp.make_problem(seed + k, n_samples, noise, hidden)[2]
        for field, a, b in zip("Wbv", params, single):
            assert a[k].tobytes() == b.tobytes(), (field, k)
