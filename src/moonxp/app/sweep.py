"""``moonxp sweep``: its options, the results table file, the summary figures and sweep.json.

The table is ``results.parquet`` (pyarrow installed) or ``results.csv``, one row
per network. ``heatmaps.png`` shows the median final error and accuracy over
the seeds against lr x hidden, one pair per combination of the other settings;
``distributions.png`` shows each configuration's spread over the seeds. Files
depend only on the results, so a sweep writes the same bytes in-process and on
a cluster. An interrupted sweep writes the finished tasks' rows, whole, and
``sweep.json`` says "interrupted".
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path
from typing import Callable, TextIO

import numpy as np
from matplotlib.figure import Figure

from .. import defaults
from ..engine.distributed import check_scheduler, connect, describe
from ..engine.sweep import BLOCK, COLUMNS, sweep, table
from ..outputs import output_directory, write_bytes, write_figure, write_json
from ..validate import MAX_SEED

SCHEDULER_HELP = ("run on a Dask cluster: local[:N] (N worker processes on 127.0.0.1, started and stopped here), "
                  "tcp://HOST:PORT or tls://HOST:PORT (an existing scheduler); default: in this process")
MAX_HEATMAP_ROWS = 12   # combinations of the other settings drawn as heatmap pairs
MAX_BOXES = 48          # configurations drawn in distributions.png
OTHER = ("samples", "noise", "iters", "dtype")


def _values(kind: Callable) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        return tuple(kind(part) for part in text.split(","))
    return parse


def _seeds(text: str) -> range:
    start, colon, stop = text.partition(":")
    try:
        first, end = int(start), int(stop) if colon else int(start) + 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed range START:STOP (e.g. 0:1000)") from None
    if not 0 <= first < end <= MAX_SEED + 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be START:STOP with 0 <= START < STOP <= 2**32")
    return range(first, end)


def add_arguments(parser: argparse.ArgumentParser, number: Callable) -> None:
    """The sweep options; `number(kind)` is the CLI's number parser (ranges are checked by `moonxp.sweep`)."""
    real, integer = number(float), number(int)
    parser.add_argument("--lr", type=_values(real), default=(defaults.LR,), help="learning rates, e.g. 0.01,0.1,1")
    parser.add_argument("--hidden", type=_values(integer), default=(defaults.HIDDEN,), help="hidden units, e.g. 10,50")
    parser.add_argument("--samples", type=_values(integer), default=(defaults.SAMPLES,), help="moons N values")
    parser.add_argument("--noise", type=_values(real), default=(defaults.NOISE,), help="noise values")
    parser.add_argument("--iters", type=_values(integer), default=(defaults.ITERS,), help="iteration counts")
    parser.add_argument("--dtype", type=_values(str), default=(defaults.DTYPES[0],), help="float64 and/or float32")
    parser.add_argument("--seeds", type=_seeds, default=range(0, 10), help="seed range START:STOP (default 0:10)")
    parser.add_argument("--block", type=integer, default=BLOCK, help=f"networks per task (default {BLOCK})")
    parser.add_argument("--scheduler", metavar="ADDRESS", help=SCHEDULER_HELP)
    parser.add_argument("--out", default="moonxp-sweep", help="output directory (default moonxp-sweep)")
    parser.add_argument("--no-plot", action="store_true", help="write the table and sweep.json only")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


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


def main(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, progress_delay: float = 1.0) -> int:
    """Run `moonxp sweep`; the exit code (0), or MoonxpError / KeyboardInterrupt for the CLI to report."""
    options = dict(lr=args.lr, hidden=args.hidden, samples=args.samples, noise=args.noise, iters=args.iters,
                   dtype=args.dtype)
    from ..engine.sweep import settings
    count = len(settings(**options))  # bad values fail here, before --out is created or a cluster starts
    check_scheduler(args.scheduler)
    directory = output_directory(args.out)
    from tqdm.auto import tqdm
    tasks = count * len(range(0, len(args.seeds), args.block))
    bar = tqdm(total=tasks, file=stderr, disable=True if args.quiet else None, delay=progress_delay, unit="task",
               leave=False, dynamic_ncols=True)
    summary = {"options": {k: list(v) for k, v in options.items()},
               "seeds": [args.seeds.start, args.seeds.stop], "device": args.device, "backend": args.backend,
               "scheduler": args.scheduler, "tasks": tasks}
    finished: list = []
    started = time.perf_counter()
    try:
        with connect(args.scheduler) as client:
            if client is not None and not args.quiet:
                stdout.write(describe(client) + "\n")
                stdout.flush()
            columns = sweep(**options, seeds=args.seeds, device=args.device, backend=args.backend, client=client,
                            block=args.block, progress=lambda done, total: bar.update(done - bar.n), done=finished)
    except KeyboardInterrupt:
        write(directory, table(finished), {**summary, "status": "interrupted", "tasks_done": len(finished),
                                           "elapsed_s": time.perf_counter() - started}, not args.no_plot)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    written = write(directory, columns, {**summary, "status": "ok", "tasks_done": tasks, "elapsed_s": elapsed},
                    not args.no_plot)
    if not args.quiet:
        diverged = int(columns["diverged"].sum())
        stdout.write(f"Done: {len(columns['seed'])} networks in {count} configurations, {diverged} diverged, "
                     f"{elapsed:.2f} s | wrote {', '.join(str(p) for p in written)}\n")
    return 0
