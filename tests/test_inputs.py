"""D-input networks: X (..., N, D), W (..., D, H) for any D >= 1, checked like the homework's D = 2.

Gradients against central finite differences and autograd for D = 1, 3, 30 are in test_kernels
(parametrised by D); here the kernels against the NumPy float64 reference on every backend, training,
validation, and the grid, which stays a plane and says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import moonxp
from helpers import assert_close, assert_on_case, tolerance
from moonxp import Params
from helpers import on, ref_backprop, ref_forward, smooth_network


@pytest.mark.parametrize("inputs", [1, 3])
def test_kernels_match_reference_on_every_backend(case, inputs):
    X, T, p = smooth_network(np.random.default_rng(500 + inputs), inputs=inputs)
    assert_close(moonxp.forward(on(case, p), on(case, X)), ref_forward(*p, X), case)
    for g, e in zip(moonxp.backprop(on(case, p), *on(case, X, T)), ref_backprop(*p, X, T)):
        assert tuple(g.shape) == e.shape
        assert_close(g, e, case)


def test_training_a_batch_of_3_input_networks_equals_each_alone(case):
    rng = np.random.default_rng(600)
    X, T, _ = smooth_network(rng, n=16, inputs=3)
    nets = [smooth_network(rng, X=X, T=T, inputs=3)[2] for _ in range(3)]
    batch = Params(*(np.stack(f) for f in zip(*nets)))
    trained, errors = moonxp.train(on(case, batch), *on(case, X, T), lr=0.2, iters=5)
    assert tuple(errors.shape) == (3, 6)
    assert_on_case(trained.W, case)
    for k, net in enumerate(nets):
        alone, alone_errors = moonxp.train(net, X, T, lr=0.2, iters=5)
        np.testing.assert_allclose(moonxp.to_host(trained.W)[k], alone.W, rtol=tolerance(case), atol=tolerance(case))
        np.testing.assert_allclose(moonxp.to_host(errors)[k], alone_errors, rtol=tolerance(case), atol=tolerance(case))


def test_points_must_have_the_params_inputs():
    X, T, p = smooth_network(np.random.default_rng(7), inputs=3)
    with pytest.raises(moonxp.InvalidInputError, match=r"expected points \(N, 3\) or \(\.\.\., N, 3\) for params.W "
                                                         r"of shape \(3, 6\)"):
        moonxp.forward(p, X[:, :2])
    with pytest.raises(moonxp.InvalidInputError, match=r"expected points \(N, 3\)"):
        moonxp.train(p, np.ones((5, 30)), np.ones(5), iters=1)


@pytest.mark.parametrize("inputs", [1, 3])
def test_the_grid_stays_a_plane(inputs):
    _, _, p = smooth_network(np.random.default_rng(8), inputs=inputs)
    with pytest.raises(moonxp.InvalidInputError, match=f"grids need D = 2.*D = {inputs} inputs|D = {inputs} inputs.*grids need D = 2"):
        moonxp.evaluate_grid(p, 8)
