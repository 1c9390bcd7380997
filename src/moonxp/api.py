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
    """Network outputs: y = max(0, X W + b) v.

    Parameters
    ----------
    params : Params
        W (..., D, H), b (..., H), v (..., H), any Array API namespace.
    X : array
        Points (N, D) or (..., N, D), in the params' namespace, device and dtype.

    Returns
    -------
    Y : array
        (..., N), in the inputs' namespace, device and dtype.

    Raises
    ------
    InvalidTypeError
        Not arrays, non-floating dtypes, or arrays of different libraries, devices or dtypes.
    InvalidInputError
        Shapes that do not fit, non-finite values.
    """
    xp, device = validate.arrays(params, X)
    params = Params(*params)
    with device_context(xp, device):
        validate.points(xp, X, params, into_batch=False)
        return kernels.forward(params, X, xp=xp)


def loss(Y: Array, T: Array) -> Array:
    """The perceptron loss E = mean over N of max(0, -Y T).

    Parameters
    ----------
    Y : array
        Network outputs (..., N).
    T : array
        Labels (..., N) of -1 or +1, broadcasting into Y's shape.

    Returns
    -------
    E : array
        (...), in Y's namespace, device and dtype.

    Raises
    ------
    InvalidTypeError
        Not arrays, non-floating dtypes, or arrays of different libraries, devices or dtypes.
    InvalidInputError
        Shapes that do not fit, non-finite values, labels other than +-1.
    """
    xp, device = validate.outputs_and_labels(Y, T)
    with device_context(xp, device):
        return kernels.loss(Y, T, xp=xp)


def backprop(params: Params, X: Array, T: Array) -> Params:
    """Gradients of E with respect to W, b and v, by the hand-written backprop of `moonxp.kernels`.

    Parameters
    ----------
    params : Params
        W (..., D, H), b (..., H), v (..., H).
    X : array
        Points (N, D) or (..., N, D) whose batch dims broadcast into the params'.
    T : array
        Labels (..., N) of -1 or +1.

    Returns
    -------
    grads : Params
        dE/dW, dE/db, dE/dv, averaged over the N points, with the params' shapes.

    Raises
    ------
    InvalidTypeError
        Not arrays, non-floating dtypes, or arrays of different libraries, devices or dtypes.
    InvalidInputError
        Shapes that do not fit, non-finite values, labels other than +-1.
    """
    xp, device = validate.arrays(params, X, T)
    params = Params(*params)
    with device_context(xp, device):
        validate.points(xp, X, params, into_batch=True)
        validate.labels(xp, T, X, params)
        return kernels.backprop(params, X, T, xp=xp)


def descent(params: Params, grads: Params, lr: float) -> Params:
    """One gradient-descent step, theta - lr * dE/dtheta, field by field.

    Parameters
    ----------
    params, grads : Params
        The same shapes, namespace, device and dtype.
    lr : float
        Learning rate, finite and > 0.

    Returns
    -------
    Params
        The updated parameters.

    Raises
    ------
    InvalidTypeError
        Not arrays, non-floating dtypes, or arrays of different libraries, devices or dtypes.
    InvalidInputError
        Shapes that do not fit, non-finite values, a learning rate that is not a finite number > 0.
    """
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
