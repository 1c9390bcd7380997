"""MoonxpClassifier behind a StandardScaler, in scikit-learn's DecisionBoundaryDisplay, on noisy moons.

Writes docs/estimator.png.

    python examples/decision_boundary.py [OUT.png]
"""

from __future__ import annotations

import sys

from matplotlib.figure import Figure
from sklearn.datasets import make_moons
from sklearn.inspection import DecisionBoundaryDisplay
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from moonxp.estimator import MoonxpClassifier


def main(out: str = "docs/estimator.png") -> None:
    X, y = make_moons(n_samples=200, noise=0.2, random_state=0)
    clf = make_pipeline(StandardScaler(), MoonxpClassifier(random_state=0)).fit(X, y)
    fig = Figure(figsize=(4.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    DecisionBoundaryDisplay.from_estimator(clf, X, response_method="predict", cmap="coolwarm", alpha=0.35, ax=ax)
    DecisionBoundaryDisplay.from_estimator(clf, X, response_method="decision_function", plot_method="contour",
                                           levels=[0], colors="black", linestyles="dashed", ax=ax)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="coolwarm", s=14, edgecolors="black", linewidths=0.3)
    ax.set_title(f"StandardScaler + MoonxpClassifier: training accuracy {clf.score(X, y):.3f}", fontsize=9)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
