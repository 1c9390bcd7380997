"""``moonxp sweep``: the run, the results table file, the summary figures and sweep.json.

The table is ``results.csv`` (``--format csv``, the default) or
``results.parquet`` (``--format parquet``, which needs pyarrow), one row per
network. ``heatmaps.png`` shows the median final error and accuracy over the
seeds against lr x hidden, one pair per combination of the other settings;
``distributions.png`` shows each configuration's spread over the seeds. Files
depend only on the results, so a sweep writes the same bytes in-process and on
a cluster. An interrupted or failed sweep writes the finished tasks' rows,
whole, and ``sweep.json`` says "interrupted" or "failed"; no file of an earlier
sweep stays beside them (see `write`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

import numpy as np

from ..engine.cluster import check_scheduler, connect, describe, parse_scheduler, prepare
from ..engine.sweep import COLUMNS, plan, run, table, workers_hold
from ..engine.tasks import task_backend
from ..environment import versions
from ..errors import BackendError, MoonxpError, install_hint
from ..outputs import locked, output_directory, remove, write_bytes, write_figure, write_json
from .model import TABLE_FORMATS, SweepConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_HEATMAP_ROWS = 12   # combinations of the other settings drawn as heatmap pairs
MAX_BOXES = 48          # configurations drawn in distributions.png
OTHER = ("samples", "noise", "iters", "dtype")


def check_format(format: str) -> None:
    """Fail early (BackendError) when the table's `format` needs a package that is missing: Parquet, pyarrow."""
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise BackendError(f"--format parquet needs pyarrow, which is not installed: {install_hint('parquet')}, "
                               f"or use --format csv") from exc


def table_bytes(columns: dict[str, np.ndarray], status: str, format: str) -> tuple[str, bytes]:
    """(file name, contents) of the results table in `format`: CSV (floats exact) or Parquet (`status` in its
    metadata)."""
    if format == "csv":
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in zip(*(columns[name].tolist() for name in COLUMNS)):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])  # repr: exact round trip
        return "results.csv", text.getvalue().encode()
    import pyarrow as pa
    import pyarrow.parquet as pq
    arrays = {name: pa.array(columns[name].astype(str) if name == "dtype" else columns[name]) for name in COLUMNS}
    data = pa.table(arrays).replace_schema_metadata({"moonxp.status": status})
    buffer = pa.BufferOutputStream()
    pq.write_table(data, buffer)
    return "results.parquet", buffer.getvalue().to_pybytes()


def _configurations(columns: dict[str, np.ndarray]) -> list[tuple[dict, np.ndarray]]:
    """(setting, rows) of each configuration, in table order."""
    keys = list(zip(*(columns[name].tolist() for name in ("lr", "hidden") + OTHER)))
    groups: dict[tuple, list] = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return [(dict(zip(("lr", "hidden") + OTHER, key)), np.array(rows)) for key, rows in groups.items()]


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def heatmaps(columns: dict[str, np.ndarray]) -> Figure:
    """Median final error and accuracy over the seeds (diverged networks left out) against lr x hidden."""
    from matplotlib.figure import Figure

    configs = _configurations(columns)
    lrs = sorted({c["lr"] for c, _ in configs})
    hiddens = sorted({c["hidden"] for c, _ in configs})
    others = list(dict.fromkeys(tuple(c[k] for k in OTHER) for c, _ in configs))[:MAX_HEATMAP_ROWS]
    fig = Figure(figsize=(4.5 * 2, 0.6 + 0.45 * len(hiddens) * len(others) + 1.2 * len(others)), layout="constrained")
    for r, other in enumerate(others):
        cells = {(c["lr"], c["hidden"]): rows for c, rows in configs if tuple(c[k] for k in OTHER) == other}
        for k, (name, cmap) in enumerate((("final_error", "viridis"), ("accuracy", "magma"))):
            image = np.full((len(hiddens), len(lrs)), np.nan)
            diverged = np.zeros_like(image)
            for (lr, hidden), rows in cells.items():
                image[hiddens.index(hidden), lrs.index(lr)] = _median(columns[name][rows])
                diverged[hiddens.index(hidden), lrs.index(lr)] = columns["diverged"][rows].mean()
            ax = fig.add_subplot(len(others), 2, 2 * r + k + 1)
            ax.imshow(image, cmap=cmap, aspect="auto", origin="lower")
            for (i, j), value in np.ndenumerate(image):
                note = f"{value:.3g}" + (f"\n{diverged[i, j]:.0%} div." if diverged[i, j] else "")
                ax.text(j, i, note, ha="center", va="center", fontsize=7,
                        bbox={"facecolor": "white", "alpha": 0.6, "edgecolor": "none", "pad": 1})
            ax.set_xticks(range(len(lrs)), [f"{v:g}" for v in lrs], fontsize=7)
            ax.set_yticks(range(len(hiddens)), [str(v) for v in hiddens], fontsize=7)
            ax.set_xlabel("lr", fontsize=8)
            ax.set_ylabel("hidden", fontsize=8)
            setting = ", ".join(f"{key} {value}" for key, value in zip(OTHER, other))
            ax.set_title(f"median {name.replace('_', ' ')}\n{setting}", fontsize=8)
    return fig


