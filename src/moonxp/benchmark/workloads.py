"""The benchmark's workloads: the same well-defined work for moonxp and for each peer.

| workload      | size         | one item                         | work per item (model FLOPs)    |
| homework      | N = 100      | a 128-iteration run              | 129 N (15 H)                   |
| grid-eval     | G (G x G)    | a grid point                     | 6 H: 4 H preactivation, 2 H readout |
| train-batched | B networks   | a network-iteration (N = 100)    | N (15 H)                       |
| train-large   | N points     | a sample-gradient (32 iterations)| 15 H: 6 H forward, 9 H backward |

`make_call` returns a zero-argument call that does the work once and returns
arrays to synchronize on; data is drawn on the host and moved beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..data import make_problem
from ..engine.backend import Backend
from ..engine.grid import evaluate_grid
from ..engine.training import train
from ..kernels import Params
from .peers import PEERS

HIDDEN = 50
LR = 0.1
FORWARD_FLOPS = 6 * HIDDEN      # per point: x1 w1 + x2 w2 + b (4 H), readout a . v (2 H)
GRADIENT_FLOPS = 15 * HIDDEN    # per point: forward 6 H, backward 9 H (dz 2 H, dW 4 H, db H, dv 2 H)


@dataclass(frozen=True)
class Workload:
    """A family of benchmark problems, one per size."""

    name: str
    unit: str                                  # what throughput counts, per second
    size_label: str                            # how a size prints
    sizes: dict                                # {"cpu" | "gpu" | "quick" | "smoke": [sizes]}
    iters: int                                 # training iterations per call (0: no training)
    items: Callable[[int], float]              # work items per call, by size
    flops_per_item: float                      # model FLOPs per item
    bytes_per_item: Callable[[int], float]     # least memory traffic per item, by itemsize


# Sizes per mode: full runs on a CPU or a GPU, `--quick` ones, and the smoke test of CI.
WORKLOADS = {w.name: w for w in (
    Workload("homework", "runs/s", "N={}",
             {"cpu": [100], "gpu": [100], "quick": [100], "quick-gpu": [100], "smoke": [100]},
             128, lambda size: 1, 129 * 100 * GRADIENT_FLOPS, lambda itemsize: 0.0),
    Workload("grid-eval", "points/s", "{0}x{0}",
             {"cpu": [512, 2048, 4096], "gpu": [2048, 8192, 16384], "quick": [2048], "quick-gpu": [4096, 16384],
              "smoke": [64]},
             0, lambda size: size * size, FORWARD_FLOPS, lambda itemsize: itemsize),  # outputs written
    Workload("train-batched", "network-iterations/s", "B={}",
             {"cpu": [64, 512, 4096], "gpu": [512, 4096, 65536], "quick": [512], "quick-gpu": [4096, 65536],
              "smoke": [4]},
             128, lambda size: size * 128, 100 * GRADIENT_FLOPS, lambda itemsize: 0.0),
    Workload("train-large", "sample-gradients/s", "N={}",
             {"cpu": [20_000, 200_000, 1_000_000], "gpu": [1_000_000, 10_000_000], "quick": [200_000],
              "quick-gpu": [1_000_000, 10_000_000], "smoke": [1000]},
             32, lambda size: size * 32, GRADIENT_FLOPS, lambda itemsize: 3 * itemsize),  # X and T read
)}


def host_problem(workload: Workload, size: int, seed: int = 0) -> tuple[Params, np.ndarray, np.ndarray]:
    """Host float64 (params, X, T) for one problem: B networks for train-batched, else one."""
    n_samples = size if workload.name == "train-large" else 100
    X, T, params = make_problem(seed, n_samples=n_samples, noise=0.1 if workload.name == "train-large" else 0.0,
                                hidden=HIDDEN)
    if workload.name == "train-batched":
        rng = np.random.RandomState(seed)
        params = Params(rng.normal(0, 1 / 2**0.5, (size, 2, HIDDEN)), rng.normal(0, 1, (size, HIDDEN)),
                        rng.normal(0, 1 / HIDDEN**0.5, (size, HIDDEN)))
    return params, X, T


def make_call(workload: Workload, size: int, backend: Backend, implementation: str = "moonxp",
            compile: bool | None = None) -> Callable[[], Any]:
    """A call doing the work once on `backend`: moonxp, or the peer named `implementation`."""
    host_params, host_X, host_T = host_problem(workload, size)
    params = Params(*(backend.asarray(p) for p in host_params))
    X, T = backend.asarray(host_X), backend.asarray(host_T)
    if workload.name == "grid-eval":
        if implementation == "moonxp":
            return lambda: evaluate_grid(params, size, compile=compile)
        axis = backend.asarray(np.linspace(-4.0, 4.0, size))
        return lambda: PEERS[implementation].grid(*params, axis)
    if implementation == "moonxp":
        return lambda: train(params, X, T, lr=LR, iters=workload.iters, compile=compile)
    return lambda: PEERS[implementation].train(*params, X, T, LR, workload.iters)
