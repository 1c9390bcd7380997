"""Gradient descent with everything on the device.

One iteration is one `step`: the error and gradient sums of the kernels over
tiles of (networks x points) (`executor`), divided by N, then `descent`.
Errors stay on the device; every `check_every` iterations a single boolean is
read back to stop a diverging run, so a GPU is not synchronized every step.
Where compiling pays (``jax.jit``, ``torch.compile``, see `executor.compiles`), one
step is compiled, from the same source, as one small program: small programs
compile in a fraction of the time an unrolled chunk of steps would.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterator

import numpy as np

from .. import validate
from ..arrays import all_true, device_context, namespace_of, stack, to_host, values_readable
from ..defaults import CHECK_EVERY, ITERS, LR
from ..errors import DivergedError, InvalidTypeError
from ..kernels import STEP_TEMPORARIES, Params, descent, error_and_gradient_sums, forward, loss_terms, with_ones
from . import processes
from .executor import (ALL, ALL_TILE, Tile, compiles, fit, map_tiles, plan, program, run, shares,
                       sum_over_points)
from .policy import Policy, limit_tiles, one_blas_thread, policy as policy_for, tile_elements

# Worker processes take a call's parallel NumPy work from this many (network, point, hidden unit) per step:
# below it, an exchange (0.1-0.4 ms) is not small against a worker's share of a chunk of steps.
PROCESS_MIN_UNITS = 1 << 16
# Seconds per (network, point, hidden unit) and step on one core, to estimate a call's work for `processes.team`
# as if its workers shared it perfectly (2-core EPYC, one worker, `bench/scaling.py` 15:03: B = 64, 41 M units,
# 80.9 ms; N = 200 000 for 32 steps, 320 M units, 483 ms; threads share it less well than that).
UNIT_S = 2e-9

Array = Any


def _with_ones(X: Array, xp: Any, fused: bool) -> Array:
    """`kernels.with_ones` as a program (`fused` is not used)."""
    return with_ones(X, xp)


def _ones_column(X: Array, xp: Any, policy: Policy, compile: bool | None, compiled: bool) -> Array:
    """[X, 1] (`kernels.with_ones`): a compiled program where eager ops would each compile (`Policy.eager_compiles`)."""
    return program(_with_ones, policy, compile, compiled and policy.eager_compiles, xp=xp)(X)


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


def _shape(params: Params, X: Array) -> tuple[int, int, int, int]:
    """(networks on the first batch axis, networks per entry, points, elements per point and network): `plan`'s
    sizes of one step's temporaries."""
    W = params.W
    return (W.shape[0] if W.ndim > 2 else 1, math.prod(W.shape[1:-2]), X.shape[-2],
            STEP_TEMPORARIES * W.shape[-1] + W.shape[-2])  # per point: (H,) temporaries and x dy (D,)


def _units(params: Params, X: Array) -> int:
    """(network, point, hidden unit) triples of one step: the cost model's measure of work."""
    return math.prod(params.v.shape) * X.shape[-2]


def tiled_sums(work: Callable, params: Params, X: Array, T: Array, xp: Any, policy: Policy) -> tuple:
    """Sum `work(params, X, T)` (per-network sums over points, a tuple) over all tiles."""
    shape = _shape(params, X)
    tiles, results = map_tiles(lambda tile: work(*_tile(params, X, T, tile)), functools.partial(plan, *shape),
                               math.prod(shape), policy)
    return sum_over_points(tiles, results, xp)


def _step(params: Params, X: Array, T: Array, lr: float, xp: Any, fused: bool) -> tuple[Params, Array]:
    """(params after one descent step on all of X = [X, 1] (`kernels.with_ones`), T; the error before it).

    lr / N turns the gradient sums into means.
    """
    e, sums = error_and_gradient_sums(params, X, T, xp, fused, ones_column=True)
    n = X.shape[-2]
    return descent(params, sums, lr / n), e / n


def _gradient_sums(params: Params, X: Array, T: Array, xp: Any, fused: bool) -> tuple[Array, Params]:
    """`kernels.error_and_gradient_sums` of one tile of X = [X, 1]."""
    return error_and_gradient_sums(params, X, T, xp, fused, ones_column=True)


def _apply(params: Params, tile_sums: tuple, step_size: float, n: int, xp: Any,
           fused: bool) -> tuple[Params, Array]:
    """The point tiles' (error, gradient) sums added in tile order, one descent step of `step_size` (lr / N):
    (params after it, the error E before it). One program where the sums and the update would be some forty
    ops, each a dispatch of its own in JAX."""
    e, sums = sum_over_points([ALL_TILE] * len(tile_sums), list(tile_sums), xp)
    return descent(params, sums, step_size), e / n


def _programs(policy: Policy, compile: bool | None, compiled: bool, xp: Any) -> tuple[Callable, Callable, Callable]:
    """The programs (`executor.program`) of `_step`, `_gradient_sums` (its tiles on the policy's workers) and
    `_apply`."""
    return (program(_step, policy, compile, compiled, xp=xp),
            program(_gradient_sums, policy, compile, compiled, tiles=True, xp=xp),
            program(_apply, policy, compile, compiled, xp=xp))


