"""The benchmark engine: which cases run, what a result holds, workers, the table, the JSON, show and compare."""

import dataclasses
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

import moonxp
from moonxp.app.cli import main
from moonxp.benchmark import cases, charts, compare, limits, results, runner, worker
from moonxp.benchmark.workloads import WORKLOADS, Workload, host_problem, make_call
from moonxp.defaults import HIDDEN, ITERS, SAMPLES

COMMITTED = sorted((Path(__file__).parents[1] / "bench" / "results").glob("*.json"))
FAKE_LIMITS = {"matmul_flops": 1e10, "copy_bandwidth": 1e9, "matmul_n": 1, "copy_bytes": 1, "launches": 1}


@pytest.fixture
def numpy_only(monkeypatch):
    """Runs with moonxp and the plain-NumPy peer only, and fake limits, so a whole run takes a second."""
    kept = tuple(i for i in cases.IMPLEMENTATIONS if i.key in ("moonxp-numpy", "numpy-homework"))
    monkeypatch.setattr(cases, "IMPLEMENTATIONS", kept)
    monkeypatch.setattr(worker, "measure", lambda backend, mode: dict(FAKE_LIMITS))


def _case(workload="grid-eval", size=64, dtype="float32", implementation="moonxp", backend="numpy"):
    return cases.Case(WORKLOADS[workload], size, dtype, implementation, backend, "cpu")


# ---- the cases

def test_a_run_puts_moonxp_beside_every_peer_of_its_device():
    todo = cases.for_run("cpu", None, "quick")
    labels = {c.label for c in todo}
    assert labels == {"moonxp (numpy)", "numpy-homework", "torch-eager", "jax-jit"}
    assert {c.workload.name for c in todo} == set(WORKLOADS)
    assert {c.dtype for c in todo if c.workload.name == "homework"} == {"float64"}
    assert {c.dtype for c in todo if c.workload.name != "homework"} == {"float32"}  # --quick
    assert {c.size for c in todo if c.workload.name == "grid-eval"} == set(WORKLOADS["grid-eval"].sizes["cpu"]["quick"])


def test_a_run_shows_eager_and_compiled_side_by_side():
    pytest.importorskip("torch")
    labels = {c.label for c in cases.for_run("cpu", "torch", "smoke")}
    assert {"moonxp eager (torch)", "moonxp+compile (torch)"} <= labels and "moonxp (numpy)" not in labels


def test_a_gpu_run_adds_the_numpy_baseline_at_the_smallest_gpu_size(monkeypatch):
    monkeypatch.setattr(cases, "resolve", lambda device, backend, dtype: type("B", (), {"name": "cupy"}))
    todo = cases.for_run("cuda:1", None, "quick")
    on_gpu = [c for c in todo if c.device == "cuda:1"]
    assert {c.label for c in on_gpu} == {"moonxp eager (cupy)", "torch-eager", "jax-jit"}  # quick: no torch.compile
    baseline = [c for c in todo if c.device == "cpu"]
    assert {c.label for c in baseline} == {"moonxp (numpy)"}
    assert {(c.workload.name, c.size) for c in baseline} == {
        (w.name, w.sizes["cuda"]["quick"][0]) for w in WORKLOADS.values()}


def test_a_run_refuses_a_device_it_cannot_use():
    with pytest.raises(moonxp.MoonxpError):
        cases.for_run("cuda:7", "numpy", "quick")


def test_the_suite_lists_every_implementation_with_its_device_sizes():
    suite = cases.suite("full")
    assert {c.key for c in suite} == {i.key for i in cases.IMPLEMENTATIONS}
    assert len({c.id for c in suite}) == len(suite)
    for c in suite:
        assert c.size in c.workload.sizes[c.device]["full"]


def test_usability_is_one_check():
    assert cases.usable("cpu", "numpy")
    assert not cases.usable("cuda", "numpy")
    assert cases.usable("cpu", "torch") == (importlib.util.find_spec("torch") is not None)


def test_a_case_survives_the_trip_to_a_worker():
    case = dataclasses.replace(_case(), compile=True, key="k")
    assert cases.Case.from_spec(json.loads(json.dumps(case.spec()))) == case


# ---- the workloads count work from their own sizes

