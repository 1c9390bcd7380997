"""D-input networks: X (..., N, D), W (..., D, H) for any D >= 1, checked like the homework's D = 2.

Gradients against central finite differences and autograd (torch, jax) for D = 1, 3, 30; the kernels
against the NumPy float64 reference on every backend; the grid stays a plane and says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import moonxp
from conftest import assert_close, assert_on_case, tolerance
from moonxp import Params
from test_kernels import _loss_of, on, ref_backprop, ref_forward, smooth_network

WIDTHS = [1, 3, 30]


@pytest.mark.parametrize("inputs", WIDTHS)
def test_backprop_equals_central_finite_differences(inputs):
    X, T, p = smooth_network(np.random.default_rng(200 + inputs), inputs=inputs)
    grads = moonxp.backprop(p, X, T)
    assert grads.W.shape == (inputs, 6)
    h = 1e-6
    for name, param, grad in zip("Wbv", p, grads):
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            plus, minus = param.copy(), param.copy()
            plus[index] += h
            minus[index] -= h
            numeric[index] = (_loss_of(p._replace(**{name: plus}), X, T)
                              - _loss_of(p._replace(**{name: minus}), X, T)) / (2 * h)
        assert np.abs(numeric).max() > 0.01, name
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d E / d {name}, D = {inputs}")


@pytest.mark.parametrize("inputs", WIDTHS)
def test_backprop_equals_torch_autograd(inputs):
    torch = pytest.importorskip("torch")
    X, T, p = smooth_network(np.random.default_rng(300 + inputs), n=20, hidden=8, inputs=inputs)
    W, B, V = (torch.tensor(a, requires_grad=True) for a in p)
    Y = torch.relu(torch.tensor(X) @ W + B) @ V
    torch.clamp(-Y * torch.tensor(T), min=0).mean().backward()
    for g, oracle in zip(moonxp.backprop(p, X, T), (W.grad, B.grad, V.grad)):
        np.testing.assert_allclose(g, oracle.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("inputs", WIDTHS)
def test_backprop_equals_jax_grad(inputs):
    jax = pytest.importorskip("jax")
    moonxp.resolve("cpu", "jax", "float64")  # x64 on: the oracle runs in float64
    jnp = jax.numpy
    X, T, p = smooth_network(np.random.default_rng(400 + inputs), n=20, hidden=8, inputs=inputs)

    def E(params):
        W, B, V = params
        return jnp.mean(jnp.maximum(-(jnp.maximum(jnp.asarray(X) @ W + B, 0) @ V) * jnp.asarray(T), 0))

    oracle = jax.grad(E)(tuple(jnp.asarray(a) for a in p))
    assert oracle[0].shape == (inputs, 8)
    for g, o in zip(moonxp.backprop(p, X, T), oracle):
        np.testing.assert_allclose(g, np.asarray(o), rtol=1e-12, atol=1e-14)


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