def _steps(params: Params, X: Array, T: Array, lr: float, count: int, xp: Any, policy: Policy,
           step: Callable, sums: Callable, apply: Callable,
           team: processes.Team | None = None) -> tuple[Params, tuple]:
    """`count` descent steps on X = [X, 1]: (params after them, (the error E (...) before each step)).

    `step`, `sums` and `apply` are the programs of `_programs`. Tiles are planned here, outside any
    compiled program. Where one tile holds all the work, each step is one program (`_step`: a few
    fused kernels on a GPU); else the per-tile sums are the program (at most two tile shapes), and
    tiles of points are added up and applied by `apply` (tiles of networks here). Tiles of points
    run on the policy's workers: threads, or `team`'s processes, each holding its share of the
    points for the chunk.
    Out of device memory, the steps run again from `params` in smaller tiles (`fit`).
    """
    def attempt(tiles: list) -> tuple[Params, tuple]:
        current, errors = params, []
        if len(tiles) > 1 and all(nets is ALL for nets, _ in tiles):  # tiles of points: sliced once per chunk
            pieces = [(X[..., points, :], T[..., points]) for _, points in tiles]
            split = shares(pieces, 1 + len(team)) if team is not None else []
            for k, share in enumerate(split[1:]):
                team.hold(k, share)
            for _ in range(count):
                if team is None:
                    tile_sums = run(lambda piece: sums(current, *piece), pieces, policy.workers)
                else:
                    first, *others = processes.spread(
                        team, lambda: [sums(current, *piece) for piece in split[0]],
                        [(_sums_of_held, current, processes.HELD, policy) for _ in split[1:]])
                    tile_sums = first + [(e[i], Params(W[i], b[i], v[i])) for e, (W, b, v) in others
                                         for i in range(e.shape[0])]
                current, e = apply(current, tuple(tile_sums), lr / X.shape[-2], X.shape[-2])
                errors.append(e)
            for k in range(len(split) - 1):
                team.hold(k, None)  # the worker's share freed with the chunk
            return current, tuple(errors)
        for _ in range(count):
            if len(tiles) == 1:
                current, e = step(current, X, T, lr)
            else:
                e, gradient_sums = tiled_sums(sums, current, X, T, xp, policy)
                current, e = descent(current, gradient_sums, lr / X.shape[-2]), e / X.shape[-2]
            errors.append(e)
        return current, tuple(errors)
    shape = _shape(params, X)
    return fit(attempt, functools.partial(plan, *shape), math.prod(shape), policy)[1]


def _sums_of_held(params: Params, pieces: list, policy: Policy) -> tuple[Array, Params]:
    """In a worker process: `_gradient_sums` of each (X, T) piece it holds, as train's threads compute them,
    stacked along a new first axis (a few arrays to send, not four per piece)."""
    xp = namespace_of(*params)
    gradient_sums = _programs(policy, None, False, xp)[1]
    sums = [gradient_sums(params, *piece) for piece in pieces]
    e, W, b, v = (xp.stack(leaves) for leaves in zip(*((e, *gradients) for e, gradients in sums)))
    return e, Params(W, b, v)


def _chunks_of_a_block(params: Params, X: Array, T: Array, lr: float, counts: list[int], policy: Policy,
                       elements: int) -> Iterator:
    """In a worker process: (params, errors) after each chunk of `counts` steps of one block of networks, in tiles
    of `elements` at most (the caller's tile size for a block), as train's threads run them (`_chunks`)."""
    xp = namespace_of(*params, X, T)
    inner, programs = dataclasses.replace(policy, workers=1), _programs(policy, None, False, xp)
    with limit_tiles(elements):
        for count in counts:
            params, errors = _steps(params, X, T, lr, count, xp, inner, *programs)
            yield params, errors


def _team(policy: Policy, compiled: bool, parallel: bool, params: Params, X: Array,
          iters: int) -> processes.Team | None:
    """Worker processes for this call's parallel eager work (`processes.team`), where a step has
    `PROCESS_MIN_UNITS` at least; None: threads."""
    units = _units(params, X)
    if compiled or not parallel or not policy.processes or units < PROCESS_MIN_UNITS:
        return None
    return processes.team(policy.workers - 1, work_s=units * iters * UNIT_S / policy.workers)


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
    return [(slice(share.start, share.stop), ALL) for share in shares(range(networks), workers)]


