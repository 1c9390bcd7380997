"""What a benchmark result holds, and reading results back: the roofline and ratios, the JSON schema, loading.

A run's JSON (`moonxp bench --json`) is {"schema", "moonxp", "date", "machine",
"versions", "matmul_precision", "isolation", "complete", "limits": [...],
"results": [...]}; it is rewritten after each backend, with "complete": false
until the run ends.
`load` also reads the first schema (files without "schema", as committed in
bench/results/ before it existed) and pytest-benchmark's JSON of bench/
(``--benchmark-json``), whose `extra_info` holds the same result records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .limits import roofline
from .workloads import WORKLOADS

SCHEMA = 2
# key: (type, required) for the report and for each result
REPORT_KEYS = {"schema": (int, True), "moonxp": (str, True), "date": (str, True), "machine": (dict, True),
               "versions": (dict, True), "limits": (list, True), "results": (list, True),
               "matmul_precision": (str, False), "isolation": (str, False), "complete": (bool, False)}
RESULT_KEYS = {"workload": (str, True), "size": (int, True), "size_label": (str, True), "dtype": (str, True),
               "implementation": (str, True), "backend": (str, True), "device": (str, True), "unit": (str, True)}
MEASURED_KEYS = {"median_s": float, "repeats": int, "throughput": float, "flops_per_s": float,
                 "roofline": float, "percent_of_limit": float, "ratio_to_best_peer": float}
LIMIT_KEYS = {"device": str, "dtype": str, "matmul_flops": float, "copy_bandwidth": float}


def finish(result: dict, limits: dict | None) -> dict:
    """Add throughput, FLOP/s, the roofline and its share to a timed `result` (post-processing).

    Parameters
    ----------
    result : a record with "workload", "size", "dtype" and "median_s" (or "error", left as is).
    limits : the device's measured limits for the result's dtype, or None when they failed.

    Returns
    -------
    result : the same dict, completed.
    """
    if "median_s" not in result:
        return result
    workload, size = WORKLOADS[result["workload"]], result["size"]
    flops = workload.flops_per_item(size)
    result["throughput"] = workload.items(size) / result["median_s"]
    result["flops_per_s"] = result["throughput"] * flops
    if limits and "matmul_flops" in limits:
        itemsize = np.dtype(result["dtype"]).itemsize
        result["roofline"] = roofline(limits, flops, workload.bytes_per_item(itemsize))
        result["percent_of_limit"] = 100 * result["throughput"] / result["roofline"]
    return result


def si(value: float) -> str:
    """A number with an SI prefix and 3 digits: 1.23 M."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.3g} "


def is_moonxp(result: dict) -> bool:
    return result["implementation"].startswith("moonxp")


def _problem(result: dict) -> tuple:
    return result["workload"], result["size"], result["dtype"], result["device"]


def add_ratios(results: list[dict]) -> None:
    """Give each moonxp result its ratio to the best peer measured on the same problem and device."""
    best: dict = {}
    for p in results:
        if "throughput" in p and not is_moonxp(p):
            best[_problem(p)] = max(best.get(_problem(p), 0.0), p["throughput"])
    for r in results:
        if is_moonxp(r) and "throughput" in r and _problem(r) in best:
            r["ratio_to_best_peer"] = r["throughput"] / best[_problem(r)]


