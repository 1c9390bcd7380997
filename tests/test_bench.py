"""The benchmark engine: which cases run, what a result holds, the table and the JSON."""

import functools
import importlib.util
import io
import json

import pytest

import moonxp
from moonxp.benchmark import limits, runner as bench
from moonxp.app.cli import main
from moonxp.benchmark.workloads import WORKLOADS


@pytest.fixture
def smoke_sizes(monkeypatch):
    """`--quick` with the smoke sizes and short timing, so a whole run takes seconds."""
    for workload in WORKLOADS.values():
        monkeypatch.setitem(workload.sizes, "quick", workload.sizes["smoke"])
    monkeypatch.setattr(bench, "median_time", functools.partial(limits.median_time, max_repeats=3))
    monkeypatch.setattr(bench, "measure", lambda backend, quick: {"matmul_flops": 1e10, "copy_bandwidth": 1e9,
                                                                  "matmul_n": 1, "copy_bytes": 1})


def test_cases_put_moonxp_beside_every_usable_peer():
    cases = bench.cases("cpu", None, quick=True)
    labels = {c.label for c in cases}
    assert "moonxp (numpy)" in labels and "numpy-homework" in labels
    for peer, module in (("torch-eager", "torch"), ("jax-jit", "jax")):
        assert (peer in labels) == (importlib.util.find_spec(module) is not None)
    assert {c.workload.name for c in cases} == set(WORKLOADS)
    homework = [c for c in cases if c.workload.name == "homework"]
    assert {c.dtype for c in homework} == {"float64"}


def test_cases_show_eager_and_compiled_side_by_side():
    pytest.importorskip("torch")
    labels = {c.label for c in bench.cases("cpu", "torch", quick=True)}
    assert {"moonxp eager (torch)", "moonxp+compile (torch)"} <= labels


def test_bench_refuses_a_device_it_cannot_use():
    with pytest.raises(moonxp.MoonxpError):
        bench.cases("cuda:7", "numpy", quick=True)


def test_run_case_reports_throughput_share_of_limit_and_ratio(smoke_sizes):
    grid = WORKLOADS["grid-eval"]
    results = [bench.run_case(bench.Case(grid, 64, "float32", impl, "numpy", "cpu"), {})
               for impl in ("moonxp", "numpy-homework")]
    bench.add_ratios(results)
    ours, peer = results
    assert ours["unit"] == "points/s" and ours["size_label"] == "64x64"
    assert ours["throughput"] == pytest.approx(64 * 64 / ours["median_s"])
    # roofline: min(1e10 / (6 H), 1e9 / 4) points/s with the fake limits above
    bound = min(1e10 / (6 * 50), 1e9 / 4)
    assert ours["percent_of_limit"] == pytest.approx(100 * ours["throughput"] / bound)
    assert ours["ratio_to_best_peer"] == pytest.approx(ours["throughput"] / peer["throughput"])
    assert "ratio_to_best_peer" not in peer


def test_a_failing_case_is_reported_and_the_run_goes_on(smoke_sizes, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory\nmore detail")
    monkeypatch.setattr(bench, "make_call", broken)
    result = bench.run_case(bench.Case(WORKLOADS["homework"], 100, "float64", "moonxp", "numpy", "cpu"), {})
    assert result["error"] == "RuntimeError: CUDA out of memory"
    assert "failed: RuntimeError" in bench.table([result], {})


def test_bench_command_prints_a_table_and_writes_json(smoke_sizes, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    path = tmp_path / "sub" / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)], stdout=out, stderr=err) == 0
    table = out.getvalue()
    assert "== cpu" in table and "moonxp (numpy)" in table and "% limit" in table
    assert "[1/" in err.getvalue()  # progress, one line per case
    data = json.loads(path.read_text())
    assert data["machine"]["cores"] >= 1 and data["moonxp"] == moonxp.__version__
    assert {r["workload"] for r in data["results"]} == set(WORKLOADS)
    assert all("throughput" in r or "error" in r for r in data["results"])
    assert {(lim["device"], lim["dtype"]) for lim in data["limits"]} == {("cpu", "float32"), ("cpu", "float64")}


def test_bench_json_path_is_checked_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = io.StringIO()
    assert main(["bench", "--quick", "--json", str(blocker / "bench.json")], stdout=io.StringIO(), stderr=err) == 2
    assert "[1/" not in err.getvalue() and "error" in err.getvalue()


def test_limits_are_measured_and_roofline_takes_the_lower_bound():
    backend = moonxp.resolve("cpu", "numpy", "float32")
    lim = limits.measure(backend, quick=True)
    assert lim["matmul_flops"] > 1e8 and lim["copy_bandwidth"] > 1e8
    assert limits.roofline({"matmul_flops": 100.0, "copy_bandwidth": 10.0}, 10.0, 1.0) == 10.0
    assert limits.roofline({"matmul_flops": 100.0, "copy_bandwidth": 10.0}, 1.0, 10.0) == 1.0


def test_median_time_excludes_the_warm_up_and_respects_its_bounds():
    calls = []
    seconds, repeats = limits.median_time(lambda: calls.append(1), min_repeats=4, min_seconds=0.0)
    assert repeats == 4 and len(calls) == 5 and seconds >= 0
    _, repeats = limits.median_time(lambda: None, min_repeats=3, min_seconds=10.0, max_repeats=7)
    assert repeats == 7
