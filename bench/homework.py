"""The homework as a plain script: NumPy and scikit-learn's make_moons, 128 steps, its lines and its eight panels.

What `python -m moonxp` replaces, written as a student would: the baseline of
`bench/time_to_result.py`. ``--plot DIR`` also draws the eight decision-boundary
panels (iterations 0, 1, 3, ..., 127) with pyplot and saves them to DIR/boundaries.png.

    python bench/homework.py [--plot DIR]
"""

import sys

import numpy as np
from sklearn.datasets import make_moons

np.random.seed(0)
X, labels = make_moons(n_samples=100)
X, T = X * 2 - 1, labels * 2.0 - 1
H, lr = 50, 0.1
W = np.random.normal(0, 1 / 2.0**0.5, [2, H])
b = np.random.normal(0, 1, [H])
v = np.random.normal(0, 1 / H**0.5, [H])

snapshots = []
for it in range(128):
    z = X @ W + b
    a = np.maximum(z, 0)
    y = a @ v
    E = np.mean(np.maximum(0, -y * T))
    if it & (it + 1) == 0:  # 0, 1, 3, 7, ...
        print("It: %d, Error: %.3f" % (it, E))
        snapshots.append((it, E, W.copy(), b.copy(), v.copy()))
    dy = np.where(-y * T > 0, -T, 0.0) / len(T)
    dz = np.outer(dy, v) * (z > 0)
    W, b, v = W - lr * X.T @ dz, b - lr * dz.sum(axis=0), v - lr * a.T @ dy

if len(sys.argv) == 3 and sys.argv[1] == "--plot":
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axis = np.linspace(-4, 4, 100)
    gx, gy = np.meshgrid(axis, axis)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = plt.subplots(2, 4, figsize=(12, 6))
    for ax, (it, E, W, b, v) in zip(axes.ravel(), snapshots):
        out = (np.maximum(grid @ W + b, 0) @ v).reshape(100, 100)
        ax.contourf(gx, gy, out > 0, levels=[-0.5, 0.5, 1.5], colors=["#0088FF", "#FF8800"], alpha=0.3)
        ax.contour(gx, gy, out, levels=[0], colors="k", linestyles="--")
        ax.scatter(*X[T < 0].T, c="#0088FF", s=8)
        ax.scatter(*X[T > 0].T, c="#FF8800", s=8)
        ax.set_title("It: %d, Error: %.3f" % (it, E))
    fig.tight_layout()
    fig.savefig(f"{sys.argv[2]}/boundaries.png")
