"""The main job: the homework run (or an ensemble of it) on a chosen backend, with snapshots.

Data and initial parameters are drawn on the host and moved to the device
once. Training runs from snapshot to snapshot (iterations 0, 1, 3, 7, ...,
and every animation frame); only there are errors read back and the
parameters kept (on the device), so the device is not synchronized in
between. The report evaluates the kept parameters' grids, batched, to draw.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from .. import defaults
from ..arrays import device_context, to_host
from ..data import make_ensemble, make_problem, snapshot_iterations
from ..engine.backend import resolve
from ..engine.executor import compiles, execution, fall_back
from ..engine.policy import policy
from ..engine.training import evaluate, train
from ..errors import CompileError, DivergedError, InvalidInputError, InvalidTypeError
from ..kernels import Params
from . import budget
from .model import Config, Run, Snapshot, check, frame_iterations


def start(config: Config, plots: bool = True) -> Run:
    """Check the config and the memory the run needs (`budget`, with the figures if `plots`), resolve the
    backend and draw the data: quick, so bad input is reported before any training."""
    check(config)
    backend = resolve(config.device, config.backend, config.dtype)
    with device_context(backend.xp, backend.device):
        run_policy = policy(backend.xp, backend.device, backend.dtype)
    if config.compile and run_policy.compiler is None:
        raise InvalidTypeError(f"{backend.name} has no compiler: --compile needs --backend jax or torch "
                               f"(or --device cuda with torch or JAX installed)")
    budget.check(config, backend, plots)
    if config.ensemble == 1:
        X, T, initial = make_problem(config.seed, config.samples, config.noise, config.hidden)
    else:
        X, T, initial = make_ensemble(config.seed, config.ensemble, config.samples, config.noise, config.hidden)
    _check_noise(config, X, initial)
    units = config.ensemble * config.samples * config.hidden
    return Run(config, backend, X, T, initial, execution(run_policy, config.compile, config.iters, units),
               compiles(run_policy, config.compile, config.iters, units))


def _segment(run: Run, trainer: Callable, params: Params, X, T, iters: int, progress) -> tuple:
    """`iters` more iterations, compiled as decided; if compiling was moonxp's choice and the compiler fails,
    one warning line and eager from there on (an asked-for --compile's failure is an error)."""
    try:
        return trainer(params, X, T, lr=run.config.lr, iters=iters, compile=run.compiled, progress=progress)
    except CompileError as exc:
        if run.config.compile:
            raise
        fall_back(exc.compiler, exc.reason)
        run.compiled, run.execution = False, f"{exc.compiler} failed: eager"
        return trainer(params, X, T, lr=run.config.lr, iters=iters, compile=False, progress=progress)


def _check_noise(config: Config, X: np.ndarray, initial: Params) -> None:
    """Refuse a --noise that puts points where the first error overflows the dtype (then no learning
    rate helps): |y| <= max|x| sum_h |v_h| (|W_0h| + |W_1h|) + sum_h |v_h b_h|, and E sums N of them."""
    W, b, v = (np.abs(a) for a in initial)
    with np.errstate(over="ignore", invalid="ignore"):
        reach = np.max(np.abs(X)) * np.max(np.sum(v * W.sum(axis=-2), axis=-1)) + np.max(np.sum(v * b, axis=-1))
        finite = np.isfinite(reach) and reach * X.shape[-2] < np.finfo(config.dtype).max
    if not finite:
        raise InvalidInputError(f"--noise {config.noise:g} puts points too far out for {config.dtype}: the "
                                f"network's outputs would overflow before training; use a smaller --noise")


def execute(run: Run, on_snapshot: Callable[[Snapshot], None] = lambda snapshot: None,
            progress: Callable[[int, int], None] | None = None, trainer: Callable | None = None) -> Run:
    """Train `run` to the end, calling `on_snapshot` at each snapshot; fills in its results.

    `trainer`: a drop-in for `train` (`engine.sharded.trainer`: data-parallel on a cluster); None: `train`.
    """
    config, backend = run.config, run.backend
    started = time.perf_counter()
    params = Params(*(backend.asarray(p) for p in run.initial))
    X, T = backend.asarray(run.X), backend.asarray(run.T)
    network0 = (lambda p: Params(*(a[0, ...] for a in p))) if config.ensemble > 1 else (lambda p: p)
    shown = (lambda p: Params(*(a[:defaults.ENSEMBLE_PANELS, ...] for a in p))) if config.ensemble > 1 else (lambda p: p)
    stops = snapshot_iterations(config.iters)
    frames = set() if config.animate is None else set(frame_iterations(config.iters, config.animate))
    columns, done = [], 0
    run.timings = timings = {"train_s": 0.0, "total_s": 0.0}  # kept current for partial runs
    for target in sorted(set(stops) | frames | {config.iters}):
        tick = time.perf_counter()
        on_progress = None if progress is None else (lambda k, n, done=done: progress(done + k, config.iters))
        try:
            params, errors = _segment(run, trainer or train, params, X, T, target - done, on_progress)
        except DivergedError as exc:
            raise exc.after(done) from None
        errors = to_host(errors).reshape(-1, target - done + 1)  # (B, updates + 1)
        columns.append(errors[:, :-1])
        run.errors = np.concatenate(columns + [errors[:, -1:]], axis=1)  # (B, target + 1)
        done, tock = target, time.perf_counter()
        timings["train_s"] += tock - tick
        if target in frames:
            run.frames.append((target, shown(params)))
        if target in stops:
            run.snapshots.append(Snapshot(target, run.errors, network0(params)))
            on_snapshot(run.snapshots[-1])
        timings["total_s"] = time.perf_counter() - started
    run.params = params
    # one forward pass: compiled only where that pays (--compile is about the training steps and the grid)
    run.accuracy = to_host(evaluate(params, X, T, compile=False if config.compile is False else None)[1]).reshape(-1)
    timings["total_s"] = time.perf_counter() - started
    run.finished = True
    return run
