"""The CPU goals of issue 19, timed in pairs: moonxp and its peer alternate, each in a fresh process.

    PYTHONPATH=src python bench/cpu_goals.py [--rounds 7] [--repeat 3] [ROW ...]

`moonxp bench` times each implementation's cases in turn, minutes apart; on a shared
machine the load moves in between. Here each round times moonxp once and the peer
once, back to back (a warm-up, then `--repeat` calls and 0.5 s at least: their median), so both
see the same minutes; medians over the rounds, the ratio of the medians, and the
load average before and after are printed as a Markdown table. Each side runs in a
process of its own: in one process, the call after the JAX peer ran up to 1.7x
slower (XLA's threads keep the cores for a while after its work; measured for B = 64:
44-52 ms alone against 75-80 ms right after the peer, still 77 ms 2 s later).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from moonxp import resolve, synchronize
from moonxp.benchmark.workloads import WORKLOADS, make_call
from moonxp.benchmark.worker import ENVIRONMENT, fair_precision
from moonxp.engine.policy import keep_freed_memory
from moonxp.engine import processes
from moonxp.environment import cores

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


MIN_SECONDS = 0.5  # each process times its call at least `--repeat` times and for at least this long


def timed(call):
    """Seconds of one call, its results synchronized."""
    start = time.perf_counter()
    synchronize(call())
    return time.perf_counter() - start


def time_one(name: str, side: str, repeat: int) -> float:
    """In this process: the median seconds of the row's moonxp or peer call (`repeat` calls and `MIN_SECONDS` at
    least, after a warm-up)."""
    os.environ.update(ENVIRONMENT)
    keep_freed_memory()  # as `moonxp bench` times moonxp (and the peers in its process)
    workload, size, backend, dtype, peer, _ = ROWS[name]
    if backend == "jax" or peer == "jax-jit":
        fair_precision("jax")
    workload = WORKLOADS[workload]
    if side == "moonxp":
        call = make_call(workload, size, resolve("cpu", backend, dtype))
    else:
        call = make_call(workload, size, resolve("cpu", "jax" if peer == "jax-jit" else "numpy", dtype), peer)
    if side == "moonxp" and backend == "numpy":
        processes.start(cores() - 1)  # as `moonxp bench` times NumPy
    timed(call)  # warm-up: compilation, caches, first-touch pages
    times, start = [], time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < MIN_SECONDS:
        times.append(timed(call))
    return statistics.median(times)


def in_fresh_process(name: str, side: str, repeat: int) -> float:
    """`time_one` in a new Python process."""
    done = subprocess.run([sys.executable, __file__, "--time-one", name, side, "--repeat", str(repeat)],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", choices=[[], *ROWS], default=[], help="rows to time (default: all)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="calls per process at least, after its warm-up (their median)")
    parser.add_argument("--time-one", nargs=2, metavar=("ROW", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_one:
        print(time_one(*args.time_one, args.repeat))
        return
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    print("| row | goal | moonxp | peer | peer / moonxp | moonxp throughput |")
    print("|---|---|---|---|---|---|")
    for name in args.rows or ROWS:
        workload, size, _, _, peer, goal = ROWS[name]
        workload = WORKLOADS[workload]
        sides = ["moonxp", "peer"] if peer else ["moonxp"]
        rounds = [[in_fresh_process(name, side, args.repeat) for side in sides] for _ in range(args.rounds)]
        m = statistics.median(r[0] for r in rounds)
        p = statistics.median(r[-1] for r in rounds)
        versus = f"{p * 1e3:.1f} ms ({peer}) | {p / m:.2f}x" if peer else "- | -"
        rate = workload.items(size) / m
        print(f"| {name} | {goal} | {m * 1e3:.1f} ms | {versus} | "
              f"{f'{rate / 1e6:.1f} M' if rate >= 1e6 else f'{rate:.0f}'} {workload.unit} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
