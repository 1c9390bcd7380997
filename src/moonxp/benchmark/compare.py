"""`moonxp bench compare A.json B.json ...`: per-case throughput ratios of runs against the first one.

Cases match on (workload, size, dtype, implementation), so the same code on two
cards, or before and after a change, compares row by row. Two summary rows per
problem, "best moonxp" and "best peer", also compare across backends and
devices (a CPU run against a GPU run: NumPy against CuPy).
"""

from __future__ import annotations

from pathlib import Path

from .results import is_moonxp, si
from .workloads import WORKLOADS

BEST_MOONXP, BEST_PEER = "best moonxp", "best peer"


def _throughputs(report: dict) -> dict:
    """{(workload, size, dtype, implementation): (throughput, result)} of the measured results, with the bests."""
    found: dict = {}
    for r in report["results"]:
        if "throughput" not in r:
            continue
        problem = (r["workload"], r["size"], r["dtype"])
        for implementation in (r["implementation"], BEST_MOONXP if is_moonxp(r) else BEST_PEER):
            key = (*problem, implementation)
            if key not in found or r["throughput"] > found[key][0]:
                found[key] = (r["throughput"], r)
    return found


def describe(report: dict) -> str:
    """A report's machine and date in a few words."""
    machine = report.get("machine", {})
    gpus = sorted({r["device"] for r in report["results"] if r["device"] != "cpu"})
    where = machine.get("gpu") or ", ".join(gpus) or machine.get("cpu", "?")
    cores = f" ({machine['cores']} cores)" if machine.get("cores") and not gpus else ""
    return f"{where}{cores}, {str(report.get('date', ''))[:10]}"


def ratios(reports: list[dict]) -> list[dict]:
    """Rows {workload, size, size_label, dtype, implementation, unit, baseline, ratios}.

    Parameters
    ----------
    reports : two or more loaded reports (see `results.load`); the first is the baseline.

    Returns
    -------
    rows : one per case of the baseline that another report measured too; `ratios[k]` is
        report k+1's throughput over the baseline's (None where it did not measure the case).
    """
    tables = [_throughputs(report) for report in reports]
    order = {name: k for k, name in enumerate(WORKLOADS)}
    rows = []
    for key, (base, result) in tables[0].items():
        found = [table[key][0] / base if key in table else None for table in tables[1:]]
        if any(f is not None for f in found):
            workload, size, dtype, implementation = key
            rows.append({"workload": workload, "size": size, "size_label": result["size_label"], "dtype": dtype,
                         "implementation": implementation, "unit": result["unit"], "baseline": base,
                         "ratios": found})
    return sorted(rows, key=lambda r: (order.get(r["workload"], len(order)), r["size"], r["dtype"],
                                       r["implementation"] in (BEST_MOONXP, BEST_PEER), r["implementation"]))


def table(paths: list[str | Path], reports: list[dict], rows: list[dict]) -> str:
    """The ratios as text: which file is which, then one line per case."""
    names = [chr(ord("A") + k) for k in range(len(reports))]
    lines = [f"{name} = {path}: {describe(report)}" for name, path, report in zip(names, paths, reports)]
    head = f"{'workload':14} {'size':>11} {'dtype':8} {'implementation':24} {'A throughput':>26}"
    lines += ["", head + "".join(f" {name + '/A':>8}" for name in names[1:])]
    for r in rows:
        cells = "".join(f" {'-' if f is None else f'{f:.2f}x':>8}" for f in r["ratios"])
        lines.append(f"{r['workload']:14} {r['size_label']:>11} {r['dtype']:8} {r['implementation']:24} "
                     f"{si(r['baseline']) + r['unit']:>26}{cells}")
    if not rows:
        lines.append("(no case measured in both A and another file)")
    return "\n".join(lines) + "\n"
