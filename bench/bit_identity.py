"""Before/after check for speed work: NumPy results dumped by one checkout, compared bit for bit by another.

    git stash; PYTHONPATH=src python bench/bit_identity.py save /tmp/before.npz; git stash pop
    PYTHONPATH=src python bench/bit_identity.py check /tmp/before.npz

Dumps, in float64 and float32 on NumPy, for the homework, batches of 4, 64 and 512
networks and one network on 20 000 and 200 000 points: trained parameters and errors
(whole and in tiny tiles), gradients, outputs, error and accuracy; and grids of 64 to
2048 points per side (one network and a batch; whole and tiled). `check` exits 1
unless every float64 array is bit-identical and every float32 one within 1e-5 of the
largest value, naming each that is not. Run it twice: as it is, the NumPy tile workers
are processes (`moonxp.engine.processes`); with MOONXP_WORKER_PROCESSES=0, threads.
"""

from __future__ import annotations

import sys

import numpy as np

from moonxp import Params, backprop, evaluate, evaluate_grid, forward, resolve, train
from moonxp.benchmark.workloads import WORKLOADS, host_problem
from moonxp.engine import processes
from moonxp.engine.policy import limit_tiles
from moonxp.environment import cores

TRAINING = [("homework", 100, 128), ("train-batched", 4, 16), ("train-batched", 64, 128),
            ("train-batched", 512, 16), ("train-large", 20_000, 32), ("train-large", 200_000, 8)]
GRIDS = [("homework", 100), ("train-batched", 4)]
FLOAT32_TOLERANCE = 1e-5


def results(dtype: str) -> dict[str, np.ndarray]:
    """Every dumped array in `dtype`, by name."""
    backend, out = resolve("cpu", "numpy", dtype), {}

    def keep(prefix: str, arrays) -> None:
        out.update({f"{dtype}/{prefix}/{k}": np.asarray(a) for k, a in enumerate(arrays)})

    for workload, size, iters in TRAINING:
        host_params, X, T = host_problem(WORKLOADS[workload], size)
        params, X, T = Params(*map(backend.asarray, host_params)), backend.asarray(X), backend.asarray(T)
        name = f"{workload}-{size}"
        trained, errors = train(params, X, T, iters=iters)
        keep(f"{name}/train", (*trained, errors))
        keep(f"{name}/backprop", backprop(params, X, T))
        keep(f"{name}/forward", [forward(params, X)])
        keep(f"{name}/evaluate", evaluate(params, X, T))
        with limit_tiles(5000):
            trained, errors = train(params, X, T, iters=4)
            keep(f"{name}/train-tiled", (*trained, errors))
    for workload, size in GRIDS:
        params = Params(*map(backend.asarray, host_problem(WORKLOADS[workload], size)[0]))
        keep(f"grid-{workload}", [evaluate_grid(params, G) for G in (64, 512, 1000, 2048)])
        with limit_tiles(3000):
            keep(f"grid-{workload}-tiled", [evaluate_grid(params, 333)])
    return out


def differences(saved: dict, now: dict) -> list[str]:
    """Names of the arrays that differ: float64 in any bit, float32 beyond the tolerance."""
    bad = [name for name in saved if name not in now] + [name for name in now if name not in saved]
    for name in saved.keys() & now.keys():
        a, b = saved[name], now[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            bad.append(f"{name}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}")
        elif a.dtype == np.float64 and not np.array_equal(a, b):
            bad.append(f"{name}: largest difference {np.abs(a - b).max():.3g}")
        elif a.dtype == np.float32 and np.abs(a - b).max() > FLOAT32_TOLERANCE * max(1.0, np.abs(a).max()):
            bad.append(f"{name}: largest difference {np.abs(a - b).max():.3g}")
    return sorted(bad)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "check"):
        print("usage: bit_identity.py save|check FILE.npz", file=sys.stderr)
        return 2
    processes.start(cores() - 1)  # the worker processes up before the first result (MOONXP_WORKER_PROCESSES=0:
                                  # threads throughout), so that one run checks one way of running
    now = {**results("float64"), **results("float32")}
    if argv[0] == "save":
        np.savez(argv[1], **now)
        print(f"saved {len(now)} arrays to {argv[1]}")
        return 0
    with np.load(argv[1]) as saved:
        bad = differences(dict(saved), now)
    for line in bad:
        print("differs:", line)
    print(f"{len(now) - len(bad)} of {len(now)} arrays as before")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
