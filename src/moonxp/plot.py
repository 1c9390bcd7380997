"""Figures of trained networks: ``boundaries``, ``curve``, ``ensemble`` return matplotlib `Figure`s.

They take params, snapshots or errors from any namespace: the grids are
evaluated where the params live (one batched `evaluate_grid` call), then
moved to the host to draw. No pyplot state; a returned figure shows inline
in a notebook (``_repr_png_``) and saves with ``fig.savefig``. The CLI's
report draws with these same functions.

The homework's look: class -1 in #0088FF, class +1 in #FF8800, the decision
regions filled in the same colours, the zero contour dashed black.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import validate
from .arrays import common_device, device_context, namespace_of, to_host
from .defaults import ENSEMBLE_PANELS, GRID, GRID_HI, GRID_LO, PANEL_INCHES
from .engine.grid import evaluate_grid
from .engine.training import evaluate
from .errors import InvalidInputError
from .kernels import Params

NEGATIVE, POSITIVE = "#0088FF", "#FF8800"


class MoonxpFigure(Figure):
    """A matplotlib Figure that a notebook shows inline as PNG, with or without ``%matplotlib inline``."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()


def stack(snapshots: Params | Sequence[Params]) -> Params:
    """Params with one leading axis: snapshots already stacked, one network (a panel), or a list of networks."""
    if isinstance(snapshots, tuple) and len(snapshots) == 3 and not isinstance(snapshots[0], tuple):
        params = Params(*snapshots)
        if getattr(params.W, "ndim", None) not in (2, 3):
            raise InvalidInputError(f"snapshots are drawn from W (2, H) or stacked (S, 2, H), not W of shape "
                                    f"{tuple(getattr(params.W, 'shape', ()))}: draw one batch axis at a time")
        return params if params.W.ndim == 3 else Params(*(p[None, ...] for p in params))
    if not snapshots:
        raise InvalidInputError("no snapshots to draw: give params, or a list of params")
    shapes = {tuple(tuple(p.shape) for p in s) for s in snapshots}
    if len(shapes) > 1 or len(next(iter(shapes))[0]) != 2:
        raise InvalidInputError(f"a list of snapshots must be networks W (2, H) of one shape, not W of shapes "
                                f"{sorted({shape[0] for shape in shapes})}: draw networks of each H apart")
    xp = namespace_of(*(p for s in snapshots for p in s))
    return Params(*(xp.stack(field, axis=0) for field in zip(*snapshots)))


