"""The effect of moonxp's malloc tuning (`policy.keep_freed_memory`) on tiled training, in fresh processes.

Each round trains 512 networks (float32, N = 100, 128 iterations, tiled) once in a
process that calls `keep_freed_memory()` first and once in one that does not,
in alternating order; medians of the training time over the rounds. Run from
the repository root:

    PYTHONPATH=src python bench/malloc_tuning.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
import moonxp
from moonxp.engine import policy
if sys.argv[1] == "tuned":
    policy.keep_freed_memory()
backend = moonxp.resolve("cpu", "numpy", "float32")
X, T, batch = moonxp.make_ensemble(seed=0, networks=512)
params = moonxp.Params(*(backend.asarray(p) for p in batch))
X, T = backend.asarray(X), backend.asarray(T)
moonxp.train(params, X, T, iters=2)  # warm-up
start = time.perf_counter()
moonxp.train(params, X, T, iters=128)
print(json.dumps(time.perf_counter() - start))
"""


def trained_in(kind: str) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, kind], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"tuned": [], "default": []}
    for k in range(rounds):
        for kind in (("tuned", "default") if k % 2 == 0 else ("default", "tuned")):
            times[kind].append(trained_in(kind))
    median = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"{rounds} rounds; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    for kind, values in times.items():
        print(f"  {kind:8} median {median[kind] * 1e3:.0f} ms  (min {min(values) * 1e3:.0f}, max {max(values) * 1e3:.0f})")
    print(f"tuned: {median['default'] / median['tuned']:.2f}x faster")


if __name__ == "__main__":
    main()
