"""How far this machine's cores carry moonxp's NumPy work: one worker, threads, moonxp's worker processes, the limit.

    PYTHONPATH=src python bench/scaling.py [--rounds 7] [ROW ...]

For each row of `bench/cpu_goals.py` that moonxp runs on NumPy, times the same call
(medians over the rounds, wall clock):

- one worker thread (the process pinned to one core, so the policy's workers are 1, and one BLAS thread);
- one worker thread per core (``MOONXP_WORKER_PROCESSES=0``);
- moonxp's default: training's parallel work in worker processes (`moonxp.engine.processes`, started
  before the clock runs, as `moonxp bench` does); grids stay on threads;
- the work cut in one share per core (networks, points or grid rows), each share run
  by its own process with one worker and one BLAS thread, all started together: no interpreter lock and
  no memory shared between them, so the slowest share's time is what these cores
  give this kernel form at best (`limit`).

"default / limit" near 1 means moonxp already gets what the cores give;
the goal's best reachable ratio is then the peer's time (from `cpu_goals.py`) over
`limit`. The load average before and after is printed: trust a quiet run only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time

import numpy as np

from moonxp import Params, evaluate_grid, resolve, synchronize
from moonxp.benchmark.workloads import WORKLOADS, host_problem
from moonxp.engine import policy as policies, processes
from moonxp.engine.training import train
from moonxp.environment import cores

# row: (workload, size, dtype), the NumPy rows of bench/cpu_goals.py
ROWS = {
    "homework": ("homework", 100, "float64"),
    "batched-64": ("train-batched", 64, "float32"),
    "large-20k": ("train-large", 20_000, "float32"),
    "batched-512": ("train-batched", 512, "float32"),
    "large-200k": ("train-large", 200_000, "float32"),
    "grid-2048": ("grid-eval", 2048, "float32"),
    "grid-8192": ("grid-eval", 8192, "float32"),
}


def share_call(row: str, share: int, shares: int):
    """A call doing share `share` of `shares` of the row's work (all of it for shares = 1)."""
    workload_name, size, dtype = ROWS[row]
    workload = WORKLOADS[workload_name]
    backend = resolve("cpu", "numpy", dtype)
    host_params, X, T = host_problem(workload, size)
    params = Params(*(backend.asarray(p) for p in host_params))
    if workload.item == "grid-point":
        rows = (size * share // shares, size * (share + 1) // shares)
        return lambda: evaluate_grid(params, size, rows=rows)
    cut = slice(size * share // shares, size * (share + 1) // shares)
    if workload.networks(size) is not None:
        params = Params(*(p[cut] for p in params))
    else:
        X, T = X[cut], T[cut]
    X, T = backend.asarray(X), backend.asarray(T)
    return lambda: train(params, X, T, iters=workload.iters)


def timed(call) -> float:
    start = time.perf_counter()
    synchronize(call())
    return time.perf_counter() - start


def _share_process(row: str, share: int, shares: int, rounds: int, barrier, results) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[share]})  # one core: the policy's workers = 1
    policies.keep_freed_memory()
    call = share_call(row, share, shares)
    with policies.one_blas_thread():  # one core: BLAS threads would only spin on it
        timed(call)
        times = []
        for _ in range(rounds):
            barrier.wait()
            times.append(timed(call))
    results.put((share, times))


def processes_time(row: str, shares: int, rounds: int) -> list[float]:
    """Per round, the slowest share's seconds, the shares run at once in `shares` processes."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(shares), context.Queue()
    workers = [context.Process(target=_share_process, args=(row, k, shares, rounds, barrier, results))
               for k in range(shares)]
    for w in workers:
        w.start()
    times = dict(results.get() for _ in workers)
    for w in workers:
        w.join()
    return [max(times[k][r] for k in times) for r in range(rounds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="*", choices=[[], *ROWS], default=[], help="rows to time (default: all)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    policies.keep_freed_memory()
    n = cores()
    print(f"load average before: {os.getloadavg()[0]:.1f}; {n} cores")
    print(f"| row | one worker | {n} threads | default | {n} processes (limit) | default / limit | limit / one worker |")
    print("|---|---|---|---|---|---|---|")
    for row in args.rows or ROWS:
        whole = share_call(row, 0, 1)
        asked = os.environ.get("MOONXP_WORKER_PROCESSES", "1")
        os.environ["MOONXP_WORKER_PROCESSES"] = "0"
        timed(whole)
        threads = statistics.median(timed(whole) for _ in range(args.rounds))
        os.environ["MOONXP_WORKER_PROCESSES"] = asked
        processes.start(n - 1)  # as `moonxp bench` times NumPy
        timed(whole)
        default = statistics.median(timed(whole) for _ in range(args.rounds))
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(allowed)})  # one core: the policy's workers = 1
        with policies.one_blas_thread():
            timed(whole)
            single = statistics.median(timed(whole) for _ in range(args.rounds))
        os.sched_setaffinity(0, allowed)
        limit = statistics.median(processes_time(row, n, args.rounds))
        print(f"| {row} | {single * 1e3:.1f} ms | {threads * 1e3:.1f} ms | {default * 1e3:.1f} ms | "
              f"{limit * 1e3:.1f} ms | {default / limit:.2f} | {single / limit:.2f}x |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