def _chunks(steps: Callable, blocks: list[Tile], params: Params, X: Array, T: Array, xp: Any, policy: Policy,
            team: processes.Team | None, lr: float, counts: list[int]) -> Iterator[tuple[Params, tuple, int]]:
    """(params after it, its errors, its step count) for each chunk of `counts` steps (`steps`), the blocks of
    networks side by side: on threads, meeting once per chunk, or on `team`'s processes, which run their
    blocks' chunks through while this thread checks each chunk as it comes."""
    if len(blocks) == 1:
        for count in counts:
            params, errors = steps(params, X, T, count=count)
            yield params, errors, count
        return
    parts = [_tile(params, X, T, block) for block in blocks]
    block_tiles = tile_elements(dataclasses.replace(policy, workers=1))  # as train's `inner` policy tiles
    for k, part in enumerate(parts[1:] if team is not None else []):
        team.send(k, _chunks_of_a_block, *part, lr, counts, policy, block_tiles)
    for count in counts:
        if team is None:
            results = run(lambda part: steps(*part, count=count), parts, policy.workers)
        else:
            with one_blas_thread():
                results = [steps(*parts[0], count=count)]
            results += [team.receive(k) for k in range(len(parts) - 1)]
        parts = [(result[0], *part[1:]) for result, part in zip(results, parts)]
        yield *sum_over_points(blocks, results, xp), count
    for k in range(len(parts) - 1 if team is not None else 0):
        team.receive(k)  # the end of the worker's call


def _score_sums(params: Params, X: Array, T: Array, xp: Any, fused: bool) -> tuple[Array, Array]:
    """Sums over the points of X = [X, 1] (`kernels.with_ones`) of the loss terms and of the correct signs."""
    y = forward(params, X, xp=xp, fused=fused, ones_column=True)
    return xp.sum(loss_terms(y, T, xp), axis=-1), xp.sum(xp.astype(y * T > 0, y.dtype), axis=-1)


def _scores(params: Params, X: Array, T: Array, xp: Any, policy: Policy, compile: bool | None,
            compiled: bool) -> tuple[Array, Array]:
    """Loss sum (...) and correct signs (...) over X = [X, 1], T: forward only, tile by tile."""
    return tiled_sums(program(_score_sums, policy, compile, compiled, tiles=True, xp=xp), params, X, T, xp, policy)


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
        None: compile where it pays (`moonxp.engine.policy.CompileCost`: JAX always, torch.compile
        on CUDA for large work; a failing compiler then warns once and runs eager); True: `jax.jit`
        or `torch.compile` (CuPy through DLPack), a compiler failure raising CompileError; False: eager.
    check_every : int
        Steps between the single boolean read back to detect divergence.
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
    errors, done = [], 0  # E (...) before each update, on the device
    # Overflow on the way to divergence is expected: `_check_finite` reports it as DivergedError.
    with device_context(xp, device), np.errstate(over="ignore", invalid="ignore"):
        policy = policy_for(xp, device, params.W.dtype)
        validate.points(xp, X, params, into_batch=True)
        validate.labels(xp, T, X, params)
        compiled = compiles(policy, compile, iters, _units(params, X))
        X = _ones_column(X, xp, policy, compile, compiled)
        blocks = _network_blocks(params, policy, compiled)
        parallel = len(blocks) > 1 or len(plan(*_shape(params, X), tile_elements(policy))) > 1
        team = _team(policy, compiled, parallel, params, X, iters)
        inner = policy if len(blocks) == 1 else dataclasses.replace(policy, workers=1)  # a block's own tiles: in turn
        step, sums, apply = _programs(policy, compile, compiled, xp)  # once per call, not once per chunk
        steps = functools.partial(_steps, lr=lr, xp=xp, policy=inner, step=step, sums=sums, apply=apply,
                                  team=team if len(blocks) == 1 else None)
        counts = [min(check_every, iters - done) for done in range(0, iters, check_every)]
        with processes.owing(team):
            for params, chunk_errors, count in _chunks(steps, blocks, params, X, T, xp, policy, team, lr, counts):
                errors += chunk_errors
                _check_finite(xp, errors, count, params, lr)
                done += count
                if progress is not None:
                    progress(done, iters)
        if compiled:  # the step program's error at the final params, its update dropped: no second program
            errors.append(steps(params, X, T, count=1, policy=policy)[1][0])
        else:
            errors.append(_scores(params, X, T, xp, policy, compile, compiled)[0] / X.shape[-2])
        _check_finite(xp, errors, 1, params, lr)
        return params, stack(xp, errors)


def _check_finite(xp: Any, errors: list, latest: int, params: Params, lr: float) -> None:
    """Raise DivergedError unless the `latest` errors and the parameters are finite (one read-back).

    Non-finite parameters usually make the next error non-finite (the loss sum y . dE/dy
    turns inf * 0 into NaN), but not always: an output of +inf on the correct side has
    error 0. So the parameters are checked too; when only they are bad, divergence is
    dated at the iteration after the last error, the first state holding them.
    """
    if all_true(xp, [stack(xp, errors[-latest:]), *params], lambda xp, a: xp.isfinite(a)):
        return
    bad = ~np.isfinite(np.stack([to_host(e) for e in errors], axis=-1))  # (..., iterations so far)
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
        compiled = compiles(policy, compile, 1, _units(params, X))
        e, correct = _scores(params, _ones_column(X, xp, policy, compile, compiled), T, xp, policy, compile,
                             compiled)
        return e / X.shape[-2], correct / X.shape[-2]
