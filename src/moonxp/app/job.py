"""The main job: the homework run (or an ensemble of it) on a chosen backend, with snapshots.

Data and initial parameters are drawn on the host and moved to the device
once. Training runs from snapshot to snapshot (iterations 0, 1, 3, 7, ...,
and every animation frame); only there are errors read back and the
parameters kept (on the device), so the device is not synchronized in
between. The report evaluates the kept parameters' grids, batched, to draw.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .. import defaults, validate
from ..arrays import device_context, to_host
from ..data import make_ensemble, make_problem, snapshot_iterations
from ..engine.backend import Backend, resolve
from ..engine.executor import compiles, execution, fall_back
from ..engine.policy import policy
from ..engine.training import evaluate, train
from ..errors import CompileError, DivergedError, InvalidInputError, InvalidTypeError
from ..kernels import Params
from . import animation

MAX_PLOT_GRID = 4096  # a bigger grid is for moonxp.evaluate_grid or `moonxp bench`, not a PNG


@dataclass(frozen=True)
class Config:
    """Everything that defines a run; the defaults are the homework's."""

    hidden: int = defaults.HIDDEN
    lr: float = defaults.LR
    iters: int = defaults.ITERS
    samples: int = defaults.SAMPLES
    noise: float = defaults.NOISE
    seed: int = defaults.SEED
    ensemble: int = 1
    grid: int = defaults.GRID
    device: str = "cpu"
    backend: str | None = None
    dtype: str = defaults.DTYPES[0]
    compile: bool | None = None
    animate: int | None = None  # None: no animation; 0: a frame every iteration (at most MAX_FRAMES); k: every k-th

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """State before update `iteration`: errors (B, iteration + 1) so far, network 0's params (on the device)."""

    iteration: int
    errors: np.ndarray
    params: Params


@dataclass
class Run:
    """A run's inputs and what it has produced so far (host arrays; params on the device); `finished` once complete."""

    config: Config
    backend: Backend
    X: np.ndarray
    T: np.ndarray
    initial: Params
    execution: str                           # how the work runs, and why: "jax.jit", "eager (too small to compile)"...
    compiled: bool = False                   # whether training compiles (decided once for the whole run)
    snapshots: list[Snapshot] = field(default_factory=list)
    errors: np.ndarray | None = None         # (B, iterations reached + 1)
    accuracy: np.ndarray | None = None       # (B,)
    params: Params | None = None             # the trained networks (on the device)
    frames: list[tuple[int, Params]] = field(default_factory=list)  # (iteration, the first networks' params)
    timings: dict = field(default_factory=dict)
    finished: bool = False


def check(config: Config) -> None:
    """Every value of `config` in range, or an InvalidInputError naming its command-line option."""
    validate.problem(config.seed, config.samples, config.noise, config.hidden, config.ensemble,
                     names={"seed": "--seed", "n_samples": "--samples", "noise": "--noise", "hidden": "--hidden",
                            "networks": "--ensemble"})
    validate.learning_rate(config.lr, "--lr")
    validate.count("--iters", config.iters, 0)
    validate.count("--grid", config.grid, 2, MAX_PLOT_GRID)
    if config.animate is not None:
        validate.count("--animate", config.animate, 0)


def start(config: Config, plots: bool = True) -> Run:
    """Check the config and the memory the run needs (`budget`, with the figures if `plots`), resolve the
    backend and draw the data: quick, so bad input is reported before any training."""
    from . import budget

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
    if config.animate is not None:
        animation.check_memory(config, backend)
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

    `trainer`: a drop-in for `train` (`engine.distributed.trainer`: data-parallel on a cluster); None: `train`.
    """
    config, backend = run.config, run.backend
    started = time.perf_counter()
    params = Params(*(backend.asarray(p) for p in run.initial))
    X, T = backend.asarray(run.X), backend.asarray(run.T)
    network0 = (lambda p: Params(*(a[0, ...] for a in p))) if config.ensemble > 1 else (lambda p: p)
    shown = (lambda p: Params(*(a[:defaults.ENSEMBLE_PANELS, ...] for a in p))) if config.ensemble > 1 else (lambda p: p)
    stops = snapshot_iterations(config.iters)
    frames = set() if config.animate is None else set(animation.frame_iterations(config.iters, config.animate))
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
    run.accuracy = to_host(evaluate(params, X, T, compile=config.compile)[1]).reshape(-1)
    timings["total_s"] = time.perf_counter() - started
    run.finished = True
    return run
