"""Figures from host arrays: matplotlib `Figure` objects (Agg), no pyplot state.

The homework's look: class -1 in #0088FF, class +1 in #FF8800, the decision
regions filled in the same colours, the zero contour dashed black.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

NEGATIVE, POSITIVE = "#0088FF", "#FF8800"
PANEL_INCHES = 3.0


def _panel(ax, axis: np.ndarray, Yg: np.ndarray, X: np.ndarray, T: np.ndarray, title: str) -> None:
    reach = max(float(np.max(np.abs(Yg))), 1.0) * 1.01
    ax.contourf(axis, axis, Yg, levels=[-reach, 0.0, reach], colors=[NEGATIVE, POSITIVE], alpha=0.35)
    if Yg.min() < 0 < Yg.max():  # a zero contour exists
        ax.contour(axis, axis, Yg, levels=[0.0], colors="black", linestyles="dashed")
    ax.scatter(*X[T == -1].T, color=NEGATIVE, s=12, edgecolors="black", linewidths=0.3)
    ax.scatter(*X[T == 1].T, color=POSITIVE, s=12, edgecolors="black", linewidths=0.3)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(axis[0], axis[-1])
    ax.set_ylim(axis[0], axis[-1])
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def boundaries(axis: np.ndarray, grids: Sequence[np.ndarray], titles: Sequence[str],
               X: np.ndarray, T: np.ndarray, columns: int = 4) -> Figure:
    """One panel per snapshot: grid outputs Yg (G, G) over `axis` (G,), the data X (N, 2), T (N,)."""
    columns = min(columns, len(grids))
    rows = math.ceil(len(grids) / columns)
    fig = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), layout="constrained")
    for k, (Yg, title) in enumerate(zip(grids, titles)):
        _panel(fig.add_subplot(rows, columns, k + 1), axis, Yg, X, T, title)
    return fig


def curve(errors: np.ndarray, spread: np.ndarray | None = None) -> Figure:
    """Training error per iteration; `spread` (2, iters + 1) shades an ensemble's range."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(len(errors))
    if spread is not None:
        ax.fill_between(steps, spread[0], spread[1], color=NEGATIVE, alpha=0.25, label="ensemble 5-95%")
    ax.plot(steps, errors, color="black", label="network 0" if spread is not None else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training error E")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if spread is not None:
        ax.legend()
    return fig


def ensemble(axis: np.ndarray, grids: Sequence[np.ndarray], titles: Sequence[str], X: np.ndarray,
             T: np.ndarray, final_errors: np.ndarray, accuracies: np.ndarray) -> Figure:
    """Final boundaries of a few networks, and histograms of all networks' final error and accuracy."""
    columns = len(grids) + 2
    fig = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES), layout="constrained")
    for k, (Yg, title) in enumerate(zip(grids, titles)):
        _panel(fig.add_subplot(1, columns, k + 1), axis, Yg, X, T, title)
    for k, (values, label) in enumerate(((final_errors, "final error"), (accuracies, "accuracy"))):
        ax = fig.add_subplot(1, columns, len(grids) + k + 1)
        ax.hist(values, bins=min(30, max(5, len(values) // 4)), color=POSITIVE if k else NEGATIVE)
        ax.set_xlabel(label)
        ax.set_ylabel("networks")
        ax.set_title(f"{len(values)} networks", fontsize=10)
    return fig
