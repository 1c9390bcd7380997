"""The benchmark cases (see conftest.py), and in the smoke run the checks that they compute the right thing."""

from __future__ import annotations

import functools
import io
import json

import numpy as np

from moonxp import resolve, synchronize, to_host
from moonxp.app.cli import main
from moonxp.benchmark import cases, results
from moonxp.benchmark.worker import MATMUL_PRECISION, fair_precision
from moonxp.benchmark.workloads import WORKLOADS, make_call, output_arrays
from moonxp.engine import processes
from moonxp.environment import cores, machine, versions

ROUNDS = 3
# largest error, relative to the largest reference value, of a result computed in each dtype
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


@functools.lru_cache(maxsize=None)
def reference(workload: str, size: int) -> tuple:
    """The NumPy float64 result of a problem: moonxp's eager path on NumPy, in float64."""
    call = make_call(WORKLOADS[workload], size, resolve("cpu", "numpy", "float64"))
    return tuple(np.asarray(a) for a in output_arrays(WORKLOADS[workload], call()))


def test_workload(benchmark, case, limits, mode):
    fair_precision(case.backend)  # before resolving: JAX's float64 cases need its x64 mode
    backend = resolve(case.device, case.backend, case.dtype)
    call = make_call(case.workload, case.size, backend, case.implementation, case.compile)

    def timed():
        result = call()
        synchronize(result)
        return result

    if case.backend == "numpy":
        processes.start(cores() - 1)  # as `moonxp bench` times NumPy
    result = benchmark.pedantic(timed, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    record = {**case.record(), "backend_version": backend.version, "machine": machine(),
              "versions": versions(case.backend), "matmul_precision": MATMUL_PRECISION}
    if benchmark.stats is not None:
        record["median_s"] = benchmark.stats.stats.median
        record["limits"] = lim = limits(case.device, case.dtype)
        results.finish(record, lim)
    benchmark.extra_info.update(record)
    if mode == "smoke":
        expected = reference(case.workload.name, case.size)
        for got, want in zip(output_arrays(case.workload, result), expected, strict=True):
            got = to_host(got).astype(np.float64)
            assert got.shape == want.shape
            error = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-300)
            assert error <= TOLERANCE[case.dtype], f"{case.id}: relative error {error:.2e}"


def test_bench_json_follows_the_schema(tmp_path):
    """`moonxp bench --json` at the smoke sizes, one process per backend: every usable case, schema-valid."""
    path = tmp_path / "bench.json"
    out, err = io.StringIO(), io.StringIO()
    assert main(["bench", "--sizes", "smoke", "--json", str(path)], stdout=out, stderr=err) == 0, err.getvalue()
    report = json.loads(path.read_text())
    assert results.problems(report) == []
    assert report["schema"] == results.SCHEMA and report["isolation"] == "one process per backend"
    expected = {(c.workload.name, c.size, c.dtype, c.label) for c in cases.for_run("cpu", None, "smoke")
                if cases.usable(c.device, c.backend)}
    assert {(r["workload"], r["size"], r["dtype"], r["implementation"]) for r in report["results"]} == expected
    for r in report["results"]:
        assert "error" not in r, r
        items = WORKLOADS[r["workload"]].items(r["size"])
        assert np.isclose(r["throughput"], items / r["median_s"])
        assert np.isclose(r["percent_of_limit"], 100 * r["throughput"] / r["roofline"])
    assert {(lim["device"], lim["dtype"]) for lim in report["limits"]} == {("cpu", "float32"), ("cpu", "float64")}
