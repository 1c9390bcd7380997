"""The main job: the homework run (or an ensemble of it) on a chosen backend, with snapshots.

Data and initial parameters are drawn on the host and moved to the device
once. Training runs from snapshot to snapshot (iterations 0, 1, 3, 7, ...);
only there are errors read back and the decision function evaluated on the
grid, so the device is not synchronized in between.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .. import defaults
from ..arrays import to_host
from ..data import make_ensemble, make_problem, snapshot_iterations
from ..defaults import GRID_HI, GRID_LO
from ..engine.backend import Backend, resolve
from ..engine.grid import evaluate_grid
from ..engine.policy import policy
from ..engine.training import evaluate, train
from ..errors import DivergedError, InvalidInputError, InvalidTypeError
from ..kernels import Params
ENSEMBLE_PANELS = 4  # networks whose final boundary an ensemble run draws


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

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """State before update `iteration`: errors (B, iteration + 1) so far, network 0's grid (G, G)."""

    iteration: int
    errors: np.ndarray
    grid: np.ndarray


@dataclass
class Run:
    """A run's inputs and what it has produced so far (host arrays); `finished` once complete."""

    config: Config
    backend: Backend
    X: np.ndarray
    T: np.ndarray
    initial: Params
    axis: np.ndarray
    snapshots: list[Snapshot] = field(default_factory=list)
    errors: np.ndarray | None = None         # (B, iterations reached + 1)
    accuracy: np.ndarray | None = None       # (B,)
    final_grids: np.ndarray | None = None    # (k, G, G): an ensemble's first networks
    timings: dict = field(default_factory=dict)
    finished: bool = False


def start(config: Config, plots: bool = True) -> Run:
    """Resolve the backend, check the memory the run needs (`budget`) and draw the data: quick, so bad
    input is reported before any training."""
    from . import budget

    backend = resolve(config.device, config.backend, config.dtype)
    if config.compile and policy(backend.xp, backend.device, backend.dtype).compiler is None:
        raise InvalidTypeError(f"{backend.name} has no compiler: --compile needs --backend jax or torch")
    budget.check(config, backend, plots)
    if config.ensemble == 1:
        X, T, initial = make_problem(config.seed, config.samples, config.noise, config.hidden)
    else:
        X, T, initial = make_ensemble(config.seed, config.ensemble, config.samples, config.noise, config.hidden)
    _check_noise(config, X, initial)
    return Run(config, backend, X, T, initial, np.linspace(GRID_LO, GRID_HI, config.grid))


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
            progress: Callable[[int, int], None] | None = None) -> Run:
    """Train `run` to the end, calling `on_snapshot` at each snapshot; fills in its results."""
    config, backend = run.config, run.backend
    started = time.perf_counter()
    params = Params(*(backend.asarray(p) for p in run.initial))
    X, T = backend.asarray(run.X), backend.asarray(run.T)
    network0 = (lambda p: Params(*(a[0, ...] for a in p))) if config.ensemble > 1 else (lambda p: p)
    grid = functools.partial(evaluate_grid, size=config.grid, lo=GRID_LO, hi=GRID_HI, compile=config.compile)
    stops = snapshot_iterations(config.iters)
    columns, done = [], 0
    run.timings = timings = {"train_s": 0.0, "grid_s": 0.0, "total_s": 0.0}  # kept current for partial runs
    for target in sorted(set(stops) | {config.iters}):
        tick = time.perf_counter()
        on_progress = None if progress is None else (lambda k, n, done=done: progress(done + k, config.iters))
        try:
            params, errors = train(params, X, T, lr=config.lr, iters=target - done, compile=config.compile,
                                   progress=on_progress)
        except DivergedError as exc:
            raise exc.after(done) from None
        errors = to_host(errors).reshape(-1, target - done + 1)  # (B, updates + 1)
        columns.append(errors[:, :-1])
        run.errors = np.concatenate(columns + [errors[:, -1:]], axis=1)  # (B, target + 1)
        done, tock = target, time.perf_counter()
        timings["train_s"] += tock - tick
        if target in stops:
            image = to_host(grid(network0(params)))
            timings["grid_s"] += time.perf_counter() - tock
            run.snapshots.append(Snapshot(target, run.errors, image))
            on_snapshot(run.snapshots[-1])
        timings["total_s"] = time.perf_counter() - started
    tick = time.perf_counter()
    run.accuracy = to_host(evaluate(params, X, T, compile=config.compile)[1]).reshape(-1)
    if config.ensemble > 1:
        run.final_grids = to_host(grid(Params(*(a[:min(ENSEMBLE_PANELS, config.ensemble), ...] for a in params))))
    timings["grid_s"] += time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started
    run.finished = True
    return run
