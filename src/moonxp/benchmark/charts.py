"""Benchmark results as pictures: throughput against size (with the roofline), and ratios between runs.

Both take loaded reports (`results.load`) and return matplotlib `Figure`s (Agg,
no pyplot state); `outputs.write_figure` saves them.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .compare import describe
from .workloads import WORKLOADS

DASHES = {"float32": "-", "float64": ":"}


def throughput(report: dict) -> Figure:
    """Throughput against problem size, one log-log panel per workload, one line per implementation and dtype.

    The roofline of each (device, dtype) is a grey line: the most the device could do
    at that size, from its measured matmul peak and copy bandwidth.
    """
    measured = [r for r in report["results"] if "throughput" in r]
    names = [name for name in WORKLOADS if any(r["workload"] == name for r in measured)]
    columns = min(2, max(1, len(names)))
    rows = math.ceil(len(names) / columns) or 1
    fig = Figure(figsize=(6 * columns, 4.2 * rows + 1.2), layout="constrained")
    implementations = list(dict.fromkeys(r["implementation"] for r in measured))
    colors = {name: f"C{k % 10}" for k, name in enumerate(implementations)}
    multi_device = len({r["device"] for r in measured}) > 1
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, columns, k + 1)
        mine = [r for r in measured if r["workload"] == name]
        for device, dtype in dict.fromkeys((r["device"], r["dtype"]) for r in mine):
            bound = sorted({(r["size"], r["roofline"]) for r in mine
                            if (r["device"], r["dtype"]) == (device, dtype) and "roofline" in r})
            if bound:
                ax.plot(*zip(*bound), color="0.5", linewidth=2.5, alpha=0.6, linestyle=DASHES.get(dtype, "-"),
                        marker="_", markersize=16, label=f"roofline {device} {dtype}")
        for implementation, device, dtype in dict.fromkeys((r["implementation"], r["device"], r["dtype"])
                                                          for r in mine):
            points = sorted((r["size"], r["throughput"]) for r in mine
                            if (r["implementation"], r["device"], r["dtype"]) == (implementation, device, dtype))
            label = f"{implementation}{f' on {device}' if multi_device else ''} {dtype}"
            ax.plot(*zip(*points), color=colors[implementation], linestyle=DASHES.get(dtype, "-"), marker="o",
                    markersize=4, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({r["size"] for r in mine})
        ax.set_xticks(sizes, [WORKLOADS[name].size_label.format(s) for s in sizes], fontsize=7)
        ax.minorticks_off()
        ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 1.6)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(WORKLOADS[name].unit, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    order = sorted(handles, key=lambda label: (not label.startswith("roofline"), label.split()[-1]))
    fig.legend([handles[label] for label in order], order, loc="outside lower center", ncols=3, fontsize=7,
               frameon=False)
    fig.suptitle(f"moonxp bench: {describe(report)} (grey: roofline; solid float32, dotted float64)", fontsize=10)
    return fig


def ratios(paths: list, reports: list[dict], rows: list[dict]) -> Figure:
    """Bars of each run's throughput over the first run's, one row per case, from 1x (log scale).

    `paths` name the runs' files (the first, A, is the baseline); `rows` come from `compare.ratios(reports)`.
    Bars to the right of 1x are faster than the baseline, to the left slower.
    """
    others = max(1, len(reports) - 1)
    height = 0.8 / others
    fig = Figure(figsize=(8, 1.6 + 0.22 * len(rows) * others + 0.2 * others), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{r['workload']} {r['size_label']} {r['dtype']} {r['implementation']}" for r in rows]
    names = [f"{chr(ord('A') + k)} = {Path(path).name}: {describe(report)}" for k, (path, report)
             in enumerate(zip(paths, reports))]
    for k, (name, report) in enumerate(zip(names[1:], reports[1:])):
        values = [r["ratios"][k] or math.nan for r in rows]
        ax.barh([i + k * height for i in range(len(rows))], [v - 1 for v in values], left=1.0, height=height,
                color=f"C{k}", label=name)
    reach = max([max(f, 1 / f) for r in rows for f in r["ratios"] if f] or [2.0]) * 1.15
    ax.set_xlim(1 / reach, reach)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    for axis_format in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_format(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.tick_params(axis="x", which="both", labelsize=7)
    ax.margins(y=0.01)
    ax.set_yticks([i + (others - 1) * height / 2 for i in range(len(rows))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("throughput / throughput of A (right: faster than A)", fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.legend(loc="outside upper center", fontsize=8, frameon=False, title=names[0], title_fontsize=8)
    return fig
