"""`python -m moonxp bench`: time the workloads on a device, against its measured limits and peers.

For each workload, size and dtype, moonxp and every installed peer run the
same problem; times are medians after a warm-up call, with the device
synchronized before the clock is read. Each result is reported as a share of
the device's roofline (`limits`) and as a ratio to the best peer of the same
run.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .. import __version__
from ..engine.backend import resolve
from ..environment import machine, versions
from ..errors import MoonxpError, OutputError
from ..outputs import output_directory, write_json
from .limits import measure, median_time, roofline
from .peers import PEERS
from .workloads import WORKLOADS, Workload, make_call

DTYPES = ("float32", "float64")
QUICK_DTYPES = ("float32",)
EXIT_ALL_FAILED = 1
MAX_SECONDS = 6.0  # a slow peer stops repeating after this long (at least one timed call)


@dataclass(frozen=True)
class Case:
    """One measurement: a workload at a size and dtype, by one implementation on one backend."""

    workload: Workload
    size: int
    dtype: str
    implementation: str        # "moonxp" or a peer's name
    backend: str
    device: str
    compile: bool | None = None

    @property
    def label(self) -> str:
        if self.implementation != "moonxp":
            return self.implementation
        return "moonxp" + {None: "", True: "+compile", False: " eager"}[self.compile] + f" ({self.backend})"


def cases(device: str, backend: str | None, quick: bool) -> list[Case]:
    """Every measurement of a run: moonxp on the chosen backend, peers usable on the same device."""
    gpu = device.startswith("cuda")
    chosen = resolve(device, backend, "float32").name
    # eager and compiled side by side where the backend has a compiler
    implementations = {"torch": [("moonxp", chosen, False), ("moonxp", chosen, True)],
                       "jax": [("moonxp", chosen, True), ("moonxp", chosen, False)]}.get(chosen, [("moonxp", chosen, None)])
    if gpu:
        implementations.append(("moonxp", "numpy", None))  # the CPU baseline, in the same run
    implementations += [(peer.name, peer.backend, None) for peer in PEERS.values()
                        if (peer.backend == "numpy" and not gpu) or _usable(device, peer.backend)]
    mode = ("quick-gpu" if gpu else "quick") if quick else ("gpu" if gpu else "cpu")
    out = []
    for workload in WORKLOADS.values():
        sizes = workload.sizes[mode]
        for dtype in ("float64",) if workload.name == "homework" else QUICK_DTYPES if quick else DTYPES:
            for size in sizes:
                for impl, name, compile in implementations:
                    on_cpu = name == "numpy"
                    if on_cpu and gpu and size != sizes[0]:
                        continue  # the CPU baseline runs the smallest GPU size only
                    out.append(Case(workload, size, dtype, impl, name, "cpu" if on_cpu else device, compile))
    return out


def _usable(device: str, backend: str) -> bool:
    try:
        resolve(device, backend, "float32")
        return True
    except MoonxpError:
        return False


def run_case(case: Case, limits: dict) -> dict:
    """Measure one case; the result is a JSON-ready dict (with "error" if it failed).

    `limits` caches each (device, dtype)'s measured limits, taken with the first backend run there.
    """
    key = (case.device, case.dtype)
    result = {"workload": case.workload.name, "size": case.size,
              "size_label": case.workload.size_label.format(case.size), "dtype": case.dtype,
              "implementation": case.label, "backend": case.backend, "device": case.device, "unit": case.workload.unit}
    try:
        backend = resolve(case.device, case.backend, case.dtype)
        result["backend_version"] = backend.version
        if key not in limits:  # the first backend measured on a device measures its limits
            limits[key] = measure(backend, quick=True)
        call = make_call(case.workload, case.size, backend, case.implementation, case.compile)
        seconds, repeats = median_time(call, min_repeats=3, min_seconds=1.0, max_seconds=MAX_SECONDS)
    except Exception as exc:  # a peer out of memory, say: report it, keep going
        return {**result, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    workload = case.workload
    throughput = workload.items(case.size) / seconds
    itemsize = 4 if case.dtype == "float32" else 8
    bound = roofline(limits[key], workload.flops_per_item, workload.bytes_per_item(itemsize))
    return {**result, "median_s": seconds, "repeats": repeats, "throughput": throughput,
            "flops_per_s": throughput * workload.flops_per_item, "percent_of_limit": 100 * throughput / bound}


def add_ratios(results: list[dict]) -> None:
    """Give each moonxp result its ratio to the best peer measured on the same problem and device."""
    for r in results:
        if not r["implementation"].startswith("moonxp") or "throughput" not in r:
            continue
        peers = [p["throughput"] for p in results if "throughput" in p and not p["implementation"].startswith("moonxp")
                 and (p["workload"], p["size"], p["dtype"], p["device"]) == (r["workload"], r["size"], r["dtype"],
                                                                            r["device"])]
        if peers:
            r["ratio_to_best_peer"] = r["throughput"] / max(peers)


def _si(value: float) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:.3g} "


def table(results: list[dict], limits: dict) -> str:
    """One text table per device."""
    lines = []
    for device in dict.fromkeys(r["device"] for r in results):
        marks = ", ".join(f"{dtype}: matmul {_si(lim['matmul_flops'])}FLOP/s, copy {_si(lim['copy_bandwidth'])}B/s"
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
            lines.append(f"{head} {r['median_s'] * 1e3:8.2f}ms {_si(r['throughput']) + r['unit']:>28} "
                         f"{r['percent_of_limit']:7.2f}% {ratio:>8}")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run the benchmark for `args.device`/`args.backend` (`--quick` for small sizes); print, and write JSON."""
    path = Path(args.json) if args.json else None
    if path is not None:  # fail now, not after the measurements
        if path.is_dir():
            raise OutputError(f"--json {str(path)!r} is a directory: give a file name")
        output_directory(path.parent, option="--json")
    todo = cases(args.device, args.backend, args.quick)
    limits: dict = {}
    results = []
    for k, case in enumerate(todo, 1):
        stderr.write(f"[{k}/{len(todo)}] {case.workload.name} {case.workload.size_label.format(case.size)} "
                     f"{case.dtype} {case.label} on {case.device} ...")
        stderr.flush()
        results.append(run_case(case, limits))
        r = results[-1]
        stderr.write(f" {r['median_s'] * 1e3:.2f} ms\n" if "median_s" in r else f" failed: {r['error']}\n")
    add_ratios(results)
    stdout.write(table(results, limits))
    if path is not None:
        report = {"moonxp": __version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                  "machine": machine(), "versions": {name: versions(name) for name in {c.backend for c in todo}},
                  "limits": [{"device": d, "dtype": t, **lim} for (d, t), lim in limits.items()],
                  "results": results}
        write_json(path, report, option="--json")
        stdout.write(f"wrote {path}\n")
    failed = sum("error" in r for r in results)
    if failed:
        stderr.write(f"moonxp bench: {failed} of {len(results)} measurements failed (see the table)\n")
    return 0 if failed < len(results) else EXIT_ALL_FAILED
