"""The logistic loss of the estimator (`kernels.logistic_*`): reference, finite differences, autograd, every backend.

The reference is written homework style for one network; the gradients are
checked where the network is smooth (every |z| away from the ReLU kinks; the
logistic loss itself is smooth everywhere), with weights of every kind: zero,
fractional and integer.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace, numpy as xp_np

from moonxp import Params
from moonxp.kernels import logistic_error_and_gradient_sums, logistic_terms
from helpers import SEEDS_AND_WIDTHS, assert_close, assert_on_case, central_differences, on, ref_forward, smooth_batch, smooth_network


def ref_logistic_loss(Y, T, w):
    return (w * np.log(1 + np.exp(-Y * T))).sum() / w.sum()


def ref_logistic_backprop(W, B, V, X, T, w):
    Z = X.dot(W) + B
    A = np.maximum(0, Z)
    Y = A.dot(V)
    DY = w * -T / (1 + np.exp(Y * T)) / w.sum()
    DZ = np.outer(DY, V) * (Z > 0)
    return X.T.dot(DZ), DZ.sum(axis=0), A.T.dot(DY)


def weights_for(rng: np.random.Generator, n: int) -> np.ndarray:
    w = rng.uniform(0.2, 3.0, n)
    w[:2] = 0.0, 2.0  # a dropped point and an integer weight (a repeated point)
    return w


def means(params, X, T, w):
    """(E, grads) from the kernel's sums, in X's namespace."""
    xp = array_namespace(X)
    e, sums = logistic_error_and_gradient_sums(params, X, T, w, xp=xp)
    total = xp.sum(w)
    return e / total, Params(*(g / total for g in sums))


def test_terms_are_stable_for_large_margins():
    m = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow on the way
        terms = logistic_terms(m, np.ones(5), xp_np)
    np.testing.assert_allclose(terms, [800.0, 40.0, np.log(2.0), np.exp(-40.0), 0.0], rtol=1e-15, atol=0)


def test_loss_and_gradients_match_reference(case):
    rng = np.random.default_rng(11)
    X, T, p = smooth_network(rng, n=16)
    w = weights_for(rng, 16)
    E, grads = means(on(case, p), *on(case, X, T, w))
    for a in (E, *grads):
        assert_on_case(a, case)
    assert_close(E, np.asarray(ref_logistic_loss(ref_forward(*p, X), T, w)), case)
    for g, e in zip(grads, ref_logistic_backprop(*p, X, T, w)):
        assert tuple(g.shape) == e.shape
        assert_close(g, e, case)


@pytest.mark.parametrize(("seed", "inputs"), SEEDS_AND_WIDTHS)
def test_gradients_equal_central_finite_differences(seed, inputs):
    rng = np.random.default_rng(500 + seed)
    X, T, p = smooth_network(rng, inputs=inputs)
    w = weights_for(rng, len(X))
    _, grads = means(p, X, T, w)
    # h = 1e-6 moves every z by far less than the test problems' distance to a kink
    numerics = central_differences(lambda q: ref_logistic_loss(ref_forward(*q, X), T, w), p, h=1e-6)
    for name, grad, numeric in zip("Wbv", grads, numerics):
        assert np.abs(numeric).max() > 0.01, name
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d E / d {name}, D = {inputs}")


@pytest.mark.parametrize("inputs", [2, 1, 30])
def test_gradients_equal_torch_autograd(inputs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(600 + inputs)
    X, T, p = smooth_network(rng, n=20, hidden=8, inputs=inputs)
    w = weights_for(rng, 20)
    W, B, V = (torch.tensor(a, requires_grad=True) for a in p)
    Y = torch.relu(torch.tensor(X) @ W + B) @ V
    tw = torch.tensor(w)
    ((tw * torch.nn.functional.softplus(-Y * torch.tensor(T))).sum() / tw.sum()).backward()
    E, grads = means(p, X, T, w)
    np.testing.assert_allclose(E, ref_logistic_loss(ref_forward(*p, X), T, w), rtol=1e-13)
    for g, oracle in zip(grads, (W.grad, B.grad, V.grad)):  # atol: sums of terms of both signs
        np.testing.assert_allclose(g, oracle.numpy(), rtol=1e-12, atol=1e-12 * float(oracle.abs().max()))


@pytest.mark.parametrize("inputs", [2, 30])
def test_gradients_equal_jax_grad(inputs):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # so the oracle runs in float64
    jnp = jax.numpy
    rng = np.random.default_rng(700 + inputs)
    X, T, p = smooth_network(rng, n=20, hidden=8, inputs=inputs)
    w = weights_for(rng, 20)

    def E(params):
        W, B, V = params
        Y = jnp.maximum(jnp.asarray(X) @ W + B, 0) @ V
        return jnp.sum(jnp.asarray(w) * jnp.logaddexp(0.0, -Y * jnp.asarray(T))) / w.sum()

    oracle = jax.grad(E)(tuple(jnp.asarray(a) for a in p))
    assert oracle[0].dtype == jnp.float64
    for g, o in zip(means(p, X, T, w)[1], oracle):
        np.testing.assert_allclose(g, np.asarray(o), rtol=1e-12, atol=1e-12 * float(np.abs(o).max()))


def test_batch_of_networks_equals_each_alone():
    rng = np.random.default_rng(12)
    X, T, p = smooth_batch(rng, (3,))
    w = np.stack([weights_for(rng, X.shape[-2]) for _ in range(3)])
    e, sums = logistic_error_and_gradient_sums(p, X, T, w, xp=xp_np)
    assert e.shape == (3,)
    for k in range(3):
        one = Params(*(q[k] for q in p))
        e1, s1 = logistic_error_and_gradient_sums(one, X[k], T[k], w[k], xp=xp_np)
        np.testing.assert_allclose(e[k], e1, rtol=1e-14)
        for g, s in zip(sums, s1):
            np.testing.assert_allclose(g[k], s, rtol=1e-13, atol=1e-15)
