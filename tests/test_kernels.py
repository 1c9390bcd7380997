"""The kernels (forward, loss, backprop, descent) against a NumPy float64 reference, on every backend.

The reference is the homework's code (Z = X W + B, A = max(0, Z), Y = A V, ...)
for one network; batches are checked network by network. Gradients are also
checked by central finite differences and by autograd (torch, jax), at points
away from the ReLU kinks (|z| small) and the loss hinge (|y| small), where the
loss is smooth.
"""

from __future__ import annotations

import numpy as np
import pytest

import moonxp
import moonxp.kernels
from helpers import (SEEDS_AND_WIDTHS, assert_close, central_differences, assert_near, assert_on_case, on, ref_backprop, ref_forward,
                     ref_loss, smooth_batch, smooth_network)
from moonxp import Params


# ---------------------------------------------------------------- reference (homework style, one network)


# ---------------------------------------------------------------- one network, every backend

@pytest.fixture
def problem():
    return smooth_network(np.random.default_rng(1))


def test_forward_matches_reference(case, problem):
    X, T, p = problem
    expected = ref_forward(*p, X)
    assert_close(moonxp.forward(on(case, p), on(case, X)), expected, case)
    assert_close(moonxp.kernels.forward(on(case, p), on(case, X)), expected, case)


def test_loss_matches_reference(case, problem):
    X, T, p = problem
    Y = ref_forward(*p, X)
    E = moonxp.loss(*on(case, Y, T))
    assert tuple(E.shape) == ()
    assert ref_loss(Y, T) > 0  # some points are misclassified: the loss is not trivially 0
    assert_close(E, np.asarray(ref_loss(Y, T)), case)
    assert_close(moonxp.kernels.loss(*on(case, Y, T)), np.asarray(ref_loss(Y, T)), case)


def test_backprop_matches_reference(case, problem):
    X, T, p = problem
    expected = ref_backprop(*p, X, T)
    for grads in (moonxp.backprop(on(case, p), *on(case, X, T)), moonxp.kernels.backprop(on(case, p), *on(case, X, T))):
        assert isinstance(grads, Params)
        for g, e in zip(grads, expected):
            assert tuple(g.shape) == e.shape
            assert_close(g, e, case)
        assert np.abs(expected[0]).max() > 0.01  # a real gradient, not zeros


def test_descent_matches_reference(case, problem):
    X, T, p = problem
    grads = Params(*ref_backprop(*p, X, T))
    for descent in (moonxp.descent, moonxp.kernels.descent):
        new = descent(on(case, p), on(case, grads), 0.3)
        assert isinstance(new, Params)
        for n, q, g in zip(new, p, grads):
            assert_close(n, q - 0.3 * g, case)


def test_ones_column_is_the_same_math(case, problem):
    """[X, 1] [W; b] (`ones_column`, how training runs) equals X W + b: forward and gradient sums;
    on NumPy float64 bit for bit (the same products and sums, b added last in both)."""
    X, T, p = problem
    P, Xd, Td = on(case, p, X, T)
    X1 = moonxp.kernels.with_ones(Xd, case.xp)
    assert tuple(X1.shape) == (len(X), 3)
    plain = moonxp.kernels.error_and_gradient_sums(P, Xd, Td, case.xp)
    ones = moonxp.kernels.error_and_gradient_sums(P, X1, Td, case.xp, ones_column=True)
    pairs = [(moonxp.kernels.forward(P, X1, ones_column=True), moonxp.kernels.forward(P, Xd)),
             (ones[0], plain[0]), *zip(ones[1], plain[1])]
    for a, b in pairs:
        if case.name == "numpy" and case.dtype_name == "float64":
            np.testing.assert_array_equal(moonxp.to_host(a), moonxp.to_host(b))
        else:
            assert_close(a, moonxp.to_host(b), case)


def test_forward_on_many_points_keeps_shape(case):
    """Y (..., N) for points (N, 2) on one network: a grid of points flattens like the homework's."""
    rng = np.random.default_rng(2)
    X = rng.uniform(-4, 4, (200, 2))
    _, _, p = smooth_network(rng)
    Y = moonxp.forward(on(case, p), on(case, X))
    assert tuple(Y.shape) == (200,)
    assert_close(Y, ref_forward(*p, X), case)


# ---------------------------------------------------------------- gradients: finite differences, autograd

def _loss_of(p: Params, X, T) -> float:
    return ref_loss(ref_forward(*p, X), T)


# (seed, D inputs): the homework's D = 2 three times, and other widths (D-input networks)


@pytest.mark.parametrize(("seed", "inputs"), SEEDS_AND_WIDTHS)
def test_backprop_equals_central_finite_differences(seed, inputs):
    X, T, p = smooth_network(np.random.default_rng(100 + seed), inputs=inputs)
    grads = moonxp.backprop(p, X, T)
    assert grads.W.shape == (inputs, p.W.shape[-1])
    # h = 1e-6 moves every z and y by far less than MARGIN: no kink is crossed
    numerics = central_differences(lambda q: _loss_of(q, X, T), p, h=1e-6)
    for name, grad, numeric in zip("Wbv", grads, numerics):
        assert np.abs(numeric).max() > 0.01, name
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d E / d {name}, D = {inputs}")


@pytest.mark.parametrize("inputs", [2, 1, 3, 30])
def test_backprop_equals_torch_autograd(inputs):
    torch = pytest.importorskip("torch")
    X, T, p = smooth_network(np.random.default_rng(7 + 300 * inputs), n=20, hidden=8, inputs=inputs)
    W, B, V = (torch.tensor(a, requires_grad=True) for a in p)
    Y = torch.relu(torch.tensor(X) @ W + B) @ V
    torch.clamp(-Y * torch.tensor(T), min=0).mean().backward()
    for g, oracle in zip(moonxp.backprop(p, X, T), (W.grad, B.grad, V.grad)):
        np.testing.assert_allclose(g, oracle.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("inputs", [2, 1, 3, 30])
def test_backprop_equals_jax_grad(inputs):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)  # so the oracle runs in float64
    jnp = jax.numpy
    X, T, p = smooth_network(np.random.default_rng(8 + 400 * inputs), n=20, hidden=8, inputs=inputs)

    def E(params):
        W, B, V = params
        return jnp.mean(jnp.maximum(-(jnp.maximum(jnp.asarray(X) @ W + B, 0) @ V) * jnp.asarray(T), 0))

    oracle = jax.grad(E)(tuple(jnp.asarray(a) for a in p))
    assert oracle[0].dtype == jnp.float64 and oracle[0].shape == (inputs, 8)
    for g, o in zip(moonxp.backprop(p, X, T), oracle):
        np.testing.assert_allclose(g, np.asarray(o), rtol=1e-12, atol=1e-14)


def test_backprop_of_batch_equals_torch_autograd_on_each():
    """Batched gradients: autograd on the sum of the B losses gives each network's own gradient."""
    torch = pytest.importorskip("torch")
    X, T, p = smooth_batch(np.random.default_rng(9), (3,))
    W, B, V = (torch.tensor(a, requires_grad=True) for a in p)
    Y = (torch.relu(torch.tensor(X) @ W + B[:, None, :]) @ V[:, :, None])[..., 0]
    torch.clamp(-Y * torch.tensor(T), min=0).mean(dim=-1).sum().backward()
    for g, oracle in zip(moonxp.backprop(p, X, T), (W.grad, B.grad, V.grad)):
        np.testing.assert_allclose(g, oracle.numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- batches of networks

# JAX compiles each op once per shape (~1 s): the cases share their shapes where they can.
BATCHES = [pytest.param((4,), False, id="B=4-own-X"), pytest.param((3, 2), True, id="B=3x2-shared-X")]


@pytest.mark.parametrize(("batch", "shared_X"), BATCHES)
def test_batch_equals_single_networks(case, batch, shared_X):
    X, T, p = smooth_batch(np.random.default_rng(3), batch, shared_X=shared_X)
    Y = moonxp.forward(on(case, p), on(case, X))
    E = moonxp.loss(Y, on(case, T))
    grads = moonxp.backprop(on(case, p), *on(case, X, T))
    new = moonxp.descent(on(case, p), grads, 0.5)
    assert tuple(Y.shape) == (*batch, X.shape[-2])
    assert tuple(E.shape) == batch
    for a in (Y, E, *grads, *new):
        assert_on_case(a, case)
    for g, q in zip(grads, p):
        assert tuple(g.shape) == q.shape
    rounding = 64 * float(np.finfo(case.dtype_name).eps)
    Yh, Eh = moonxp.to_host(Y), moonxp.to_host(E)
    gh, nh = [moonxp.to_host(g) for g in grads], [moonxp.to_host(n) for n in new]
    for index in np.ndindex(*batch):
        one = Params(*(q[index] for q in p))
        Xk, Tk = (X, T) if shared_X else (X[index], T[index])
        # the same network alone, on the same backend
        single_grads = moonxp.backprop(on(case, one), *on(case, Xk, Tk))
        for g, s in zip(gh, single_grads):
            assert_on_case(s, case)
            np.testing.assert_allclose(g[index], moonxp.to_host(s), rtol=rounding, atol=rounding)
        # and the float64 reference
        assert_near(Yh[index], ref_forward(*one, Xk), case)
        expected = ref_backprop(*one, Xk, Tk)
        for g, e, n, q in zip(gh, expected, nh, one):
            assert_near(g[index], e, case)
            assert_near(n[index], q - 0.5 * e, case)
        assert_near(Eh[index], ref_loss(ref_forward(*one, Xk), Tk), case)


def test_batched_points_on_one_network_forward(case):
    """forward of one network on points (B, N, 2) gives (B, N): X's batch broadcasts against the params'."""
    rng = np.random.default_rng(5)
    _, _, p = smooth_network(rng)
    X = rng.uniform(-2, 2, (4, 12, 2))
    Y = moonxp.forward(on(case, p), on(case, X))
    assert_close(Y, np.stack([ref_forward(*p, x) for x in X]), case)


def test_shared_data_equals_data_repeated_per_network(case):
    """X (N, 2), T (N,) shared by a batch of networks equals X, T repeated per network."""
    X, T, p = smooth_batch(np.random.default_rng(6), (4,), shared_X=True)
    shared = moonxp.backprop(on(case, p), *on(case, X, T))
    repeated = moonxp.backprop(on(case, p), *on(case, np.stack([X] * 4), np.stack([T] * 4)))
    rounding = 16 * float(np.finfo(case.dtype_name).eps)
    for s, r in zip(shared, repeated):
        assert_on_case(s, case)
        np.testing.assert_allclose(moonxp.to_host(s), moonxp.to_host(r), rtol=rounding, atol=rounding)