@pytest.mark.parametrize("size", [100, 37])
def test_workload_counts_follow_the_size(size):
    H, G = HIDDEN, 15 * HIDDEN
    homework, grid = WORKLOADS["homework"], WORKLOADS["grid-eval"]
    batched, large = WORKLOADS["train-batched"], WORKLOADS["train-large"]
    assert (homework.items(size), homework.flops_per_item(size)) == (1, (ITERS + 1) * size * G)
    assert (grid.items(size), grid.flops_per_item(size), grid.bytes_per_item(4)) == (size * size, 6 * H, 4)
    assert (batched.items(size), batched.flops_per_item(size)) == (size * ITERS, SAMPLES * G)
    assert (large.items(size), large.flops_per_item(size), large.bytes_per_item(8)) == (size * 32, G, 24)


def test_a_new_workload_needs_no_code_that_knows_its_name():
    w = Workload("ensemble-wide", "network-iterations/s", "B={}", {}, "networks", "network-iteration",
                 iters=3, hidden=7)
    params, X, T = host_problem(w, 5)
    assert params.W.shape == (5, 2, 7) and X.shape == (SAMPLES, 2)
    (W, b, v), errors = make_call(w, 5, moonxp.resolve("cpu", "numpy", "float64"))()
    assert W.shape == (5, 2, 7) and errors.shape == (5, 4)
    assert w.flops_per_item(5) == SAMPLES * 15 * 7


# ---- timing, limits, post-processing

def test_median_time_excludes_the_warm_up_and_respects_its_bounds():
    calls = []
    seconds, repeats = limits.median_time(lambda: calls.append(1), min_repeats=4, min_seconds=0.0)
    assert repeats == 4 and len(calls) == 5 and seconds >= 0
    _, repeats = limits.median_time(lambda: None, min_repeats=3, min_seconds=10.0, max_repeats=7)
    assert repeats == 7


def test_limits_are_measured_on_random_data_and_the_roofline_takes_the_lower_bound(monkeypatch):
    seen = []
    real = limits.median_time
    monkeypatch.setattr(limits, "median_time", lambda call, **kw: (seen.append(call), real(call, **kw))[1])
    lim = limits.measure(moonxp.resolve("cpu", "numpy", "float32"), "smoke")
    assert lim["matmul_flops"] > 1e6 and lim["copy_bandwidth"] > 1e6 and lim["matmul_n"] == 256
    product = seen[0]()  # a @ a of random data: not the constant a ones matrix would give
    assert np.ptp(product) > 0
    assert limits.roofline({"matmul_flops": 100.0, "copy_bandwidth": 10.0}, 10.0, 1.0) == 10.0
    assert limits.roofline({"matmul_flops": 100.0, "copy_bandwidth": 10.0}, 1.0, 10.0) == 1.0


def test_gpu_limits_sync_once_per_several_launches():
    calls = []
    call = limits._repeated(lambda: calls.append(1) or len(calls), limits.LAUNCHES["cuda"])
    assert call() == limits.LAUNCHES["cuda"] > 1 and len(calls) == limits.LAUNCHES["cuda"]


def test_finish_adds_throughput_roofline_and_ratio():
    ours = results.finish({**_case().record(), "median_s": 0.01}, FAKE_LIMITS)
    peer = results.finish({**_case(implementation="numpy-homework").record(), "median_s": 0.02}, FAKE_LIMITS)
    results.add_ratios([ours, peer])
    assert ours["unit"] == "points/s" and ours["size_label"] == "64x64"
    assert ours["throughput"] == pytest.approx(64 * 64 / 0.01)
    bound = min(1e10 / (6 * HIDDEN), 1e9 / 4)  # roofline with the fake limits
    assert ours["roofline"] == pytest.approx(bound)
    assert ours["percent_of_limit"] == pytest.approx(100 * ours["throughput"] / bound)
    assert ours["ratio_to_best_peer"] == pytest.approx(2.0) and "ratio_to_best_peer" not in peer
    failed = results.finish({**_case().record(), "error": "X: y"}, FAKE_LIMITS)
    assert "throughput" not in failed


# ---- workers

def test_a_worker_times_cases_and_measures_limits(numpy_only):
    request = {"cases": [_case().spec(), _case(size=32, dtype="float64").spec()],
               "timing": worker.TIMING["smoke"], "limits": [["cpu", "float32", "smoke"]]}
    messages = list(worker.run(request))
    assert messages[0] == {"limits": {"device": "cpu", "dtype": "float32", **FAKE_LIMITS}}
    assert [m["index"] for m in messages[1:]] == [0, 1]
    assert all(m["result"]["repeats"] == 1 and m["result"]["median_s"] > 0 for m in messages[1:])


