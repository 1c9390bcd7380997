"""The CPU goals of issue 19, timed in pairs: moonxp and its peer alternate in one process.

    PYTHONPATH=src python bench/cpu_goals.py [--rounds 7] [ROW ...]

`moonxp bench` times each implementation's cases in turn, minutes apart; on a shared
machine the load moves in between. Here each round times moonxp once and the peer
once, back to back, so both see the same load; medians over the rounds, the ratio
of the medians, and the load average before and after are printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from moonxp import resolve, synchronize
from moonxp.benchmark.workloads import WORKLOADS, make_call
from moonxp.benchmark.worker import ENVIRONMENT, fair_precision
from moonxp.engine.policy import keep_freed_memory

# row: (workload, size, moonxp's backend, dtype, peer (None: moonxp alone), goal as text)
ROWS = {
    "homework": ("homework", 100, "numpy", "float64", "numpy-homework", ">= 1.2x plain NumPy"),
    "batched-64": ("train-batched", 64, "numpy", "float32", "jax-jit", ">= 1.2x JAX jit"),
    "large-20k": ("train-large", 20_000, "numpy", "float32", "jax-jit", ">= 1.2x JAX jit"),
    "batched-512": ("train-batched", 512, "numpy", "float32", "jax-jit", ">= 2.5x JAX jit"),
    "large-200k": ("train-large", 200_000, "numpy", "float32", "jax-jit", ">= 2x JAX jit"),
    "grid-2048": ("grid-eval", 2048, "numpy", "float32", "jax-jit", ">= 150 M points/s"),
    "grid-8192": ("grid-eval", 8192, "numpy", "float32", None, ">= 100 M points/s"),
    "jax-200k": ("train-large", 200_000, "jax", "float32", "jax-jit", ">= 1.5x JAX jit"),
}


def timed(call):
    """Seconds of one call, its results synchronized."""
    start = time.perf_counter()
    synchronize(call())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", choices=[[], *ROWS], default=[], help="rows to time (default: all)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ.update(ENVIRONMENT)
    keep_freed_memory()  # as `moonxp bench` times moonxp (and the peers in its process)
    fair_precision("jax")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| row | goal | moonxp | peer | peer / moonxp | moonxp throughput |")
    print("|---|---|---|---|---|---|")
    for name in args.rows or ROWS:
        workload, size, backend, dtype, peer, goal = ROWS[name]
        workload = WORKLOADS[workload]
        mine = make_call(workload, size, resolve("cpu", backend, dtype))
        theirs = peer and make_call(workload, size, resolve("cpu", "jax" if peer == "jax-jit" else "numpy", dtype),
                                    peer)
        calls = [mine, theirs] if theirs else [mine]
        for call in calls:  # warm-up: compilation, caches, first-touch pages
            timed(call)
        rounds = [[timed(call) for call in calls] for _ in range(args.rounds)]
        m = statistics.median(r[0] for r in rounds)
        p = statistics.median(r[-1] for r in rounds)
        versus = f"{p * 1e3:.1f} ms ({peer}) | {p / m:.2f}x" if theirs else "- | -"
        rate = workload.items(size) / m
        print(f"| {name} | {goal} | {m * 1e3:.1f} ms | {versus} | "
              f"{f'{rate / 1e6:.1f} M' if rate >= 1e6 else f'{rate:.0f}'} {workload.unit} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
