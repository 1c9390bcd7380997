"""Benchmark results as pictures: throughput against size (with the roofline), and ratios between runs.

Both take loaded reports (`results.load`) and return matplotlib `Figure`s (Agg,
no pyplot state); `outputs.write_figure` saves them.
"""

from __future__ import annotations

import math

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
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    fig.suptitle(f"moonxp bench: {describe(report)} (grey: roofline; solid float32, dotted float64)", fontsize=10)
    return fig


def ratios(names: list[str], reports: list[dict], rows: list[dict]) -> Figure:
    """Bars of each run's throughput over the first run's, one row per case (log scale, 1x marked).

    `names` label the runs (the first is the baseline); `rows` come from `compare.ratios(reports)`.
    """
    height = 0.8 / max(1, len(reports) - 1)
    fig = Figure(figsize=(8, 1.5 + 0.28 * len(rows) * max(1, len(reports) - 1)), layout="constrained")
    ax = fig.add_subplot()
    labels = [f"{r['workload']} {r['size_label']} {r['dtype']} {r['implementation']}" for r in rows]
    for k, (name, report) in enumerate(zip(names[1:], reports[1:])):
        values = [r["ratios"][k] or math.nan for r in rows]
        ax.barh([i + k * height for i in range(len(rows))], values, height=height, color=f"C{k}",
                label=f"{name}: {describe(report)}")
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.margins(y=0.01)
    ax.set_yticks([i + (len(reports) - 2) * height / 2 for i in range(len(rows))], labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"throughput / throughput of {names[0]} ({describe(reports[0])})", fontsize=8)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig
