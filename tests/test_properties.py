"""Properties of the public kernels over generated shapes, batch dimensions, dtypes and values.

Arrays come from `hypothesis.extra.array_api` over array-api-strict, on its default
device and on Device("device1"), in float32 and float64: forward, loss, backprop and
descent keep shapes, dtype, namespace and device; finite inputs give finite outputs;
the gradient is exactly zero when every point lies on its label's side; and any other
shape or value is a moonxp error, never a crash. One property runs on every backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace, device as device_of

xs = pytest.importorskip("array_api_strict")
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra.array_api import make_strategies_namespace  # noqa: E402

import moonxp
from moonxp import Params

xps = make_strategies_namespace(xs, api_version="2023.12")  # what hypothesis 6.100 (the floor) knows
DEVICES = [xs.Device("CPU_DEVICE"), xs.Device("device1")]
FAST = settings(max_examples=40, deadline=None)
BOUND = 10.0  # |values| <= BOUND: products of a few of them stay far from overflow in float32


def floats(dtype, bound: float = BOUND):
    return st.floats(-bound, bound, width=32 if dtype == xs.float32 else 64)


@st.composite
def problems(draw, max_batch_dims: int = 2):
    """(params, X, T) on one device in one dtype: params batch B, X and T batch dims broadcasting into B."""
    dtype = draw(st.sampled_from([xs.float32, xs.float64]))
    device = draw(st.sampled_from(DEVICES))
    hidden, n = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=max_batch_dims)))
    # X's batch: a suffix of the params' batch, some dims 1 (shared points)
    suffix = batch[len(batch) - draw(st.integers(0, len(batch))):]
    xbatch = tuple(d if draw(st.booleans()) else 1 for d in suffix)

    def array(shape, elements):
        return draw(xps.arrays(dtype, shape, elements=elements)).to_device(device)

    params = Params(array(batch + (2, hidden), floats(dtype)), array(batch + (hidden,), floats(dtype)),
                    array(batch + (hidden,), floats(dtype)))
    X = array(xbatch + (n, 2), floats(dtype))
    T = array(xbatch + (n,), st.sampled_from([-1.0, 1.0]))
    return params, X, T


def assert_like(actual, reference, shape) -> None:
    """`actual` has `shape` and the namespace, device and dtype of `reference`."""
    assert tuple(actual.shape) == tuple(shape)
    assert array_namespace(actual) is array_namespace(reference)
    assert device_of(actual) == device_of(reference)
    assert actual.dtype == reference.dtype


def finite(a) -> bool:
    return bool(xs.all(xs.isfinite(a)))


@FAST
@given(problems())
def test_forward_and_loss_keep_shape_dtype_device_and_are_finite(problem):
    params, X, T = problem
    Y = moonxp.forward(params, X)
    batch = np.broadcast_shapes(tuple(params.W.shape[:-2]), tuple(X.shape[:-2]))
    assert_like(Y, X, batch + (X.shape[-2],))
    assert finite(Y)
    E = moonxp.loss(Y, T)
    assert_like(E, X, batch)
    assert finite(E) and bool(xs.all(E >= 0))


@FAST
@given(problems())
def test_backprop_and_descent_keep_the_params_shapes_dtype_device(problem):
    params, X, T = problem
    grads = moonxp.backprop(params, X, T)
    assert isinstance(grads, Params)
    for g, p in zip(grads, params):
        assert_like(g, p, p.shape)
        assert finite(g)
    stepped = moonxp.descent(params, grads, 0.1)
    for s, p, g in zip(stepped, params, grads):
        assert_like(s, p, p.shape)
        assert finite(s)
        assert bool(xs.all(s == p - 0.1 * g))


@FAST
@given(problems())
def test_gradient_is_exactly_zero_when_every_point_is_on_its_side(problem):
    params, X, _ = problem
    Y = moonxp.forward(params, X)
    T = xs.where(Y >= 0, xs.asarray(1.0, dtype=Y.dtype, device=Y.device),
                 xs.asarray(-1.0, dtype=Y.dtype, device=Y.device))   # y t >= 0 at every point
    assert bool(xs.all(moonxp.loss(Y, T) == 0))
    grads = moonxp.backprop(params, X, T)
    for g in grads:
        assert bool(xs.all(g == 0))


@settings(max_examples=20, deadline=None)
@given(problems(max_batch_dims=1), st.integers(0, 3), st.floats(1e-3, 1.0))
def test_train_keeps_shapes_and_errors_are_before_each_update(problem, iters, lr):
    params, X, T = problem
    trained, errors = moonxp.train(params, X, T, lr=lr, iters=iters)
    for t, p in zip(trained, params):
        assert_like(t, p, p.shape)
    assert_like(errors, X, tuple(params.W.shape[:-2]) + (iters + 1,))
    assert finite(errors)
    first = moonxp.loss(moonxp.forward(params, X), T)
    np.testing.assert_allclose(moonxp.to_host(errors[..., 0]), moonxp.to_host(first), rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(shape=xps.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3))
def test_any_points_shape_works_or_is_an_invalid_input_error(shape):
    params = Params(*(xs.asarray(a) for a in moonxp.make_problem(0, hidden=3)[2]))
    X = xs.zeros(shape, dtype=xs.float64)
    valid = len(shape) >= 2 and shape[-1] == 2 and shape[-2] >= 1
    if valid:
        assert tuple(moonxp.forward(params, X).shape) == shape[:-1]
    else:
        with pytest.raises(moonxp.InvalidInputError, match="X has shape|X holds no points"):
            moonxp.forward(params, X)


@settings(max_examples=60, deadline=None)
@given(T_shape=xps.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
def test_any_labels_shape_works_or_is_an_invalid_input_error(T_shape):
    X, _, p = moonxp.make_problem(0, n_samples=4, hidden=3)
    params, X = Params(*(xs.asarray(a) for a in p)), xs.asarray(X)
    T = xs.ones(T_shape, dtype=xs.float64)
    if T_shape == (4,):  # one label per point; one label for all four is refused, never broadcast
        assert all(tuple(g.shape) == tuple(q.shape) for g, q in zip(moonxp.backprop(params, X, T), params))
    else:
        with pytest.raises(moonxp.InvalidInputError, match="T has shape .* one label per point"):
            moonxp.backprop(params, X, T)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # huge finite points overflow the outputs: allowed here
@settings(max_examples=60, deadline=None)
@given(values=xps.arrays(xs.float64, (4, 2), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_point_values_work_or_are_rejected_as_non_finite(values):
    params = Params(*(xs.asarray(a) for a in moonxp.make_problem(0, hidden=3)[2]))
    if finite(values):
        moonxp.forward(params, values)
    else:
        with pytest.raises(moonxp.InvalidInputError, match="X holds NaN or infinity: give finite values"):
            moonxp.forward(params, values)


@settings(max_examples=60, deadline=None)
@given(values=xps.arrays(xs.float64, (4,), elements=st.floats(allow_nan=True, allow_infinity=True)
                         | st.sampled_from([-1.0, 1.0])))
def test_any_label_values_work_only_when_plus_minus_one(values):
    X, _, p = moonxp.make_problem(0, n_samples=4, hidden=3)
    params, X = Params(*(xs.asarray(a) for a in p)), xs.asarray(X)
    if bool(xs.all((values == 1.0) | (values == -1.0))):
        moonxp.backprop(params, X, values)
    else:
        with pytest.raises(moonxp.InvalidInputError, match=r"labels T must be -1 or \+1"):
            moonxp.backprop(params, X, values)


# Two shapes only (the properties above vary them): eager JAX compiles each operation per shape, ~1.5 s.
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.sampled_from([(), (2, 3)]), seed=st.integers(0, 2**16))
def test_every_backend_keeps_namespace_device_dtype(case, batch, seed):
    rng, hidden, n = np.random.default_rng(seed), 3, 5
    host = Params(rng.normal(size=batch + (2, hidden)), rng.normal(size=batch + (hidden,)),
                  rng.normal(size=batch + (hidden,)))
    params = Params(*(case.asarray(a) for a in host))
    X = case.asarray(rng.uniform(-3, 3, size=(n, 2)))
    T = case.asarray(rng.choice([-1.0, 1.0], size=batch + (n,)))
    Y = moonxp.forward(params, X)
    assert_like(Y, X, batch + (n,))
    grads = moonxp.backprop(params, X, T)
    stepped = moonxp.descent(params, grads, 0.5)
    for g, s, p in zip(grads, stepped, params):
        assert_like(g, p, p.shape)
        assert_like(s, p, p.shape)
    E = moonxp.loss(Y, T)
    assert_like(E, X, batch)
    assert np.isfinite(moonxp.to_host(E)).all()