def test_a_worker_says_when_its_backend_is_unusable():
    spec = dataclasses.replace(_case(backend="cupy"), device="cuda").spec()
    assert list(worker.run({"cases": [spec], "timing": {}})) == [{"usable": False}]


def test_a_failing_case_is_reported_and_the_run_goes_on(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory\nmore detail")
    monkeypatch.setattr(worker, "make_call", broken)
    result = worker.time_case(_case("homework", 100, "float64"), worker.TIMING["smoke"])
    assert result["error"] == "RuntimeError: CUDA out of memory"
    assert "failed: RuntimeError" in runner.table([result], {})


@pytest.mark.slow  # starts a Python process
def test_a_worker_runs_in_a_fresh_process():
    request = {"cases": [_case().spec()], "timing": worker.TIMING["smoke"], "limits": []}
    messages = list(runner._in_subprocess(request))
    assert messages[-1] == {"exit": 0}
    assert messages[0]["index"] == 0 and messages[0]["result"]["median_s"] > 0


def test_a_dead_worker_fails_its_remaining_cases(numpy_only, monkeypatch):
    def dies(request):
        yield {"index": 0, "result": {**cases.Case.from_spec(request["cases"][0]).record(), "median_s": 1.0}}
        yield {"exit": -9}
    monkeypatch.setattr(runner, "_in_subprocess", dies)
    todo = [_case(), _case(size=32)]
    found, _ = runner.measure_all(todo, "smoke", True, io.StringIO())
    assert found[0]["median_s"] == 1.0 and found[1]["error"] == "worker process exited with code -9"


# ---- the command

def test_bench_prints_a_table_and_writes_json_and_a_plot(numpy_only, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    path, plot = tmp_path / "sub" / "bench.json", tmp_path / "bench.png"
    argv = ["bench", "--sizes", "smoke", "--in-process", "--json", str(path), "--plot", str(plot)]
    assert main(argv, stdout=out, stderr=err) == 0, err.getvalue()
    assert "== cpu" in out.getvalue() and "moonxp (numpy)" in out.getvalue() and "% limit" in out.getvalue()
    assert out.getvalue().startswith("matmul precision: highest")
    assert "[1/14]" in err.getvalue()  # progress, one line per case
    report = json.loads(path.read_text())
    assert results.problems(report) == [] and report["isolation"] == "one process" and report["complete"]
    assert report["matmul_precision"].startswith("highest")
    assert report["machine"]["cores"] >= 1 and report["moonxp"] == moonxp.__version__
    assert {r["workload"] for r in report["results"]} == set(WORKLOADS)
    assert {(lim["device"], lim["dtype"]) for lim in report["limits"]} == {("cpu", "float32"), ("cpu", "float64")}
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_bench_outputs_are_checked_before_measuring(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for option in ("--json", "--plot"):
        err = io.StringIO()
        argv = ["bench", "--quick", option, str(blocker / "out")]
        assert main(argv, stdout=io.StringIO(), stderr=err) == 2
        assert "[1/" not in err.getvalue() and "error" in err.getvalue()


# ---- saved runs: schema, loading, show, compare

@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_runs_load_in_the_current_schema(path):
    report = results.load(path)
    assert report["schema"] == results.SCHEMA and results.problems(report) == []
    for r in report["results"]:
        assert r["roofline"] == pytest.approx(100 * r["throughput"] / r["percent_of_limit"])


def test_pytest_benchmark_json_loads_as_a_report(tmp_path):
    ours = {**_case().record(), "matmul_precision": "highest"}
    peer = _case(implementation="numpy-homework").record()
    data = {"machine_info": {"cpu": {"brand_raw": "Some CPU"}}, "datetime": "2026-11-27T00:00:00",
            "benchmarks": [{"name": "x", "stats": {"median": 0.25, "rounds": 3},
                            "extra_info": {**ours, "limits": FAKE_LIMITS}},
                           {"name": "y", "stats": {"median": 0.5, "rounds": 3}, "extra_info": peer}]}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(data))
    report = results.load(path)
    r, p = report["results"]
    assert r["median_s"] == 0.25 and r["throughput"] == pytest.approx(64 * 64 / 0.25)
    assert r["ratio_to_best_peer"] == pytest.approx(2.0) and report["matmul_precision"] == "highest"
    assert report["machine"]["cpu"] == "Some CPU" and report["limits"][0]["device"] == "cpu"


def test_schema_problems_are_named(tmp_path):
    report = results.load(COMMITTED[0])
    del report["results"][0]["workload"]
    report["results"][1]["median_s"] = "fast"
    found = results.problems(report)
    assert "results[0]: no 'workload'" in found and "results[1]: 'median_s' is str, not float" in found
    path = tmp_path / "bad.json"
    for text in ('{"results": 3}', "not json"):
        path.write_text(text)
        err = io.StringIO()
        assert main(["bench", "show", str(path)], stdout=io.StringIO(), stderr=err) == 2
        assert "bad.json" in err.getvalue() and "moonxp bench --json" in err.getvalue()


def _report(device, rows):
    return {"machine": {"cpu": "C"}, "date": "2026-01-01", "results": [
        {"workload": w, "size": s, "size_label": str(s), "dtype": "float32", "implementation": impl,
         "device": device, "unit": "u/s", "throughput": t} for w, s, impl, t in rows]}


def test_compare_gives_per_case_ratios_and_best_of_each_side():
    cpu = _report("cpu", [("grid-eval", 64, "moonxp (numpy)", 10.0), ("grid-eval", 64, "jax-jit", 5.0),
                          ("grid-eval", 128, "moonxp (numpy)", 1.0)])
    gpu = _report("cuda", [("grid-eval", 64, "moonxp (cupy)", 100.0), ("grid-eval", 64, "jax-jit", 50.0),
                           ("grid-eval", 64, "torch-eager", 80.0)])
    rows = {r["implementation"]: r["ratios"] for r in compare.ratios([cpu, gpu])}
    assert rows == {"jax-jit": [10.0], compare.BEST_MOONXP: [10.0], compare.BEST_PEER: [16.0]}
    text = compare.table(["a.json", "b.json"], [cpu, gpu], compare.ratios([cpu, gpu]))
    assert "A = a.json" in text and "B = b.json: cuda" in text and "16.00x" in text


def test_bench_show_and_compare_on_the_committed_runs(tmp_path):
    out = io.StringIO()
    picture = tmp_path / "ratios.png"
    assert main(["bench", "compare", *map(str, COMMITTED), "--plot", str(picture)], stdout=out) == 0
    assert "B/A" in out.getvalue() and "best moonxp" in out.getvalue()
    assert picture.read_bytes()[:4] == b"\x89PNG"
    out = io.StringIO()
    assert main(["bench", "show", str(COMMITTED[0])], stdout=out) == 0
    assert "% limit" in out.getvalue() and "grid-eval" in out.getvalue()
    err = io.StringIO()
    assert main(["bench", "compare", str(COMMITTED[0])], stdout=io.StringIO(), stderr=err) == 2
    assert "two or more" in err.getvalue()


def test_the_throughput_plot_has_a_log_log_panel_per_workload_with_the_roofline():
    report = results.load(COMMITTED[0])
    figure = charts.throughput(report)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == list(WORKLOADS)
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in axes)
    grid = axes[1]
    labels = [line.get_label() for line in grid.get_lines()]
    assert "roofline cpu float32" in labels and "moonxp (numpy) float32" in labels
    ours = next(line for line in grid.get_lines() if line.get_label() == "moonxp (numpy) float32")
    expected = sorted((r["size"], r["throughput"]) for r in report["results"]
                      if r["workload"] == "grid-eval" and r["dtype"] == "float32" and r["implementation"] ==
                      "moonxp (numpy)")
    assert list(zip(ours.get_xdata(), ours.get_ydata())) == expected


# ---- fair peers

def test_every_library_computes_float32_matmuls_in_full_precision():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    before = torch.get_float32_matmul_precision(), jax.config.jax_default_matmul_precision
    try:
        worker.fair_precision("torch")
        worker.fair_precision("jax")
        assert torch.get_float32_matmul_precision() == "highest"
        assert jax.config.jax_default_matmul_precision == "highest"
    finally:
        torch.set_float32_matmul_precision(before[0])
        jax.config.update("jax_default_matmul_precision", before[1])
    assert worker.ENVIRONMENT["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


def test_a_worker_line_that_is_not_json_is_passed_on(numpy_only, monkeypatch):
    def chatty(request):
        yield {"say": "a library talking\n"}
        yield {"index": 0, "result": {**cases.Case.from_spec(request["cases"][0]).record(), "median_s": 1.0}}
        yield {"exit": 0}
    monkeypatch.setattr(runner, "_in_subprocess", chatty)
    err = io.StringIO()
    found, _ = runner.measure_all([_case()], "smoke", True, err)
    assert found[0]["median_s"] == 1.0 and "a library talking" in err.getvalue()


def test_a_malformed_pytest_benchmark_file_is_one_clear_error(tmp_path):
    path = tmp_path / "pb.json"
    path.write_text(json.dumps({"benchmarks": [{"stats": {"median": 1.0}, "extra_info": {"workload": "x"}}]}))
    with pytest.raises(moonxp.MoonxpError, match="pb.json"):
        results.load(path)


def _foreign(tmp_path, name: str, change) -> str:
    """A committed run changed by `change(report)`, written as `name`."""
    report = json.loads(COMMITTED[0].read_text())
    change(report)
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


def _pytest_benchmark(tmp_path, median: float, limits: dict) -> str:
    data = {"benchmarks": [{"name": "x", "stats": {"median": median, "rounds": 3},
                            "extra_info": {**_case().record(), "limits": limits}}]}
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_foreign_numbers_that_cannot_be_divided_by_are_one_line(tmp_path):
    def set_result(key, value):
        return lambda report: report["results"][0].update({key: value})
    files = [_foreign(tmp_path, "zero.json", set_result("throughput", 0)),
             _foreign(tmp_path, "nan.json", set_result("throughput", float("nan"))),
             _foreign(tmp_path, "negative.json", set_result("median_s", -1.0)),
             _foreign(tmp_path, "infinite.json", set_result("throughput", float("inf"))),
             _foreign(tmp_path, "ratio.json", set_result("ratio_to_best_peer", "fast")),
             _foreign(tmp_path, "limit.json", lambda report: report["limits"][0].update(matmul_flops=0)),
             _pytest_benchmark(tmp_path, 0, FAKE_LIMITS)]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    files.append(str(deep))
    for path in files:
        for argv in (["bench", "show", path], ["bench", "compare", str(COMMITTED[0]), path],
                     ["bench", "compare", path, str(COMMITTED[0])]):
            out, err = io.StringIO(), io.StringIO()
            assert main(argv, stdout=out, stderr=err) == 2, (argv, err.getvalue())
            assert err.getvalue().count("\n") == 1 and path in err.getvalue() and out.getvalue() == ""
    with pytest.raises(moonxp.InvalidInputError, match="matmul_flops"):
        results.load(_pytest_benchmark(tmp_path, 0.25, {**FAKE_LIMITS, "matmul_flops": 0.0}))


def test_a_run_cut_short_leaves_the_json_of_the_backends_done(numpy_only, monkeypatch, tmp_path):
    path = tmp_path / "bench.json"
    real = runner.measure_all

    def interrupted(todo, mode, isolate, stderr, after_each):
        real(todo[:3], mode, isolate, stderr, after_each)
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "measure_all", interrupted)
    argv = ["bench", "--sizes", "smoke", "--in-process", "--json", str(path)]
    assert main(argv, stdout=io.StringIO(), stderr=io.StringIO()) == 130
    report = results.load(path)
    assert report["complete"] is False and len(report["results"]) == 3


def test_json_and_table_are_rewritten_after_every_case(numpy_only, monkeypatch, tmp_path):
    """A worker cut off in the middle of its backend (a GPU check's time limit) leaves every finished case."""
    real = worker.run

    def cut_off(request):
        for message in real(request):
            yield message
            if "result" in message and message["index"] == 1:
                raise KeyboardInterrupt
    monkeypatch.setattr(runner, "run", cut_off)
    path, text = tmp_path / "bench.json", tmp_path / "bench.txt"
    argv = ["bench", "--sizes", "smoke", "--in-process", "--json", str(path), "--table", str(text)]
    assert main(argv, stdout=io.StringIO(), stderr=io.StringIO()) == 130
    report = results.load(path)
    assert report["complete"] is False and len(report["results"]) == 2
    table = text.read_text()
    assert table.count(" moonxp (numpy)") == 2 and "incomplete" in table


def test_quick_gpu_runs_leave_torch_compile_to_full_runs(monkeypatch):
    """torch.compile costs seconds per program and shape: a GPU's `--quick` run times moonxp eager only."""
    monkeypatch.setattr(cases, "resolve", lambda device, backend, dtype: dataclasses.replace(
        moonxp.resolve("cpu", "numpy", dtype), name=backend))  # a stand-in for torch on CUDA
    mine = lambda mode: {c.key for c in cases.for_run("cuda", "torch", mode) if c.device == "cuda"} & {
        i.key for i in cases.IMPLEMENTATIONS if i.implementation == "moonxp"}  # not the NumPy baseline
    assert mine("quick") == {"moonxp-torch-cuda"}
    assert mine("full") == {"moonxp-torch-cuda", "moonxp-torch-cuda-compile"}