def grids(params: Params, size: int = GRID, lo: float = GRID_LO, hi: float = GRID_HI, *,
          compile: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(axis (G,), grids (..., G, G)) on the host: one batched `evaluate_grid` where the params live."""
    return np.linspace(lo, hi, size), to_host(evaluate_grid(params, size, lo, hi, compile=compile))


def _data(X: Any, T: Any) -> tuple[np.ndarray, np.ndarray]:
    X, T = to_host(X), to_host(T)
    if X.ndim != 2 or X.shape[1] != 2 or T.shape != (X.shape[0],):
        raise InvalidInputError(f"plots draw points X (N, 2) with labels T (N,), not X {X.shape}, T {T.shape}")
    if X.dtype.kind not in "iuf" or T.dtype.kind not in "biuf":
        raise InvalidInputError(f"plots draw numeric points and labels, not X of {X.dtype} and T of {T.dtype}")
    return X, T


def panel(ax, axis: np.ndarray, Yg: np.ndarray, X: np.ndarray, T: np.ndarray, title: str) -> None:
    """Draw one decision function Yg (G, G) over `axis` (G,) with the points X (N, 2), T (N,) (class: T > 0)."""
    reach = max(float(np.max(np.abs(Yg))), 1.0) * 1.01
    ax.contourf(axis, axis, Yg, levels=[-reach, 0.0, reach], colors=[NEGATIVE, POSITIVE], alpha=0.35)
    if Yg.min() < 0 < Yg.max():  # a zero contour exists
        ax.contour(axis, axis, Yg, levels=[0.0], colors="black", linestyles="dashed")
    ax.scatter(*X[T <= 0].T, color=NEGATIVE, s=12, edgecolors="black", linewidths=0.3)
    ax.scatter(*X[T > 0].T, color=POSITIVE, s=12, edgecolors="black", linewidths=0.3)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(axis[0], axis[-1])
    ax.set_ylim(axis[0], axis[-1])
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def boundaries(snapshots: Params | Sequence[Params], X: Any, T: Any, *, titles: Sequence[str] | None = None,
               size: int = GRID, lo: float = GRID_LO, hi: float = GRID_HI, columns: int = 4,
               compile: bool | None = None) -> Figure:
    """One panel per snapshot: its decision boundary over the data.

    Parameters
    ----------
    snapshots : Params stacked (S, 2, H), (S, H), or one network, or a list of networks; any namespace.
    X, T : points (N, 2) and labels (N,) of +-1 (or {0, 1}), any namespace.
    titles : one per snapshot; default "network k".
    size, lo, hi, compile : the grid, as for `moonxp.evaluate_grid`.
    columns : panels per row.

    Returns
    -------
    matplotlib Figure, 3 inches per panel.
    """
    validate.count("columns", columns, 1)
    params = stack(snapshots)
    axis, images = grids(params, size, lo, hi, compile=compile)
    X, T = _data(X, T)
    titles = list(titles) if titles is not None else [f"network {k}" for k in range(len(images))]
    if len(titles) != len(images):
        raise InvalidInputError(f"{len(titles)} titles for {len(images)} snapshots: give one title per snapshot")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig = panel_figure(rows, columns)
    for k, (Yg, title) in enumerate(zip(images, titles)):
        panel(fig.add_subplot(rows, columns, k + 1), axis, Yg, X, T, title)
    return fig


def panel_figure(rows: int, columns: int) -> MoonxpFigure:
    """A figure for rows x columns boundary panels, `PANEL_INCHES` each, laid out with fixed margins: every
    panel holds the same ticks and a one-line title, so the layout is known without measuring text (a
    constrained layout took half of the figures' drawing time)."""
    width, height = PANEL_INCHES * columns, PANEL_INCHES * rows
    fig = MoonxpFigure(figsize=(width, height))
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.1 / width, bottom=0.3 / height, top=1 - 0.3 / height,
                        wspace=0.45 / (PANEL_INCHES - 0.45), hspace=0.6 / (PANEL_INCHES - 0.6))
    return fig


def curve(errors: Any) -> Figure:
    """Training error per iteration: errors (iters + 1,) of one network, or (B, iters + 1) of an ensemble.

    An ensemble draws network 0 and shades the 5-95% range of all networks. Any namespace.
    """
    errors = to_host(errors).astype(np.float64)
    if errors.ndim == 1:
        errors = errors[None, :]
    if errors.ndim != 2 or errors.shape[0] < 1 or errors.shape[1] < 1:
        raise InvalidInputError(f"errors must be (iters + 1,) or (B, iters + 1), not {errors.shape}")
    fig = MoonxpFigure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    steps = np.arange(errors.shape[1])
    several = len(errors) > 1
    if several:
        spread = np.percentile(errors, [5, 95], axis=0)
        ax.fill_between(steps, spread[0], spread[1], color=NEGATIVE, alpha=0.25, label="ensemble 5-95%")
    ax.plot(steps, errors[0], color="black", label="network 0" if several else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training error E")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if several:
        ax.legend()
    return fig


def ensemble(params: Params, X: Any, T: Any, *, panels: int = ENSEMBLE_PANELS, size: int = GRID,
             lo: float = GRID_LO, hi: float = GRID_HI, compile: bool | None = None) -> Figure:
    """Final boundaries of the first `panels` networks, and histograms of every network's error and accuracy.

    Parameters
    ----------
    params : B trained networks, W (B, 2, H), b and v (B, H), any namespace.
    X, T : the training points (N, 2) and labels (N,) of +-1, any namespace (moved to the params').
    panels : boundaries drawn (the first networks).
    size, lo, hi, compile : the grid, as for `moonxp.evaluate_grid`.

    Returns
    -------
    matplotlib Figure: `panels` boundaries and two histograms in one row.
    """
    validate.count("panels", panels, 1)
    params = Params(*params)
    if params.W.ndim != 3:
        raise InvalidInputError(f"ensemble draws B networks, W (B, 2, H), not W {tuple(params.W.shape)}")
    X, T = _data(X, T)
    xp, device = namespace_of(*params), common_device(*params)
    with device_context(xp, device):  # the data (small) joins the params
        on = [xp.asarray(a.astype(np.float64), dtype=params.W.dtype, device=device) for a in (X, T)]
    final_errors, accuracies = (to_host(a) for a in evaluate(params, *on, compile=compile))
    shown = min(panels, params.W.shape[0])
    axis, images = grids(Params(*(p[:shown, ...] for p in params)), size, lo, hi, compile=compile)
    columns = shown + 2
    fig = MoonxpFigure(figsize=(PANEL_INCHES * columns, PANEL_INCHES), layout="constrained")
    for k, Yg in enumerate(images):
        panel(fig.add_subplot(1, columns, k + 1), axis, Yg, X, T, f"network {k}: error {final_errors[k]:.3f}")
    for k, (values, label) in enumerate(((final_errors, "final error"), (accuracies, "accuracy"))):
        ax = fig.add_subplot(1, columns, shown + k + 1)
        ax.hist(values, bins=min(30, max(5, len(values) // 4)), color=POSITIVE if k else NEGATIVE)
        ax.set_xlabel(label)
        ax.set_ylabel("networks")
        ax.set_title(f"{len(values)} networks", fontsize=10)
    return fig
