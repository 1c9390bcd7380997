"""``moonxp sweep``: the run, the results table file, the summary figures and sweep.json.

The table is ``results.parquet`` (pyarrow installed) or ``results.csv``, one row
per network. ``heatmaps.png`` shows the median final error and accuracy over
the seeds against lr x hidden, one pair per combination of the other settings;
``distributions.png`` shows each configuration's spread over the seeds. Files
depend only on the results, so a sweep writes the same bytes in-process and on
a cluster. An interrupted sweep writes the finished tasks' rows, whole, and
``sweep.json`` says "interrupted".
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

import numpy as np

from ..engine.cluster import check_scheduler, connect, describe
from ..engine.sweep import COLUMNS, plan, run, table
from ..outputs import output_directory, write_bytes, write_figure, write_json
from .model import SweepConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_HEATMAP_ROWS = 12   # combinations of the other settings drawn as heatmap pairs
MAX_BOXES = 48          # configurations drawn in distributions.png
OTHER = ("samples", "noise", "iters", "dtype")


def table_bytes(columns: dict[str, np.ndarray], status: str) -> tuple[str, bytes]:
    """(file name, contents) of the results table: Parquet when pyarrow is installed, else CSV."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in zip(*(columns[name].tolist() for name in COLUMNS)):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])  # repr: exact round trip
        return "results.csv", text.getvalue().encode()
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


def write(directory: Path, columns: dict[str, np.ndarray], summary: dict, plots: bool) -> list[Path]:
    """Write the table, the figures (when `plots` and there are rows) and sweep.json; return the paths."""
    name, data = table_bytes(columns, summary["status"])
    written = [directory / name]
    write_bytes(written[0], data)
    if plots and len(columns["seed"]):
        for file, figure in (("heatmaps.png", heatmaps), ("distributions.png", distributions)):
            write_figure(directory / file, figure(columns))
            written.append(directory / file)
    write_json(directory / "sweep.json", {**summary, "files": [p.name for p in written]})
    written.append(directory / "sweep.json")
    return written


def main(config: SweepConfig, stdout: TextIO, progress_bar: Callable[[int, str], Any]) -> int:
    """Run `moonxp sweep`; the exit code (0), or MoonxpError / KeyboardInterrupt for the CLI to report.

    `progress_bar(total, unit)`: a tqdm-like bar the tasks advance.
    """
    options = config.settings()
    tasks = plan(**options, seeds=config.seeds, device=config.device, backend=config.backend, block=config.block)
    check_scheduler(config.scheduler)  # bad values fail before --out is created or a cluster starts
    directory = output_directory(config.out)
    bar = progress_bar(len(tasks), "task")
    summary = {"options": {k: list(v) for k, v in options.items()},
               "seeds": [config.seeds.start, config.seeds.stop], "device": config.device, "backend": config.backend,
               "scheduler": config.scheduler, "tasks": len(tasks)}
    finished: list = []
    started = time.perf_counter()
    try:
        with connect(config.scheduler) as client:
            if client is not None and not config.quiet:
                stdout.write(describe(client) + "\n")
                stdout.flush()
            columns = run(tasks, device=config.device, backend=config.backend, client=client,
                          progress=lambda done, total: bar.update(done - bar.n), done=finished)
    except KeyboardInterrupt:
        write(directory, table(finished), {**summary, "status": "interrupted", "tasks_done": len(finished),
                                           "elapsed_s": time.perf_counter() - started}, config.plots)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    written = write(directory, columns, {**summary, "status": "ok", "tasks_done": len(tasks), "elapsed_s": elapsed},
                    config.plots)
    if not config.quiet:
        diverged = int(columns["diverged"].sum())
        stdout.write(f"Done: {len(columns['seed'])} networks in {len({task[0] for task in tasks})} configurations, {diverged} diverged, "
                     f"{elapsed:.2f} s | wrote {', '.join(str(p) for p in written)}\n")
    return 0
