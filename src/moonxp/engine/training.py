"""Gradient descent with everything on the device.

One iteration is one `step`: the error and gradient sums of the kernels over
tiles of (networks x points) (`executor`), divided by N, then `descent`.
Errors stay on the device; every `check_every` iterations a single boolean is
read back to stop a diverging run, so a GPU is not synchronized every step.
Where the namespace has a compiler (``jax.jit``, ``torch.compile``), those
`check_every` steps are compiled, from the same source, as one program.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import numpy as np

from .. import validate
from ..arrays import device_context, to_host, values_readable
from ..defaults import CHECK_EVERY, ITERS, LR
from ..errors import DivergedError, InvalidTypeError
from ..kernels import STEP_TEMPORARIES, Params, descent, error_and_gradient_sums, forward, loss_terms, with_ones
from .executor import ALL, ALL_TILE, Tile, compiled, map_tiles, plan, program, run, sum_over_points
from .policy import Policy, policy as policy_for

Array = Any


def _tile(params: Params, X: Array, T: Array, tile: Tile) -> tuple[Params, Array, Array]:
    """The tile's networks (first batch axis, where X and T have it too) and points."""
    nets, points = tile
    if nets is not ALL:
        batch_ndim = params.W.ndim - 2
        params = Params(*(p[nets, ...] for p in params))
        if X.ndim - 2 == batch_ndim and X.shape[0] != 1:
            X = X[nets, ...]
        if T.ndim - 1 == batch_ndim and T.shape[0] != 1:
            T = T[nets, ...]
    if points is not ALL:
        X, T = X[..., points, :], T[..., points]
    return params, X, T


def tiled_sums(work: Callable, params: Params, X: Array, T: Array, xp: Any, policy: Policy) -> tuple:
    """Sum `work(params, X, T)` (per-network sums over points, a tuple) over all tiles."""
    W = params.W
    shape = (W.shape[0] if W.ndim > 2 else 1, math.prod(W.shape[1:-2]), X.shape[-2],
             STEP_TEMPORARIES * W.shape[-1] + W.shape[-2])  # per point: (H,) temporaries and x dy (D,)
    tiles, results = map_tiles(lambda tile: work(*_tile(params, X, T, tile)), functools.partial(plan, *shape),
                               math.prod(shape), policy)
    return sum_over_points(tiles, results, xp)


def _step(params: Params, X: Array, T: Array, lr: float, xp: Any, policy: Policy,
          fused: bool) -> tuple[Params, Array]:
    """(params after one descent step, the loss sum before it), for X = [X, 1] (`kernels.with_ones`).

    lr / N turns the gradient sums into means.
    """
    e, sums = tiled_sums(functools.partial(error_and_gradient_sums, xp=xp, fused=fused, ones_column=True),
                         params, X, T, xp, policy)
    return descent(params, sums, lr / X.shape[-2]), e


def _steps(params: Params, X: Array, T: Array, lr: float, count: int, xp: Any,
           policy: Policy, fused: bool) -> tuple[Params, Array]:
    """`count` descent steps on X = [X, 1]: (params after them, errors (..., count) before each).

    Compiled, the steps form one program, so a compiler reuses buffers across them
    and the host dispatches once per `count` steps (on a GPU: a few fused kernels
    per step, one launch sequence per `count` steps instead of ~30 launches per step).
    """
    sums = []
    for _ in range(count):
        params, e = _step(params, X, T, lr, xp, policy, fused)
        sums.append(e)
    return params, xp.stack(sums, axis=-1) / X.shape[-2]  # the mean, in one division per chunk


