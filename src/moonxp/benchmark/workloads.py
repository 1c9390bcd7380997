"""The benchmark's workloads: the same well-defined work for moonxp and for each peer.

| workload      | size         | one item                         | model FLOPs per item            |
| homework      | N points     | a run (`iters` steps + the final error) | (iters + 1) N 15 H       |
| grid-eval     | G (G x G)    | a grid point                     | 6 H: 4 H preactivation, 2 H readout |
| train-batched | B networks   | a network-iteration on N = 100   | N 15 H                          |
| train-large   | N points     | a sample-gradient                | 15 H: 6 H forward, 9 H backward |

Every count comes from the workload's fields and the case's own size, so
"% of limit" holds at any size. `make_call` returns a zero-argument call that
does the work once and returns arrays to synchronize on; data is drawn on the
host and moved beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..data import initial_scales, make_problem
from ..defaults import DTYPES, GRID_HI, GRID_LO, HIDDEN, ITERS, LR, SAMPLES, SEED
from ..engine.backend import Backend
from ..engine.grid import evaluate_grid
from ..engine.training import train
from ..kernels import Params
from .peers import PEERS

FORWARD_FLOPS = 6    # per point and hidden unit: x1 w1 + x2 w2 + b (4), readout a v (2)
GRADIENT_FLOPS = 15  # per point and hidden unit: forward 6, backward 9 (dz 2, dW 4, db 1, dv 2)


@dataclass(frozen=True)
class Workload:
    """A family of benchmark problems, one per size.

    `size_means` says what a size counts: "points" (N of one network), "networks"
    (B networks on `SAMPLES` points each) or "grid" (G points per side). `item` is
    what throughput counts; `streamed_values` how many values per item must at least
    cross memory (0 when the data stays in cache).
    """

    name: str
    unit: str                  # what throughput counts, per second
    size_label: str            # how a size prints
    sizes: dict                # {"cpu" | "cuda": {"smoke" | "quick" | "full": (sizes...)}}
    size_means: str            # "points", "networks" or "grid"
    item: str                  # "run", "network-iteration", "sample-gradient" or "grid-point"
    iters: int = 0             # training iterations per call (0: a grid evaluation)
    noise: float = 0.0         # moons noise of the problem
    streamed_values: int = 0   # values per item read or written from memory at least
    hidden: int = HIDDEN
    dtypes: tuple = ()         # the only dtypes it runs in (empty: those of the mode)

    def points(self, size: int) -> int:
        """Training points N of each network."""
        return size if self.size_means == "points" else SAMPLES

    def networks(self, size: int) -> int | None:
        """Networks B trained at once (None: one network, no batch axis)."""
        return size if self.size_means == "networks" else None

    def items(self, size: int) -> float:
        """Work items one call does."""
        if self.item == "run":
            return 1
        if self.item == "grid-point":
            return size * size
        return (self.networks(size) or 1) * (self.points(size) if self.item == "sample-gradient" else 1) * self.iters

    def flops_per_item(self, size: int) -> float:
        """Model FLOPs per item at this size."""
        per_point = (FORWARD_FLOPS if self.item == "grid-point" else GRADIENT_FLOPS) * self.hidden
        return {"run": (self.iters + 1) * self.points(size), "network-iteration": self.points(size)}.get(
            self.item, 1) * per_point

    def bytes_per_item(self, itemsize: int) -> float:
        """Least memory traffic per item, for values of `itemsize` bytes."""
        return self.streamed_values * itemsize


def _sizes(cpu: dict, cuda: dict) -> dict:
    return {"cpu": cpu, "cuda": cuda}


# Sizes per device kind and mode: the CI smoke test, `--quick` runs and full runs.
WORKLOADS = {w.name: w for w in (
    Workload("homework", "runs/s", "N={}",
             _sizes({"smoke": (SAMPLES,), "quick": (SAMPLES,), "full": (SAMPLES,)},
                    {"smoke": (SAMPLES,), "quick": (SAMPLES,), "full": (SAMPLES,)}),
             "points", "run", iters=ITERS, dtypes=DTYPES[:1]),  # the homework's own float64
    Workload("grid-eval", "points/s", "{0}x{0}",
             _sizes({"smoke": (64,), "quick": (2048,), "full": (512, 2048, 4096, 8192)},
                    {"smoke": (64,), "quick": (2048, 16384), "full": (2048, 8192, 16384)}),
             "grid", "grid-point", streamed_values=1),  # the outputs are written
    Workload("train-batched", "network-iterations/s", "B={}",
             _sizes({"smoke": (4,), "quick": (64, 512), "full": (64, 512, 4096)},
                    {"smoke": (4,), "quick": (4096,), "full": (512, 4096, 65536)}),
             "networks", "network-iteration", iters=ITERS),
    Workload("train-large", "sample-gradients/s", "N={}",
             _sizes({"smoke": (1000,), "quick": (20_000, 200_000), "full": (20_000, 200_000, 1_000_000)},
                    {"smoke": (1000,), "quick": (1_000_000, 10_000_000), "full": (1_000_000, 10_000_000)}),
             "points", "sample-gradient", iters=32, noise=0.1, streamed_values=3),  # X and T read
)}


def host_problem(workload: Workload, size: int, seed: int = SEED) -> tuple[Params, np.ndarray, np.ndarray]:
    """Host float64 (params, X, T) for one problem of `workload` at `size`.

    Parameters
    ----------
    workload, size : the problem family and its size.
    seed : the seed of the moons and the parameters.

    Returns
    -------
    (params, X, T) : one network's parameters, or B networks' for a batched workload; X (N, 2), T (N,).
    """
    X, T, params = make_problem(seed, n_samples=workload.points(size), noise=workload.noise, hidden=workload.hidden)
    networks = workload.networks(size)
    if networks is not None:
        rng, H = np.random.RandomState(seed), workload.hidden
        w, b, v = initial_scales(H)
        params = Params(rng.normal(0, w, (networks, 2, H)), rng.normal(0, b, (networks, H)),
                        rng.normal(0, v, (networks, H)))
    return params, X, T


def make_call(workload: Workload, size: int, backend: Backend, implementation: str = "moonxp",
              compile: bool | None = None) -> Callable[[], Any]:
    """A call doing the work once on `backend`: moonxp, or the peer named `implementation`.

    Parameters
    ----------
    workload, size : the problem.
    backend : where and in which dtype it runs.
    implementation : "moonxp" or a key of `peers.PEERS`.
    compile : moonxp's compile flag (None: the backend's default).

    Returns
    -------
    call : zero-argument function; it returns the grid outputs, or the trained (W, b, v)
        (moonxp's call returns (params, errors)).
    """
    host_params, host_X, host_T = host_problem(workload, size)
    params = Params(*(backend.asarray(p) for p in host_params))
    X, T = backend.asarray(host_X), backend.asarray(host_T)
    if workload.item == "grid-point":
        if implementation == "moonxp":
            return lambda: evaluate_grid(params, size, compile=compile)
        axis = backend.asarray(np.linspace(GRID_LO, GRID_HI, size))
        return lambda: PEERS[implementation].grid(*params, axis)
    if implementation == "moonxp":
        return lambda: train(params, X, T, lr=LR, iters=workload.iters, compile=compile)
    return lambda: PEERS[implementation].train(*params, X, T, LR, workload.iters)


def output_arrays(workload: Workload, result: Any) -> tuple:
    """The arrays a call's `result` computed, in one shape for moonxp and peers: (Yg,) or (W, b, v)."""
    if workload.item == "grid-point":
        return (result,)
    if len(result) == 2:  # moonxp: (params, errors)
        result = result[0]
    return tuple(result)
