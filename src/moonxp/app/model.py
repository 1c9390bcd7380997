"""The application's data model: what each command is asked (typed configs), what a run holds, their checks.

A leaf of the application: it imports no other module of `app`, so the command
line, the job, the memory budget, the report and the animation all build on it
without importing one another. The option parsers (argparse ``type=``
callables) live here too: the command line and the configs agree on them.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

from .. import defaults

if TYPE_CHECKING:  # NumPy loads with the work, not with the command line
    import numpy as np

    from ..engine.backend import Backend
    from ..kernels import Params

MAX_PLOT_GRID = 4096    # a bigger grid is for moonxp.evaluate_grid or `moonxp bench`, not a PNG
MAX_FRAMES = 200        # frames of an automatic animation: a long run shows every k-th iteration
TABLE_FORMATS = ("csv", "parquet")  # of a sweep's results table; the first is the default


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run (`moonxp train`); the defaults are the homework's."""

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
class SweepConfig:
    """Everything that defines `moonxp sweep`: the lists of settings, the seeds and where the work runs."""

    lr: tuple[float, ...] = (defaults.LR,)
    hidden: tuple[int, ...] = (defaults.HIDDEN,)
    samples: tuple[int, ...] = (defaults.SAMPLES,)
    noise: tuple[float, ...] = (defaults.NOISE,)
    iters: tuple[int, ...] = (defaults.ITERS,)
    dtype: tuple[str, ...] = (defaults.DTYPES[0],)
    seeds: range = range(0, 10)
    block: int = defaults.SWEEP_BLOCK  # networks per task
    device: str = "cpu"
    backend: str | None = None
    scheduler: str | None = None
    out: str = "moonxp-sweep"
    format: str = TABLE_FORMATS[0]  # of the results table (TABLE_FORMATS)
    plots: bool = True
    quiet: bool = False

    def settings(self) -> dict[str, tuple]:
        """The lists of settings whose Cartesian product the sweep trains."""
        return {name: getattr(self, name) for name in ("lr", "hidden", "samples", "noise", "iters", "dtype")}


@dataclass(frozen=True)
class BenchConfig:
    """Everything that defines `moonxp bench`: a run (`command` "run") or reading saved runs ("show", "compare")."""

    command: str = "run"
    device: str = "cpu"
    backend: str | None = None
    sizes: str = "full"         # "smoke", "quick" or "full"
    json: str | None = None
    table: str | None = None
    plot: str | None = None
    in_process: bool = False
    results: tuple[str, ...] = ()


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
    cluster: dict = field(default_factory=dict)  # on a cluster: the versions of its scheduler and workers
    finished: bool = False


def check(config: Config) -> None:
    """Every value of `config` in range, or an InvalidInputError naming its command-line option."""
    from .. import validate

    validate.problem(config.seed, config.samples, config.noise, config.hidden, config.ensemble,
                     names={"seed": "--seed", "n_samples": "--samples", "noise": "--noise", "hidden": "--hidden",
                            "networks": "--ensemble"})
    validate.learning_rate(config.lr, "--lr")
    validate.count("--iters", config.iters, 0)
    validate.count("--grid", config.grid, 2, MAX_PLOT_GRID)
    if config.animate is not None:
        validate.count("--animate", config.animate, 0)


def frame_iterations(iters: int, every: int) -> list[int]:
    """Animation frames: iterations 0, k, 2k, ... and `iters` (the trained state); every = 0 picks k for
    at most MAX_FRAMES frames."""
    every = every or max(1, math.ceil(iters / (MAX_FRAMES - 1)))
    return sorted(set(range(0, iters + 1, every)) | {iters})


def frame_count(iters: int, every: int) -> int:
    """len(frame_iterations(iters, every)), without listing them (a memory check of 10**7 frames is instant)."""
    every = every or max(1, math.ceil(iters / (MAX_FRAMES - 1)))
    return len(range(0, iters + 1, every)) + (iters % every != 0)


# -- option parsers (argparse types) ------------------------------------------------------------------

def number(kind: Callable) -> Callable[[str], float]:
    """An argparse type that parses an int or a finite float; ranges are checked with the config."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        return value
    return parse


def name(text: str) -> str:
    """An argparse type for a name or a path: printable and not blank."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not a name")
    return text


def values(kind: Callable) -> Callable[[str], tuple]:
    """An argparse type for a comma-separated list of `kind` values."""
    def parse(text: str) -> tuple:
        return tuple(kind(part) for part in text.split(","))
    return parse


def seeds(text: str) -> range:
    """An argparse type for a seed range START:STOP (or one seed)."""
    start, colon, stop = text.partition(":")
    try:
        first, end = int(start), int(stop) if colon else int(start) + 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed range START:STOP (e.g. 0:1000)") from None
    if not 0 <= first < end <= defaults.MAX_SEED + 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be START:STOP with 0 <= START < STOP <= 2**32")
    return range(first, end)
