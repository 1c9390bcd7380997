"""Per-task and per-step overhead of the cluster path against in-process, in one run.

    PYTHONPATH=src python bench/cluster_overhead.py [--scheduler local:2] [--repeats 5]

Per task: `map_tasks` over 200 no-op tasks, and over a sweep's tasks (one configuration,
seeds in blocks of 50). Each repeat asks for new tasks, since Dask reuses the results of pure tasks it
still holds. Per step: data-parallel training (`train_shards`) of one network on
200,000 points in 8 shards, 16 steps per repeat. Prints medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import moonxp
from moonxp.engine import cluster, sharded, tasks
from moonxp.engine.sweep import Setting, train_block

NOOP_TASKS = 200
STEPS = 16


def _noop(item: int) -> int:
    return item


def _median_time(fn, repeats: int) -> float:
    """Median seconds of fn(k), k = 0..repeats-1: each repeat asks for new work (Dask would reuse pure results)."""
    times = []
    for k in range(repeats):
        started = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(client, repeats: int) -> dict:
    """Seconds per no-op task, per sweep task and per training step, with `client` (None: in-process)."""
    noop = _median_time(lambda k: tasks.map_tasks(
        client, _noop, list(range(k * NOOP_TASKS, (k + 1) * NOOP_TASKS))), repeats) / NOOP_TASKS
    setting = Setting(0.1, 50, 100, 0.0, 128, "float64")
    def tasks(k: int) -> list:
        return [(setting, start, start + 50) for start in range(400 * k, 400 * (k + 1), 50)]
    train_block(tasks(repeats)[0])  # warm imports here; the workers warm up in the first repeat
    sweep = _median_time(lambda k: tasks.map_tasks(client, train_block, tasks(k)), repeats) / len(tasks(0))
    spec = ("cpu", "numpy", "float64")
    X, T, params = moonxp.make_problem(0, 200_000, 0.1, 50)
    shards = sharded.scatter_shards(X, T, 8, spec, client)
    sharded.train_shards(shards, params, len(T), iters=1, spec=spec, client=client)  # warm-up
    step = _median_time(lambda k: sharded.train_shards(shards, moonxp.make_problem(k, 2, 0.0, 50)[2], len(T),
                                                           iters=STEPS, check_every=STEPS, spec=spec, client=client),
                        repeats) / (STEPS + 1)
    return {"noop_task_s": noop, "sweep_task_s": sweep, "step_s": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default="local:2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    here = measure(None, args.repeats)
    with cluster.connect(args.scheduler) as client:
        client.wait_for_workers(1)
        there = measure(client, args.repeats)
    for name in here:
        print(f"{name:13s} in-process {here[name] * 1e3:9.3f} ms   {args.scheduler} {there[name] * 1e3:9.3f} ms   "
              f"ratio {there[name] / here[name]:7.2f}   difference {(there[name] - here[name]) * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
