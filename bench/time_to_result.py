"""Time to result as a user feels it: `python -m moonxp` against the plain homework script, wall clock.

Each round runs every command once, in a fresh process, in alternating order,
so the pairs see the same machine load; medians over the rounds and the ratios
of the medians are printed. Run from the repository root:

    PYTHONPATH=src python bench/time_to_result.py [--rounds 7]

Goals (issue 16): `python -m moonxp --no-plot` >= 3x faster than `bench/homework.py`;
`python -m moonxp` (its figures included) >= 1.5x faster than `bench/homework.py --plot`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def commands(out: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "moonxp --no-plot": [python, "-m", "moonxp", "--no-plot", "--out", str(out / "moonxp-text")],
        "homework script": [python, str(HERE / "homework.py")],
        "moonxp (figures)": [python, "-m", "moonxp", "--out", str(out / "moonxp-figures")],
        "homework script --plot": [python, str(HERE / "homework.py"), "--plot", str(out)],
    }


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "MPLBACKEND": "Agg"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        todo = commands(Path(out))
        for command in todo.values():  # warm the file cache (and matplotlib's font cache) once
            wall(command)
        times: dict[str, list[float]] = {name: [] for name in todo}
        for k in range(rounds):
            for name in (list(todo) if k % 2 == 0 else reversed(list(todo))):
                times[name].append(wall(todo[name]))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{rounds} rounds; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    for name, values in times.items():
        print(f"  {name:24} median {median[name]:.3f} s  (min {min(values):.3f}, max {max(values):.3f})")
    print(f"--no-plot: {median['homework script'] / median['moonxp --no-plot']:.2f}x faster than the script "
          f"(goal >= 3x)")
    print(f"figures:   {median['homework script --plot'] / median['moonxp (figures)']:.2f}x faster than the script "
          f"drawing its panels (goal >= 1.5x)")


if __name__ == "__main__":
    main()
