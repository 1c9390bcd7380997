"""evaluate_grid against forward on the homework's meshgrid, and tiled work against untiled, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import moonxp
import moonxp.engine.executor
from moonxp.engine.policy import limit_tiles
from helpers import assert_close, assert_near, assert_on_case
from moonxp import Params

TINY_TILE = 64  # elements per tile: the small problems below split into 10 or more tiles


def ref_grid(params: Params, size: int, lo: float, hi: float) -> np.ndarray:
    """The homework's way: meshgrid, flatten, forward, reshape. Yg (size, size) for one network."""
    l = np.linspace(lo, hi, size)
    X1g, X2g = np.meshgrid(l, l)
    X = np.array([X1g.flatten(), X2g.flatten()]).T
    Y = np.maximum(0, X.dot(params.W) + params.b).dot(params.v)
    return Y.reshape(X1g.shape)


def on(case, params: Params) -> Params:
    return Params(*(case.asarray(p) for p in params))


def test_grid_matches_meshgrid_forward(case, homework):
    _, _, p = homework
    Yg = moonxp.evaluate_grid(on(case, p), size=30)
    assert tuple(Yg.shape) == (30, 30)
    assert_close(Yg, ref_grid(p, 30, -4.0, 4.0), case)


def test_grid_orientation(homework):
    """Yg[i, k] = f(x1 = l[k], x2 = l[i]): rows follow x2, columns follow x1."""
    _, _, p = homework
    l = np.linspace(-1.0, 3.0, 7)
    Yg = moonxp.evaluate_grid(p, size=7, lo=-1.0, hi=3.0)
    for i, k in ((0, 6), (6, 0), (2, 5)):
        f = moonxp.forward(p, np.array([[l[k], l[i]]]))[0]
        assert Yg[i, k] == pytest.approx(f, rel=1e-12, abs=1e-12)
    assert not np.allclose(Yg, Yg.T)  # the test would not notice a transpose otherwise


def test_grid_equals_forward_on_the_grid_points(case, homework):
    """The grid is the network on the grid's points, whatever the bounds."""
    _, _, p = homework
    Yg = moonxp.evaluate_grid(on(case, p), size=9, lo=-2.5, hi=1.0)
    l = np.linspace(-2.5, 1.0, 9)
    X1g, X2g = np.meshgrid(l, l)
    Y = moonxp.forward(on(case, p), case.asarray(np.stack([X1g.ravel(), X2g.ravel()], axis=1)))
    assert_on_case(Yg, case)
    assert_near(moonxp.to_host(Yg), moonxp.to_host(Y).reshape(9, 9), case)


@pytest.mark.parametrize("batch", [(3,), (2, 2)], ids=["B=3", "B=2x2"])
def test_grid_batch(case, batch):
    _, _, p = moonxp.make_ensemble(1, int(np.prod(batch)), hidden=8)
    p = Params(*(a.reshape(*batch, *a.shape[1:]) for a in p))
    Yg = moonxp.evaluate_grid(on(case, p), size=12, lo=-3.0, hi=2.0)
    expected = np.zeros((*batch, 12, 12))
    for index in np.ndindex(*batch):
        expected[index] = ref_grid(Params(*(a[index] for a in p)), 12, -3.0, 2.0)
    assert_close(Yg, expected, case)


# ---------------------------------------------------------------- tiled == untiled

@pytest.fixture
def tiny_tiles(monkeypatch):
    """Tiles of TINY_TILE elements on every namespace; returns the list of tile counts planned."""
    counts = []
    run = moonxp.engine.executor.run

    def counting_run(work, tiles, workers):
        counts.append(len(tiles))
        return run(work, tiles, workers)

    monkeypatch.setattr(moonxp.engine.executor, "run", counting_run)
    with limit_tiles(TINY_TILE):
        yield counts


def _rounding(case) -> float:
    return 64 * float(np.finfo(case.dtype_name).eps)


def test_tiled_grid_equals_untiled(case, homework, request):
    _, _, p = moonxp.make_ensemble(0, 3, hidden=8)
    untiled = moonxp.to_host(moonxp.evaluate_grid(on(case, p), size=16))
    counts = request.getfixturevalue("tiny_tiles")
    tiled = moonxp.evaluate_grid(on(case, p), size=16)
    assert max(counts) >= 10  # many tiles really were used
    assert_on_case(tiled, case)
    scale = np.abs(untiled).max()
    np.testing.assert_allclose(moonxp.to_host(tiled), untiled, rtol=_rounding(case), atol=_rounding(case) * scale)


def test_tiled_train_equals_untiled(case, homework, request):
    X, T, p = moonxp.make_ensemble(0, 2, n_samples=40, hidden=8)
    args = (Params(*(case.asarray(a) for a in p)), case.asarray(X), case.asarray(T))
    untiled_params, untiled_errors = moonxp.train(*args, iters=4)
    counts = request.getfixturevalue("tiny_tiles")
    tiled_params, tiled_errors = moonxp.train(*args, iters=4)
    assert max(counts) >= 10
    tol = _rounding(case)
    for tiled, untiled in ((tiled_errors, untiled_errors), *zip(tiled_params, untiled_params)):
        assert_on_case(tiled, case)
        np.testing.assert_allclose(moonxp.to_host(tiled), moonxp.to_host(untiled), rtol=tol, atol=tol)


def test_tiled_evaluate_equals_untiled(request):
    X, T, p = moonxp.make_ensemble(0, 2, n_samples=40, hidden=8)
    untiled = moonxp.evaluate(p, X, T)
    counts = request.getfixturevalue("tiny_tiles")
    tiled = moonxp.evaluate(p, X, T)
    assert max(counts) >= 10
    for a, b in zip(tiled, untiled):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_tiled_train_with_own_data_per_network(request):
    """Batch dims (3, 2) with X (3, 2, N, 2) and X (3, 1, N, 2): tiles slice the networks' own data."""
    rng = np.random.default_rng(0)
    X, T, p = moonxp.make_ensemble(0, 6, n_samples=30, hidden=8)
    p = Params(*(a.reshape(3, 2, *a.shape[1:]) for a in p))
    Xb = X + rng.normal(0, 0.05, (3, 2, 30, 2))
    Tb = np.broadcast_to(T, (3, 2, 30)).copy()
    cases = [(Xb, Tb), (Xb[:, :1], Tb[:, :1]), (Xb[0], Tb[0])]
    untiled = [moonxp.train(p, x, t, iters=3)[1] for x, t in cases]
    counts = request.getfixturevalue("tiny_tiles")
    for (x, t), expected in zip(cases, untiled):
        np.testing.assert_allclose(moonxp.train(p, x, t, iters=3)[1], expected, rtol=1e-13, atol=1e-15)
    assert max(counts) >= 10
    for index in np.ndindex(3, 2):  # and each network on its own data
        one = Params(*(a[index] for a in p))
        np.testing.assert_allclose(moonxp.train(one, Xb[index], Tb[index], iters=3)[1], untiled[0][index],
                                   rtol=1e-13, atol=1e-15)
