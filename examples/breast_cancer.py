"""MoonxpClassifier on scikit-learn's breast cancer data (569 samples, 30 features), beside MLPClassifier and
Perceptron, on the same 5 stratified folds, each behind a StandardScaler.

    python examples/breast_cancer.py

prints one line per model: mean and standard deviation of the test accuracy over the folds.
"""

from __future__ import annotations

import warnings

from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Perceptron
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from moonxp.estimator import MoonxpClassifier

MODELS = {
    "MoonxpClassifier()": MoonxpClassifier(random_state=0),
    "MoonxpClassifier(homework: perceptron loss)": MoonxpClassifier(loss="perceptron", lr=0.1, max_iter=128,
                                                                    random_state=0),
    "MLPClassifier(hidden_layer_sizes=(50,))": MLPClassifier(hidden_layer_sizes=(50,), max_iter=500, random_state=0),
    "Perceptron()": Perceptron(random_state=0),
}


def main() -> None:
    X, y = load_breast_cancer(return_X_y=True)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)  # the same folds for every model
    print(f"breast cancer: {X.shape[0]} samples, {X.shape[1]} features; 5-fold accuracy (StandardScaler first)")
    print(f"{'model':<48} {'mean':>6} {'std':>6}")
    for name, model in MODELS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            scores = cross_val_score(make_pipeline(StandardScaler(), model), X, y, cv=folds)
        print(f"{name:<48} {scores.mean():6.3f} {scores.std():6.3f}")


if __name__ == "__main__":
    main()
