"""The kernels as public entries: the same functions, behind the checks of `validate`.

`moonxp.forward` & co. reject bad shapes, dtypes, values and namespace/device
mixes with a one-line error, and run with their arrays' device current (CuPy
launches on the current device); `moonxp.kernels` has the unchecked functions for
code that is traced or already checked.
"""

from __future__ import annotations

from typing import Any

from . import kernels, validate
from .arrays import device_context
from .errors import InvalidInputError, InvalidTypeError
from .kernels import Params

Array = Any


def forward(params: Params, X: Array) -> Array:
    """Network outputs Y (..., N) for points X (N, D) or (..., N, D); params W (..., D, H), b, v (..., H)."""
    xp, device = validate.arrays(params, X)
    params = Params(*params)
    with device_context(xp, device):
        validate.points(xp, X, params, into_batch=False)
        return kernels.forward(params, X, xp=xp)


def loss(Y: Array, T: Array) -> Array:
    """E (...) = mean over N of max(0, -Y T) for outputs Y (..., N) and labels T (..., N) of +-1."""
    xp, device = validate.outputs_and_labels(Y, T)
    with device_context(xp, device):
        return kernels.loss(Y, T, xp=xp)


def backprop(params: Params, X: Array, T: Array) -> Params:
    """Gradients of E w.r.t. W (..., D, H), b (..., H), v (..., H), averaged over the N points."""
    xp, device = validate.arrays(params, X, T)
    params = Params(*params)
    with device_context(xp, device):
        validate.points(xp, X, params, into_batch=True)
        validate.labels(xp, T, X, params)
        return kernels.backprop(params, X, T, xp=xp)


def descent(params: Params, grads: Params, lr: float) -> Params:
    """params - lr * grads, field by field; grads have the params' shapes."""
    validate.arrays(grads, name="grads")
    xp, device = validate.arrays(params, *grads)
    for name, p, g in zip("Wbv", params, grads):
        if tuple(p.shape) != tuple(g.shape):
            raise InvalidInputError(f"grads.{name} has shape {tuple(g.shape)} but params.{name} has "
                                    f"{tuple(p.shape)}: gradients share the params' shapes")
        if p.dtype != g.dtype:
            raise InvalidTypeError(f"grads.{name} is {g.dtype} but params.{name} is {p.dtype}: use one dtype")
    lr = validate.learning_rate(lr)
    with device_context(xp, device):
        return kernels.descent(Params(*params), Params(*grads), lr)