def distributions(columns: dict[str, np.ndarray]) -> Figure:
    """Each configuration's final error and accuracy over its seeds (diverged networks left out)."""
    from matplotlib.figure import Figure

    configs = _configurations(columns)[:MAX_BOXES]
    labels = [", ".join(f"{key}={value}" for key, value in c.items() if len({d[key] for d, _ in configs}) > 1)
              or "all" for c, _ in configs]
    fig = Figure(figsize=(max(6.0, 0.5 * len(configs) + 2), 7), layout="constrained")
    for k, name in enumerate(("final_error", "accuracy")):
        ax = fig.add_subplot(2, 1, k + 1)
        data = [columns[name][rows][np.isfinite(columns[name][rows])] for _, rows in configs]
        ax.boxplot([d if d.size else [np.nan] for d in data], whis=(5, 95), showfliers=False)
        ax.set_xticks(range(1, len(configs) + 1), labels if k else [""] * len(configs), rotation=60, ha="right",
                      fontsize=7)
        ax.set_ylabel(name.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.suptitle(f"over seeds per configuration (whiskers 5-95%), {len(columns['seed'])} networks", fontsize=9)
    return fig


FILES = ("results.parquet", "results.csv", "heatmaps.png", "distributions.png", "sweep.json")  # all a sweep writes


def write(directory: Path, columns: dict[str, np.ndarray], summary: dict, plots: bool,
          format: str = TABLE_FORMATS[0]) -> list[Path]:
    """Write the table (in `format`), the figures (when `plots` and there are rows) and sweep.json; return the paths.

    The figures are drawn first. Then, under a lock on the directory: sweep.json of this run
    with status "writing", every file of an earlier sweep removed, this run's table (its
    metadata holding `summary["status"]`) and figures, and sweep.json last with the status.
    A failure or interruption on the way leaves sweep.json "writing" for the caller to mark
    (`abandon`), never files of two runs presented as one.
    """
    name, data = table_bytes(columns, summary["status"], format)
    figures = {file: draw(columns) for file, draw in (("heatmaps.png", heatmaps), ("distributions.png", distributions))
               } if plots and len(columns["seed"]) else {}
    written = [directory / name] + [directory / file for file in figures] + [directory / "sweep.json"]
    with locked(directory):
        write_json(directory / "sweep.json", {**summary, "status": "writing", "files": []})
        for file in FILES[:-1]:
            remove(directory / file)
        write_bytes(directory / name, data)
        for file, figure in figures.items():
            write_figure(directory / file, figure)
        write_json(directory / "sweep.json", {**summary, "files": [p.name for p in written]})
    return written


def abandon(directory: Path, columns: dict[str, np.ndarray], summary: dict, format: str = TABLE_FORMATS[0]) -> None:
    """Leave this run's rows (their table in `format`, marked `summary["status"]`) and sweep.json, and no figure:
    sweep.json first (it names this run), each earlier file removed where it can be, the table, sweep.json
    listing it."""
    name, data = table_bytes(columns, summary["status"], format)
    with locked(directory):
        write_json(directory / "sweep.json", {**summary, "files": []})
        for file in FILES[:-1]:
            with contextlib.suppress(MoonxpError):  # a directory in the way: not a file of any run
                remove(directory / file)
        write_bytes(directory / name, data)
        write_json(directory / "sweep.json", {**summary, "files": [name, "sweep.json"]})


def _concurrent(scheduler: str | None) -> int | None:
    """Tasks run at once on this host: one in-process, a worker each on a local cluster, none on a remote one
    (a cluster's workers are checked against their memory limits once connected: `workers_hold`)."""
    if scheduler is None:
        return 1
    kind, workers = parse_scheduler(scheduler)
    return (workers or os.cpu_count() or 1) if kind == "local" else None


def main(config: SweepConfig, stdout: TextIO, progress_bar: Callable[[int, str], Any],
         started: float | None = None) -> int:
    """Run `moonxp sweep`; the exit code (0), or MoonxpError / KeyboardInterrupt for the CLI to report.

    `progress_bar(total, unit)`: a tqdm-like bar the tasks advance; `started`: the `time.perf_counter()` the
    command's wall time counts from (default: this call). Whatever stops the run (a
    signal, a lost scheduler, a failed write), the directory ends holding this run's finished
    rows and sweep.json with its status ("ok" only when every file of this run is whole).
    """
    check_scheduler(config.scheduler)
    options = config.settings()
    tasks = plan(**options, seeds=config.seeds, device=config.device, backend=config.backend, block=config.block,
                 concurrent=_concurrent(config.scheduler), option="--")  # before --out or a cluster
    check_format(config.format)
    directory = output_directory(config.out)
    bar = progress_bar(len(tasks), "task")
    summary = {"options": {k: list(v) for k, v in options.items()},
               "seeds": [config.seeds.start, config.seeds.stop], "device": config.device, "backend": config.backend,
               "scheduler": config.scheduler, "tasks": len(tasks)}
    finished: list = []
    trained_from = time.perf_counter()
    stop: BaseException | None = None
    backend = task_backend((config.device, config.backend, config.dtype[0])).name
    summary["versions"] = versions(backend)
    try:
        with connect(config.scheduler, quiet=True) as client:
            if client is not None:
                say = (lambda line: None) if config.quiet else (lambda line: stdout.write(line + "\n"))
                say(describe(client))
                found = prepare(client, backend, say)  # workers there, running this moonxp, before any task
                summary["cluster"] = {"scheduler": found["scheduler"], "workers": found["workers"]}
            with workers_hold(client, options, config.seeds, config.block, option="--"):  # before any task
                columns = run(tasks, device=config.device, backend=config.backend, client=client,
                              progress=lambda done, total: bar.update(done - bar.n), done=finished)
    except (KeyboardInterrupt, Exception) as exc:  # the finished rows are written all the same
        stop, columns = exc, table(finished)
    finally:
        bar.close()
    status = "ok" if stop is None else "interrupted" if isinstance(stop, KeyboardInterrupt) else "failed"
    summary.update(status=status, tasks_done=len(finished), elapsed_s=time.perf_counter() - trained_from)
    if status == "failed":
        summary["message"] = str(stop) or repr(stop)
    try:
        written = write(directory, columns, summary, config.plots, config.format)
        if stop is None and not config.quiet:
            diverged = int(columns["diverged"].sum())
            wall = time.perf_counter() - (trained_from if started is None else started)
            stdout.write(f"Done: {len(columns['seed'])} networks in {len({task[0] for task in tasks})} "
                         f"configurations, {diverged} diverged | trained in {summary['elapsed_s']:.2f} s, "
                         f"{wall:.2f} s in all | wrote {', '.join(str(p) for p in written)}\n")
    except (KeyboardInterrupt, Exception) as exc:
        kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        _abandon(directory, columns, {**summary, "status": status if stop is not None else kind,
                                      "message": summary.get("message") or str(exc) or repr(exc)}, config.format)
        raise stop or exc from None
    if stop is not None:
        raise stop
    return 0


def _abandon(directory: Path, columns: dict[str, np.ndarray], summary: dict, format: str) -> None:
    """`abandon`, best effort: the error that stopped the run is the news, not a second one."""
    with contextlib.suppress(MoonxpError):
        abandon(directory, columns, summary, format)
