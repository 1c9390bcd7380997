"""The benchmark cases: see conftest.py for how to run them and what each case is."""

from __future__ import annotations

from moonxp.environment import machine
from moonxp.benchmark.limits import roofline
from moonxp import resolve, synchronize
from moonxp.environment import versions
from moonxp.benchmark.workloads import WORKLOADS, make_call


def test_workload(benchmark, case, limits):
    name, size, dtype, implementation, backend_name, device, compile = case
    workload = WORKLOADS[name]
    backend = resolve(device, backend_name, dtype)
    call = make_call(workload, size, backend, implementation, compile)

    def timed():
        synchronize(call())

    benchmark.pedantic(timed, rounds=3, warmup_rounds=1, iterations=1)
    benchmark.extra_info.update({"workload": name, "size": size, "dtype": dtype, "implementation": implementation,
                                 "compile": compile,
                                 "backend": backend_name, "device": backend.device_name,
                                 "machine": machine(), "versions": versions(backend_name), "unit": workload.unit})
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        lim = limits(device, dtype)
        throughput = workload.items(size) / median
        bound = roofline(lim, workload.flops_per_item, workload.bytes_per_item(4 if dtype == "float32" else 8))
        benchmark.extra_info.update({"throughput": throughput, "percent_of_limit": 100 * throughput / bound,
                                     "limits": lim})