def _positive(value) -> bool:
    """A finite number above zero (a time, a throughput or a limit that can be divided by)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def problems(report: dict) -> list[str]:
    """What keeps `report` from being a moonxp bench JSON of the current schema (empty when nothing);
    measured numbers and limits must be finite and above zero."""
    found = []

    def check(where: str, data: dict, keys: dict) -> None:
        for key, (kind, required) in keys.items():
            if key not in data:
                if required:
                    found.append(f"{where}: no {key!r}")
            elif not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
                name = "float" if isinstance(kind, tuple) else kind.__name__
                found.append(f"{where}: {key!r} is {type(data[key]).__name__}, not {name}")
            elif isinstance(kind, tuple) and not _positive(data[key]):
                found.append(f"{where}: {key!r} is {data[key]!r}, not a finite number above 0")

    if not isinstance(report, dict):
        return ["not a JSON object"]
    check("report", report, REPORT_KEYS)
    if report.get("schema") not in (None, SCHEMA):
        found.append(f"report: schema {report['schema']!r}, this moonxp reads {SCHEMA}")
    for k, lim in enumerate(report.get("limits") if isinstance(report.get("limits"), list) else []):
        if not isinstance(lim, dict):
            found.append(f"limits[{k}]: not an object")
        elif "error" not in lim:
            check(f"limits[{k}]", lim, {key: ((int, float) if kind is float else kind, True)
                                        for key, kind in LIMIT_KEYS.items()})
    for k, r in enumerate(report.get("results") if isinstance(report.get("results"), list) else []):
        if not isinstance(r, dict):
            found.append(f"results[{k}]: not an object")
            continue
        check(f"results[{k}]", r, RESULT_KEYS)
        if "error" in r:
            continue
        check(f"results[{k}]", r, {key: ((int, float) if kind is float else kind, key in ("median_s", "throughput"))
                                   for key, kind in MEASURED_KEYS.items()})
        if r.get("workload") not in WORKLOADS:
            found.append(f"results[{k}]: unknown workload {r.get('workload')!r}")
    return found


def _from_pytest_benchmark(data: dict) -> dict:
    results = []
    for bench in data["benchmarks"]:
        record = {key: value for key, value in bench.get("extra_info", {}).items() if key != "limits"}
        if "workload" in record and bench.get("stats"):
            results.append({**record, "median_s": bench["stats"]["median"], "repeats": bench["stats"]["rounds"]})
    limits = {(b["extra_info"]["device"], b["extra_info"]["dtype"]): b["extra_info"]["limits"]
              for b in data["benchmarks"] if "limits" in b.get("extra_info", {})}
    numbers = [("median", r["median_s"]) for r in results] + [
        (key, lim[key]) for lim in limits.values() for key in ("matmul_flops", "copy_bandwidth") if key in lim]
    for name, value in numbers:  # `finish` divides by them
        if not _positive(value):
            raise ValueError(f"a {name} of {value!r}, not a finite number above 0")
    for r in results:
        finish(r, limits.get((r["device"], r["dtype"])))
    add_ratios(results)
    info = data.get("machine_info", {})
    return {"schema": SCHEMA, "moonxp": str(results[0].get("moonxp", "")) if results else "",
            "date": data.get("datetime", ""), "machine": {"cpu": info.get("cpu", {}).get("brand_raw", ""),
                                                          "system": info.get("system", "")},
            "versions": {}, "matmul_precision": str(results[0].get("matmul_precision", "")) if results else "",
            "limits": [{"device": d, "dtype": t, **lim} for (d, t), lim in limits.items()],
            "results": results}


def upgrade(data: dict) -> dict:
    """A report of the current schema from any JSON that `load` reads (see the module's docstring)."""
    if isinstance(data, dict) and isinstance(data.get("benchmarks"), list):
        return _from_pytest_benchmark(data)
    if not isinstance(data, dict) or "schema" in data or not isinstance(data.get("results"), list):
        return data
    # schema 1: no roofline throughput stored, but "% of limit" of it
    results = [dict(r) if isinstance(r, dict) else r for r in data["results"]]
    for r in results:
        if isinstance(r, dict) and r.get("percent_of_limit") and "throughput" in r:
            r["roofline"] = 100 * r["throughput"] / r["percent_of_limit"]
    return {**data, "schema": SCHEMA, "results": results}


def load(path: str | Path) -> dict:
    """Read a benchmark JSON file (any format `upgrade` knows) as a report of the current schema.

    Raises
    ------
    InvalidInputError
        When the file is missing, not JSON, or not a benchmark report.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidInputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{str(path)!r} is not JSON ({exc}): give a file from moonxp bench --json") from exc
    except RecursionError as exc:  # nested deeper than Python's stack
        raise InvalidInputError(f"{str(path)!r} is JSON nested too deeply for a benchmark report: give a file "
                                f"from moonxp bench --json") from exc
    try:
        report = upgrade(data)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise InvalidInputError(f"{str(path)!r} is not a benchmark JSON this moonxp reads ({type(exc).__name__}: "
                                f"{exc}): give a file from moonxp bench --json") from exc
    found = problems(report)
    if found:
        raise InvalidInputError(f"{str(path)!r} is not a moonxp bench JSON ({found[0]}): give a file from "
                                f"moonxp bench --json or pytest bench --benchmark-json")
    return report
