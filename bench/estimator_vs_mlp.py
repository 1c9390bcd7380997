"""MoonxpClassifier against scikit-learn's MLPClassifier on scikit-learn's own data sets, side by side in one run.

    PYTHONPATH=src python bench/estimator_vs_mlp.py [--quick]

The protocol of docs/estimator.md: a StandardScaler in front (except on the unscaled moons), stratified
shuffled folds (random_state=1), the mean test accuracy over estimator random_state 0, 1, 2, and the
summed fit time of all folds and seeds. For each seed the models are fitted one after the other on the
same folds, so machine load hits both alike; the speed-up is the ratio of the summed fit times.
Prints a Markdown table (the one in docs/estimator.md) with the date, the load and the versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, make_circles, make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from moonxp.estimator import MoonxpClassifier

DATA = {  # name: (X, y, folds, scaled)
    "make_moons(500, noise=0.2)": (*make_moons(500, noise=0.2, random_state=0), 5, True),
    "make_circles(500, noise=0.1, factor=0.5)": (*make_circles(500, noise=0.1, factor=0.5, random_state=0), 5, True),
    "breast cancer (569 x 30)": (*load_breast_cancer(return_X_y=True), 5, True),
    "make_moons(200, noise=0.1), unscaled": (*make_moons(200, noise=0.1, random_state=0), 3, False),
}
MODELS = {
    "MLPClassifier(max_iter=1000)": lambda seed: MLPClassifier(max_iter=1000, random_state=seed),
    "MoonxpClassifier()": lambda seed: MoonxpClassifier(random_state=seed),
    "homework's defaults": lambda seed: MoonxpClassifier(loss="perceptron", lr=0.1, max_iter=128,
                                                         n_iter_no_change=128, random_state=seed),
}
SEEDS = (0, 1, 2)


def measure(X: np.ndarray, y: np.ndarray, folds: int, scaled: bool, seeds: tuple) -> dict:
    """{model: (mean accuracy, summed fit seconds)}, the models alternating seed by seed on the same folds."""
    cv = StratifiedKFold(folds, shuffle=True, random_state=1)
    scores = {name: [] for name in MODELS}
    times = {name: 0.0 for name in MODELS}
    for seed in seeds:
        for name, make in MODELS.items():
            model = make_pipeline(StandardScaler(), make(seed)) if scaled else make(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                result = cross_validate(model, X, y, cv=cv)
            scores[name].append(result["test_score"].mean())
            times[name] += result["fit_time"].sum()
    return {name: (float(np.mean(scores[name])), times[name]) for name in MODELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed instead of three")
    args = parser.parse_args()
    seeds = SEEDS[:1] if args.quick else SEEDS
    load = os.getloadavg()[0]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load:.1f} at the start; scikit-learn {sklearn.__version__}, "
          f"NumPy {np.__version__}; seeds {seeds}")
    names = list(MODELS)
    print(f"| data | {' | '.join(names)} | MoonxpClassifier() vs MLP: accuracy, speed |")
    print("|---|" + "---|" * (len(names) + 1))
    for data, (X, y, folds, scaled) in DATA.items():
        results = measure(X, y, folds, scaled, seeds)
        cells = [f"{accuracy:.3f} ({seconds:.2f} s)" for accuracy, seconds in results.values()]
        (mlp, mlp_s), (ours, ours_s) = results[names[0]], results[names[1]]
        print(f"| {data}, {folds} folds | {' | '.join(cells)} | {100 * (ours - mlp):+.1f} points, "
              f"{mlp_s / ours_s:.1f}x |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
