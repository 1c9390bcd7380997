"""What a run reports: the printed lines, metrics.json, and the figures in the output directory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import __version__
from ..environment import versions
from ..outputs import locked, remove, write_figure, write_json
from .model import Run, Snapshot


def header(run: Run) -> str:
    """One line: backend, version, device, dtype, how it runs (eager or compiled) and the problem's sizes."""
    c, b = run.config, run.backend
    networks = f", {c.ensemble} networks" if c.ensemble > 1 else ""
    return (f"moonxp {__version__}: {b.name} {b.version} on {b.device_name}, {b.dtype_name}, {run.execution} | "
            f"N={c.samples} moons (noise {c.noise:g}), H={c.hidden}{networks}, {c.iters} iterations, "
            f"lr {c.lr:g} | grid {c.grid}x{c.grid}")


def snapshot_line(snapshot: Snapshot) -> str:
    """The homework's line for network 0, and the ensemble's spread when there is one."""
    last = snapshot.errors[:, -1]
    line = "It: %d, Error: %.3f" % (snapshot.iteration, last[0])
    if len(last) > 1:
        line += f"  ({len(last)} networks: {_spread(last, '.3f')})"
    return line


def summary(run: Run, written: list[Path], wall_s: float) -> str:
    """One line: final error, accuracy, the training's time and the command's wall time `wall_s` (from its start
    to the last file written), files written."""
    final, accuracy = run.errors[:, -1], run.accuracy
    if len(final) == 1:
        result = f"final error {final[0]:.3f}, accuracy {accuracy[0]:.1%}"
    else:
        result = (f"final error {final[0]:.3f} ({_spread(final, '.3f')}), "
                  f"accuracy {accuracy[0]:.1%} ({_spread(accuracy, '.1%')})")
    files = f" | wrote {', '.join(str(p) for p in written)}" if written else ""
    return f"Done: {result} | trained in {run.timings['train_s']:.3f} s, {wall_s:.2f} s in all{files}"


def _spread(values: np.ndarray, fmt: str) -> str:
    return (f"median {np.median(values):{fmt}}, min {values.min():{fmt}}, max {values.max():{fmt}}")


def _floats(values: np.ndarray) -> list:
    """JSON-ready floats; non-finite values (a diverged run) become null."""
    return [float(x) if math.isfinite(x) else None for x in np.asarray(values, dtype=float).ravel()]


def _stats(values: np.ndarray) -> dict:
    p05, median, p95 = np.percentile(values, [5, 50, 95])
    return {"mean": float(values.mean()), "min": float(values.min()), "p05": float(p05),
            "median": float(median), "p95": float(p95), "max": float(values.max())}


def metrics(run: Run, status: str = "ok", message: str | None = None) -> dict:
    """Everything about a run as a JSON-ready dict; a partial run (status != 'ok') has what it reached."""
    b = run.backend
    errors = run.errors if run.errors is not None else np.zeros((1, 0))
    data = {
        "moonxp": __version__,
        "status": status,
        "config": run.config.as_dict(),
        "backend": {"name": b.name, "version": b.version, "device": b.device_name, "dtype": b.dtype_name,
                    "execution": run.execution},
        "versions": versions(b.name),
        **({"cluster": run.cluster} if run.cluster else {}),
        "snapshots": [{"iteration": s.iteration, "error": _floats(s.errors[0, -1:])[0]} for s in run.snapshots],
        "errors": _floats(errors[0]),
        "timings": run.timings,
    }
    if message:
        data["message"] = message
    if run.finished:
        data["final_error"] = _floats(errors[0, -1:])[0]
        data["accuracy"] = float(run.accuracy[0])
        if len(errors) > 1 and np.isfinite(errors).all():
            p05, median, p95 = np.percentile(errors, [5, 50, 95], axis=0)
            data["ensemble"] = {
                "networks": len(errors),
                "final_error": _stats(errors[:, -1]), "accuracy": _stats(run.accuracy),
                "final_errors": _floats(errors[:, -1]), "accuracies": _floats(run.accuracy),
                "errors_p05": _floats(p05), "errors_median": _floats(median), "errors_p95": _floats(p95),
            }
    return data


FIGURES = ("boundaries.png", "curve.png", "ensemble.png", "boundaries.gif")  # every figure a run may write


def owns(directory: Path, path: str | Path) -> bool:
    """Whether a run's report in `directory` writes or removes the file `path` (metrics.json or a figure)."""
    return Path(path).resolve() in {(Path(directory) / name).resolve() for name in ("metrics.json",) + FIGURES}


def write(run: Run, directory: Path, plots: bool, metrics: dict) -> list[Path]:
    """Write `metrics` (given the names of the figures, "figures") as metrics.json and, for a finished run,
    the figures (`plots`) and the animation (``--animate``); return the paths.

    The figures are drawn first (their grids are evaluated then: the device may run out of
    memory, before anything is written). Then the directory comes to hold this run's files
    only: under a lock on the directory, metrics.json is written first (with status
    "writing" when figures follow), the figures of any earlier run are removed, this run's
    figures and animation are written, and metrics.json is final last. A failure or
    interruption on the way leaves metrics.json of this run marked "writing" (the caller then
    marks it, see `abandon`), never a mix of runs presented as one.
    """
    figures = _figures(run) if plots and run.finished else {}
    gif = run.finished and bool(run.frames)
    metrics["figures"] = list(figures) + (["boundaries.gif"] if gif else [])
    written = []
    with locked(directory):
        write_json(directory / "metrics.json", {**metrics, "status": "writing"} if metrics["figures"] else metrics)
        for name in FIGURES:
            remove(directory / name)
        for name, figure in figures.items():
            write_figure(directory / name, figure)
            written.append(directory / name)
        if gif:
            from . import animation  # matplotlib: only when a GIF is drawn
            animation.write(directory / "boundaries.gif", run)
            written.append(directory / "boundaries.gif")
        if metrics["figures"]:
            write_json(directory / "metrics.json", metrics)
    return written + [directory / "metrics.json"]


def abandon(run: Run, directory: Path, status: str, message: str | None = None) -> None:
    """Leave this run's metrics.json with `status` (what it reached) and no figures beside it."""
    with locked(directory):
        write_json(directory / "metrics.json", {**metrics(run, status, message), "figures": []})
        for name in FIGURES:
            remove(directory / name)


def _figures(run: Run) -> dict:
    """This run's PNG figures by file name, drawn from its kept params (grids evaluated where they live)."""
    from .. import plot  # matplotlib: only when figures are drawn

    c = run.config
    titles = ["It: %d, Error: %.3f" % (s.iteration, s.errors[0, -1]) for s in run.snapshots]
    figures = {"boundaries.png": plot.boundaries([s.params for s in run.snapshots], run.X, run.T,
                                                 titles=titles, size=c.grid, compile=c.compile),
               "curve.png": plot.curve(run.errors)}
    if c.ensemble > 1:
        figures["ensemble.png"] = plot.ensemble(run.params, run.X, run.T, size=c.grid, compile=c.compile)
    return figures