def _network_blocks(params: Params, policy: Policy, compiled: bool) -> list[Tile]:
    """Blocks of whole networks (the first batch axis), one per worker thread, or [ALL_TILE].

    Networks never interact, so each block trains on its own thread for a whole chunk of
    steps: threads meet once per chunk, not once per step, and each keeps its networks in
    its cache. One block for compiled programs, one network or one worker.
    """
    networks = params.W.shape[0] if params.W.ndim > 2 else 1
    workers = min(policy.workers, networks)
    if compiled or workers <= 1:
        return [ALL_TILE]
    return [(slice(networks * k // workers, networks * (k + 1) // workers), ALL) for k in range(workers)]


def _in_blocks(chunk: Callable, blocks: list[Tile], params: Params, X: Array, T: Array, lr: float, xp: Any,
               workers: int) -> tuple[Params, Array]:
    """`chunk(params, X, T, lr)` on each block of networks side by side, the blocks' results put back together."""
    if len(blocks) == 1:
        return chunk(params, X, T, lr)
    return sum_over_points(blocks, run(lambda block: chunk(*_tile(params, X, T, block), lr), blocks, workers), xp)


def _scores(params: Params, X: Array, T: Array, xp: Any, policy: Policy, fused: bool) -> tuple[Array, Array]:
    """Error E (...) and accuracy (...) on X = [X, 1] (`kernels.with_ones`), T: forward only, tile by tile."""
    def sums(p, x, t):
        y = forward(p, x, xp=xp, fused=fused, ones_column=True)
        return xp.sum(loss_terms(y, t, xp), axis=-1), xp.sum(xp.astype(y * t > 0, y.dtype), axis=-1)

    n = X.shape[-2]
    e, correct = tiled_sums(sums, params, X, T, xp, policy)
    return e / n, correct / n


def train(params: Params, X: Array, T: Array, *, lr: float = LR, iters: int = ITERS,
          compile: bool | None = None, check_every: int = CHECK_EVERY,
          progress: Callable[[int, int], None] | None = None) -> tuple[Params, Array]:
    """Train by plain gradient descent, all on the arrays' device.

    Parameters
    ----------
    params : Params
        W (..., D, H), b (..., H), v (..., H): leading batch dims train B networks at once.
    X : array
        Points (N, D) or (..., N, D) (the homework: D = 2).
    T : array
        Labels (..., N) of -1 or +1.
    lr : float
        Learning rate (the homework's 0.1).
    iters : int
        Descent steps (the homework's 128).
    compile : bool, optional
        None: the policy's default (JAX, and any library on CUDA, compile); True: `jax.jit` or
        `torch.compile` (CuPy through DLPack); False: eager.
    check_every : int
        Steps run as one program between the single boolean read back to detect divergence.
    progress : callable, optional
        Called as ``progress(done, iters)`` after each such chunk.

    Returns
    -------
    params : Params
        The trained parameters, in the inputs' namespace, device and dtype.
    errors : array
        (..., iters + 1): E before each update, then after the last.

    Raises
    ------
    DivergedError
        An error or a parameter became non-finite; the message names the first such iteration.
    InvalidInputError, InvalidTypeError
        Bad shapes, dtypes, values or arguments (see `moonxp.forward`), or traced arrays.
    DeviceMemoryError
        Out of device memory even in the smallest useful tiles.
    """
    xp, device = validate.arrays(params, X, T)
    params = Params(*params)
    if not all(values_readable(a) for a in (*params, X, T)):
        raise InvalidTypeError("train reads an error back every check_every steps to stop divergence, which a "
                               "traced array (jax.jit, vmap, grad, torch.func) or a meta tensor cannot give: "
                               "train outside the transformation, or transform moonxp.kernels."
                               "error_and_gradient_sums and moonxp.kernels.descent (or moonxp.backprop and "
                               "moonxp.descent), which trace")
    lr = validate.learning_rate(lr)
    iters = validate.count("iters", iters, 0)
    check_every = validate.count("check_every", check_every, 1)
    validate.compile_flag(compile)
    validate.callback("progress", progress)
    chunks, done = [], 0
    # Overflow on the way to divergence is expected: `_check_finite` reports it as DivergedError.
    with device_context(xp, device), np.errstate(over="ignore", invalid="ignore"):
        policy = policy_for(xp, device, params.W.dtype)
        validate.points(xp, X, params, into_batch=True)
        validate.labels(xp, T, X, params)
        X = with_ones(X, xp)
        blocks = _network_blocks(params, policy, compiled(policy, compile))
        inner = policy if len(blocks) == 1 else dataclasses.replace(policy, workers=1)  # a block's own tiles: in turn
        while done < iters:
            count = min(check_every, iters - done)
            # a shorter chunk runs one-step programs: two compiled programs at most (torch.compile: seconds each)
            step = program(_steps, inner, compile, count=count if count == check_every else 1, xp=xp, policy=inner)
            parts = []
            for _ in range(1 if count == check_every else count):
                params, errors = _in_blocks(step, blocks, params, X, T, lr, xp, policy.workers)
                parts.append(errors)
            chunks.append(parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1))
            _check_finite(xp, chunks, params, lr)
            done += count
            if progress is not None:
                progress(done, iters)
        final, _ = program(_scores, policy, compile, xp=xp, policy=policy)(params, X, T)
        chunks.append(final[..., None])
        _check_finite(xp, chunks, params, lr)
        return params, chunks[0] if len(chunks) == 1 else xp.concat(chunks, axis=-1)


def _check_finite(xp: Any, chunks: list, params: Params, lr: float) -> None:
    """Raise DivergedError unless the latest chunk of errors and the parameters are finite (one read-back).

    Non-finite parameters usually make the next error non-finite (the loss sum y . dE/dy
    turns inf * 0 into NaN), but not always: an output of +inf on the correct side has
    error 0. So the parameters are checked too; when only they are bad, divergence is
    dated at the iteration after the last error, the first state holding them.
    """
    finite = [xp.all(xp.isfinite(chunks[-1]))] + [xp.all(xp.isfinite(p)) for p in params]
    if bool(xp.all(xp.stack(finite))):
        return
    bad = ~np.isfinite(to_host(xp.concat(chunks, axis=-1)))  # (..., iterations so far)
    if not bad.any():  # the parameters after the last update, the state of the next iteration
        params_bad = ~np.all([np.isfinite(to_host(p)).reshape(bad.shape[:-1] + (-1,)).all(axis=-1)
                              for p in params], axis=0)
        bad = np.concatenate([bad, params_bad[..., None]], axis=-1)
    first = int(np.argmax(bad.reshape(-1, bad.shape[-1]).any(axis=0)))
    networks = f" ({int(bad[..., first].sum())} of {bad[..., 0].size} networks)" if bad.ndim > 1 else ""
    raise DivergedError(first, lr, networks)


def evaluate(params: Params, X: Array, T: Array, *, compile: bool | None = None) -> tuple[Array, Array]:
    """Error and accuracy of the network(s) on X, T (a forward pass only).

    Parameters
    ----------
    params, X, T, compile
        As for `train`.

    Returns
    -------
    E : array
        (...): the mean loss.
    accuracy : array
        (...): the share of points with sign(Y) = T.

    Raises
    ------
    InvalidInputError, InvalidTypeError
        As for `train`.
    """
    xp, device = validate.arrays(params, X, T)
    params = Params(*params)
    validate.compile_flag(compile)
    with device_context(xp, device):
        policy = policy_for(xp, device, params.W.dtype)
        validate.points(xp, X, params, into_batch=True)
        validate.labels(xp, T, X, params)
        return program(_scores, policy, compile, xp=xp, policy=policy)(params, with_ones(X, xp), T)
