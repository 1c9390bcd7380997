"""`python -m moonxp bench`: time the workloads on a device, against its measured limits and peers.

For each workload, size and dtype, moonxp and every installed peer run the
same problem (`cases.for_run`); times are medians after a warm-up call, with the
device synchronized before the clock is read (`limits.median_time`). Each
backend's cases run in a fresh process (`worker`), one backend after another.
Each result is then reported as a share of the device's roofline (`limits`)
and as a ratio to the best peer of the same run. `bench show` and `bench
compare` read saved runs back.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, TextIO

from .. import __version__
from ..app.model import BenchConfig
from ..errors import InvalidInputError
from ..environment import machine, versions
from ..outputs import output_directory, writable, write_bytes, write_figure, write_json
from . import compare, results as res
from .cases import Case, for_run
from .workloads import WORKLOADS
from .worker import ENVIRONMENT, MATMUL_PRECISION, TIMING, run

EXIT_ALL_FAILED = 1


def _groups(todo: list[Case]) -> dict:
    """Case indices by (backend, device), in order of first appearance: one worker process each."""
    groups: dict = {}
    for k, case in enumerate(todo):
        groups.setdefault((case.backend, case.device), []).append(k)
    return groups


def _in_subprocess(request: dict) -> Iterator[dict]:
    """`worker.run(request)` in a fresh Python process: its messages, then {"exit": code}."""
    source = str(Path(__file__).resolve().parents[2])  # this moonxp, not another one on the path
    env = {**os.environ, **ENVIRONMENT,
           "PYTHONPATH": os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))}
    with subprocess.Popen([sys.executable, "-m", "moonxp.benchmark.worker"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env) as worker:
        worker.stdin.write(json.dumps(request))
        worker.stdin.close()
        for line in worker.stdout:
            try:
                yield json.loads(line)
            except ValueError:  # a library printed to stdout: pass it on
                yield {"say": line}
    yield {"exit": worker.returncode}


def measure_all(todo: list[Case], mode: str, isolate: bool, stderr: TextIO,
                after_each: Callable[[list, dict], None] | None = None) -> tuple[list[dict | None], dict]:
    """Time every case, one backend at a time; (results in `todo`'s order, None where unusable; limits).

    The first backend on each device also measures its limits, in every dtype of the run.
    `after_each(results, limits)` is called after each case and each backend (to save what is done so far).
    """
    results: list[dict | None] = [None] * len(todo)
    limits: dict = {}
    done = 0
    for (backend, device), indices in _groups(todo).items():
        wanted = [[device, dtype, mode] for dtype in dict.fromkeys(c.dtype for c in todo if c.device == device)
                  if (device, dtype) not in limits]
        request = {"cases": [todo[k].spec() for k in indices], "timing": TIMING[mode], "limits": wanted}
        usable = True
        for message in (_in_subprocess if isolate else run)(request):
            if "say" in message:
                stderr.write(message["say"])
            elif message.get("usable") is False:
                usable = False
                stderr.write(f"skipped: {backend} does not run on {device} here "
                             f"({', '.join(dict.fromkeys(todo[k].label for k in indices))})\n")
            elif "limits" in message:
                lim = message["limits"]
                limits[lim.pop("device"), lim.pop("dtype")] = lim
            elif "result" in message:
                k = indices[message["index"]]
                results[k] = r = message["result"]
                done += 1
                stderr.write(f"[{done}/{len(todo)}] {r['workload']} {r['size_label']} {r['dtype']} "
                             f"{r['implementation']} on {r['device']}: "
                             + (f"{r['median_s'] * 1e3:.2f} ms\n" if "median_s" in r else f"failed: {r['error']}\n"))
                stderr.flush()
                if after_each is not None:
                    after_each(results, limits)
            elif message.get("exit"):  # the worker died (killed for memory, say): its other cases failed
                for k in indices:
                    if results[k] is None:
                        results[k] = {**todo[k].record(), "error": f"worker process exited with code "
                                                                   f"{message['exit']}"}
        if not usable:
            for k in indices:
                results[k] = None
        if after_each is not None:
            after_each(results, limits)
    return results, limits


def table(results: list[dict], limits: dict) -> str:
    """One text table per device."""
    lines = []
    for device in dict.fromkeys(r["device"] for r in results):
        marks = ", ".join(f"{dtype}: matmul {res.si(lim['matmul_flops'])}FLOP/s, copy "
                          f"{res.si(lim['copy_bandwidth'])}B/s" if "matmul_flops" in lim
                          else f"{dtype}: limits failed ({lim.get('error')})"
                          for (dev, dtype), lim in sorted(limits.items()) if dev == device)
        lines += ["", f"== {device} | {marks}",
                  f"{'workload':14} {'size':>11} {'dtype':8} {'implementation':22} {'median':>10} "
                  f"{'throughput':>28} {'% limit':>8} {'vs peer':>8}"]
        for r in (r for r in results if r["device"] == device):
            head = f"{r['workload']:14} {r['size_label']:>11} {r['dtype']:8} {r['implementation']:22}"
            if "error" in r:
                lines.append(f"{head} failed: {r['error']}")
                continue
            ratio = f"{r['ratio_to_best_peer']:.2f}x" if "ratio_to_best_peer" in r else ""
            share = f"{r['percent_of_limit']:7.2f}%" if "percent_of_limit" in r else f"{'-':>8}"
            lines.append(f"{head} {r['median_s'] * 1e3:8.2f}ms {res.si(r['throughput']) + r['unit']:>28} "
                         f"{share} {ratio:>8}")
    return "\n".join(lines) + "\n"


def _checked(path: str | None, option: str) -> Path | None:
    """`path` (given as `option`) as a Path, once it is known to be writable: fail now, not after the measurements."""
    if path is None:
        return None
    output_directory(Path(path).parent, option)
    writable(path, option)
    return Path(path)


def _limits_by_key(report: dict) -> dict:
    return {(lim["device"], lim["dtype"]): lim for lim in report["limits"]}


def _report(todo: list[Case], timed: list[dict | None], limits: dict, in_process: bool, complete: bool) -> dict:
    """The run's JSON report: post-processed results (table order), limits, machine and versions."""
    found = [res.finish(r, limits.get((r["device"], r["dtype"]))) for r in timed if r is not None]
    order = {name: k for k, name in enumerate(WORKLOADS)}
    found.sort(key=lambda r: (r["device"] != todo[0].device, order[r["workload"]], r["dtype"], r["size"]))
    res.add_ratios(found)
    return {"schema": res.SCHEMA, "moonxp": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(), "machine": machine(),
            "versions": {name: versions(name) for name in dict.fromkeys(r["backend"] for r in found)},
            "matmul_precision": f"{MATMUL_PRECISION} (float32 matmuls in FP32, no TF32, in every library)",
            "isolation": "one process" if in_process else "one process per backend", "complete": complete,
            "limits": [{"device": d, "dtype": t, **lim} for (d, t), lim in limits.items()], "results": found}


def _run(config: BenchConfig, stdout: TextIO, stderr: TextIO) -> int:
    mode = config.sizes
    os.environ.update(ENVIRONMENT)  # before any backend is imported here, too
    json_path, plot_path = _checked(config.json, "--json"), _checked(config.plot, "--plot")
    table_path = _checked(config.table, "--table")
    todo = for_run(config.device, config.backend, mode)

    def save_so_far(timed: list, limits: dict) -> None:  # a run cut short still leaves its JSON and table
        report = _report(todo, timed, limits, config.in_process, complete=False)
        if json_path is not None:
            write_json(json_path, report, "--json")
        if table_path is not None:
            so_far = table(report["results"], limits) + "(incomplete: the run goes on)\n"
            write_bytes(table_path, so_far.encode(), "--table")

    timed, limits = measure_all(todo, mode, not config.in_process, stderr, save_so_far)
    report = _report(todo, timed, limits, config.in_process, complete=True)
    found = report["results"]
    stdout.write(f"matmul precision: {report['matmul_precision']}\n" + table(found, limits))
    if table_path is not None:
        write_bytes(table_path, table(found, limits).encode(), "--table")
    if json_path is not None:
        write_json(json_path, report, "--json")
        stdout.write(f"wrote {json_path}\n")
    if plot_path is not None:
        _plot(plot_path, report, stdout)
    failed = sum("error" in r for r in found)
    if failed:
        stderr.write(f"moonxp bench: {failed} of {len(found)} measurements failed (see the table)\n")
    return 0 if failed < len(found) else EXIT_ALL_FAILED


def _plot(path: Path, report: dict, stdout: TextIO) -> None:
    from . import charts
    write_figure(path, charts.throughput(report), dpi=110, option="--plot")
    stdout.write(f"wrote {path}\n")


def _show(config: BenchConfig, stdout: TextIO) -> int:
    plot_path = _checked(config.plot, "--plot")
    report = res.load(config.results[0])
    stdout.write(f"{config.results[0]}: {compare.describe(report)}; matmul precision: "
                 f"{report.get('matmul_precision', 'not recorded')}\n")
    stdout.write(table(report["results"], _limits_by_key(report)))
    if plot_path is not None:
        _plot(plot_path, report, stdout)
    return 0


def _compare(config: BenchConfig, stdout: TextIO) -> int:
    if len(config.results) < 2:
        raise InvalidInputError("bench compare needs two or more result files: moonxp bench compare A.json B.json")
    plot_path = _checked(config.plot, "--plot")
    reports = [res.load(path) for path in config.results]
    rows = compare.ratios(reports)
    stdout.write(compare.table(config.results, reports, rows))
    if plot_path is not None:
        from . import charts
        write_figure(plot_path, charts.ratios(config.results, reports, rows), dpi=110, option="--plot")
        stdout.write(f"wrote {plot_path}\n")
    return 0


def main(config: BenchConfig, stdout: TextIO, stderr: TextIO) -> int:
    """`moonxp bench` (run), `bench show FILE` or `bench compare A B ...`; returns the exit code.

    Raises
    ------
    MoonxpError
        On an unusable device/backend, an unwritable output or an unreadable results file.
    """
    if config.command == "show":
        return _show(config, stdout)
    if config.command == "compare":
        return _compare(config, stdout)
    return _run(config, stdout, stderr)
