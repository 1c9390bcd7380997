"""The network, its loss and its hand-written backprop, written once for any Array API namespace.

    z = X W + b            (..., N, H)   preactivation, X (..., N, D), W (..., D, H)
    a = max(0, z)                          ReLU
    y = a v                (..., N)      readout (no output bias)
    E = mean_N max(0, -y t)  (...)         perceptron loss, t = +-1

Backprop, each line the derivative of the forward line above it:
    dE/dy = -t/N where -y t > 0, else 0
    dE/dz = dE/dy v where z > 0, else 0
    dE/dW = X^T dE/dz,  dE/db = sum_N dE/dz,  dE/dv = a^T dE/dy

Every parameter may carry leading batch dimensions (...): B networks are one
call. The homework has D = 2 inputs; any D >= 1 is the same code. The functions are pure: no host transfers, no in-place updates and no
Python branch on array values, so a tracer (``jax.jit``) compiles them as
they are. Masks multiply (``astype(mask, dtype)``) instead of ``where``: it is
portable to strict namespaces and measured far faster in NumPy. Contractions call
``xp.matmul`` rather than the ``@`` operator, so the namespace an engine passes in
decides how they run.

``fused=True`` writes the degenerate contractions (K = D in X W, the one-column
readout, the sums over N) as broadcast multiplies and ``xp.sum``: the same math
in the form a compiler fuses into few kernels (compiled GPU policies use it).
The default keeps the matmuls, faster in eager NumPy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import array_namespace, device

Array = Any
Namespace = Any


STEP_TEMPORARIES = 4  # (..., N, H) arrays alive at once in error_and_gradient_sums: z, z > 0, ReLU'(z), a


class Params(NamedTuple):
    """Network parameters (or their gradients): W (..., D, H), b (..., H), v (..., H); D = 2 in the homework."""

    W: Array
    b: Array
    v: Array


def matvec(A: Array, v: Array, xp: Namespace, fused: bool = False) -> Array:
    """sum_h A[..., n, h] v[..., h]: (..., N, H), (..., H) -> (..., N)."""
    return xp.sum(A * v[..., None, :], axis=-1) if fused else xp.matmul(A, v[..., :, None])[..., 0]


def vecmat(u: Array, A: Array, xp: Namespace, fused: bool = False) -> Array:
    """sum_n u[..., n] A[..., n, h]: (..., N), (..., N, H) -> (..., H)."""
    return xp.sum(u[..., :, None] * A, axis=-2) if fused else xp.matmul(u[..., None, :], A)[..., 0, :]


def with_ones(X: Array, xp: Namespace) -> Array:
    """[X, 1] (..., N, D + 1): the points with a column of ones, for ``ones_column=True``.

    Stored coordinate by coordinate (the transpose of a contiguous (..., D + 1, N) array),
    so that each coordinate's N values are contiguous for the x dy products of the gradient.
    """
    Xt = xp.matrix_transpose(X)
    ones = xp.ones((*Xt.shape[:-2], 1, Xt.shape[-1]), dtype=X.dtype, device=device(X))
    return xp.matrix_transpose(xp.concat([Xt, ones], axis=-2))


def preactivation(params: Params, X: Array, xp: Namespace, fused: bool = False, ones_column: bool = False) -> Array:
    """z = X W + b: (..., N, D) points -> (..., N, H).

    `ones_column`: X is [X, 1] (`with_ones`), and b rides in the contraction, [X, 1] [W; b]:
    one matmul instead of a matmul and a broadcast add (whose inner loops are only H long).
    """
    if not fused:
        if ones_column:
            return xp.matmul(X, xp.concat([params.W, params.b[..., None, :]], axis=-2))
        return xp.matmul(X, params.W) + params.b[..., None, :]
    z = params.b[..., None, :]
    for k in range(params.W.shape[-2]):  # D multiply-adds (2 for the homework), which a compiler fuses with what follows
        z = z + X[..., :, k, None] * params.W[..., k, None, :]
    return z


def relu(z: Array, xp: Namespace) -> Array:
    """max(0, z), elementwise. The 0 is an array on z's device (a (..., 1) slice's zeros, so no device
    lookup is traced): with a Python 0.0, array-api-compat's torch asks torch.result_type, which breaks
    a torch.compile graph."""
    return xp.maximum(z, xp.zeros_like(z[..., :1]))


def readout(z: Array, v: Array, xp: Namespace, fused: bool = False) -> Array:
    """y = max(0, z) v: preactivations (..., N, H) -> outputs (..., N)."""
    return matvec(relu(z, xp), v, xp, fused)


def forward(params: Params, X: Array, *, xp: Namespace | None = None, fused: bool = False,
            ones_column: bool = False) -> Array:
    """Network outputs Y (..., N) for points X (N, D) or (..., N, D) (`ones_column`: see `preactivation`)."""
    xp = array_namespace(X, *params) if xp is None else xp
    return readout(preactivation(params, X, xp, fused, ones_column), params.v, xp, fused)


def loss_terms(Y: Array, T: Array, xp: Namespace) -> Array:
    """max(0, -Y T) per point: outputs Y (..., N), labels T = +-1 -> (..., N)."""
    return relu(-Y * T, xp)


def loss(Y: Array, T: Array, *, xp: Namespace | None = None) -> Array:
    """E (...) = mean over N of max(0, -Y T), for outputs Y (..., N) and labels T = +-1."""
    xp = array_namespace(Y, T) if xp is None else xp
    return xp.mean(loss_terms(Y, T, xp), axis=-1)


def error_and_gradient_sums(params: Params, X: Array, T: Array, xp: Namespace,
                            fused: bool = False, ones_column: bool = False) -> tuple[Array, Params]:
    """Sums over the N points of the loss terms (...) and of their parameter gradients.

    Sums, not means, so that tiles of points add up (see `executor`). dE/dz =
    dE/dy v ReLU'(z) is never formed: the per-point factor dE/dy goes onto X (N, D)
    and the per-unit factor v onto the (D, H) and (H,) sums, so the only (N, H)
    work of the backward pass is reading ReLU'(z) and a in three contractions.
    `ones_column`: X is [X, 1] (`with_ones`; see `preactivation`).
    """
    D = params.W.shape[-2]
    z = preactivation(params, X, xp, fused, ones_column)             # (..., N, H)
    active = xp.astype(z > 0, z.dtype)                               # ReLU'(z)
    a = z * active                                                   # max(0, z)
    y = matvec(a, params.v, xp, fused)                               # (..., N)
    dy = -T * xp.astype(y * T < 0, y.dtype)                          # d max(0, -y t) / dy
    if fused:  # sum_N x_k dy ReLU'(z), one k at a time: D reductions a compiler fuses
        xdy_active = xp.stack([vecmat(X[..., :, k] * dy, active, xp, fused) for k in range(D)], axis=-2)
    else:  # x^T dy as (..., D, N): every product loop runs along the points
        xdy_active = xp.matmul(xp.matrix_transpose(X)[..., :D, :] * dy[..., None, :], active)
    dW = xdy_active * params.v[..., None, :]                         # sum_N x dy ReLU'(z) v, (..., D, H)
    db = vecmat(dy, active, xp, fused) * params.v                    # sum_N dy ReLU'(z) v, (..., H)
    dv = vecmat(dy, a, xp, fused)                                    # sum_N dy a, (..., H)
    # max(0, -y t) is positively homogeneous in y, so the loss sum is y . dE/dy (Euler).
    return xp.vecdot(y, dy), Params(dW, db, dv)


def backprop(params: Params, X: Array, T: Array, *, xp: Namespace | None = None) -> Params:
    """Gradients of E w.r.t. W, b, v (same shapes as params), averaged over the N points."""
    xp = array_namespace(X, T, *params) if xp is None else xp
    _, sums = error_and_gradient_sums(params, X, T, xp)
    n = X.shape[-2]
    return Params(*(g / n for g in sums))


def descent(params: Params, grads: Params, lr: float) -> Params:
    """One gradient-descent step: theta - lr * dE/dtheta."""
    return Params(params.W - lr * grads.W, params.b - lr * grads.b, params.v - lr * grads.v)


# ---------------------------------------------------------------- the estimator's loss: logistic, weighted
#
#     m = y t                                  margin, t = +-1
#     l = log(1 + exp(-m))                     logistic loss of one point
#       = max(-m, 0) + log1p(exp(-|m|))        the same, with no overflow for any m
#       max(-m, 0) = (|m| - m) / 2,  max(m, 0) = (|m| + m) / 2   (exact; no scalar argument to xp.maximum,
#                                                                  which array API versions before 2024.12 refuse)
#     E = sum_N w l / sum_N w                  weights w >= 0 (scikit-learn's sample_weight; ones: the mean)
#
# Backprop, each line the derivative of the line above it:
#     dl/dm = -1 / (1 + exp(m)) = -sigma(-m) = -exp(-max(m, 0) - log1p(exp(-|m|)))
#     dE/dy = w t dl/dm / sum_N w              the rest of the chain is the perceptron's (above)

def logistic_terms(Y: Array, T: Array, xp: Namespace) -> Array:
    """log(1 + exp(-Y T)) per point: outputs Y (..., N), labels T = +-1 -> (..., N)."""
    m = Y * T
    return (xp.abs(m) - m) * 0.5 + xp.log1p(xp.exp(-xp.abs(m)))


def logistic_error_and_gradient_sums(params: Params, X: Array, T: Array, weights: Array,
                                     xp: Namespace) -> tuple[Array, Params]:
    """Weighted sums over the N points of the logistic loss terms (...) and of their parameter gradients.

    Divided by sum_N w they are E and dE/dW, dE/db, dE/dv. As in `error_and_gradient_sums`,
    dE/dz is never formed: the per-point factor goes onto X and v onto the (D, H), (H,) sums.
    """
    z = preactivation(params, X, xp)                                 # (..., N, H)
    active = xp.astype(z > 0, z.dtype)                               # ReLU'(z)
    a = z * active                                                   # max(0, z)
    m = matvec(a, params.v, xp) * T                                  # margins y t, (..., N)
    size = xp.abs(m)
    soft = xp.log1p(xp.exp(-size))                                   # log(1 + exp(-|m|))
    terms = (size - m) * 0.5 + soft                                  # l = log(1 + exp(-m))
    dy = -weights * T * xp.exp(-((size + m) * 0.5) - soft)           # w dl/dy = -w t sigma(-m)
    dW = xp.matmul(xp.matrix_transpose(X * dy[..., :, None]), active) * params.v[..., None, :]  # sum_N x dy ReLU'(z) v
    db = vecmat(dy, active, xp) * params.v                           # sum_N dy ReLU'(z) v, (..., H)
    dv = vecmat(dy, a, xp)                                           # sum_N dy a, (..., H)
    return xp.sum(weights * terms, axis=-1), Params(dW, db, dv)
