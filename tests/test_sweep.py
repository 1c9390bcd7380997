"""Sweeps, data-parallel training and grids on disk, in-process (the cluster runs are in test_cluster.py)."""

from __future__ import annotations

import io
import socket
import sys
import time

import numpy as np
import pytest

import moonxp
from moonxp import Params
from moonxp.app import sweep as sweep_app
from moonxp.app.cli import main
from moonxp.data import make_problem
from moonxp.engine import diskgrid, sharded
from moonxp.engine.sweep import COLUMNS, train_block, Setting


def _single(seed: int, setting: Setting) -> tuple[float, float, int]:
    """(final error, accuracy, diverged iteration or -1) of the plain single run of `seed`."""
    X, T, params = make_problem(seed, setting.samples, setting.noise, setting.hidden)
    backend = moonxp.resolve("cpu", "numpy", setting.dtype)
    X, T, params = backend.asarray(X), backend.asarray(T), Params(*(backend.asarray(p) for p in params))
    try:
        trained, errors = moonxp.train(params, X, T, lr=setting.lr, iters=setting.iters)
    except moonxp.DivergedError as exc:
        return np.nan, np.nan, exc.iteration
    return float(errors[-1]), float(moonxp.evaluate(trained, X, T)[1]), -1


@pytest.mark.parametrize("setting, seeds", [
    (Setting(lr=20.0, hidden=10, samples=100, noise=0.0, iters=64, dtype="float32"), range(4, 8)),  # mixed
    (Setting(lr=0.5, hidden=7, samples=60, noise=0.2, iters=20, dtype="float64"), range(10, 13)),
])
def test_network_k_of_a_batch_is_the_single_run_of_its_seed(setting, seeds):
    result = train_block((setting, seeds.start, seeds.stop))
    expected = [_single(seed, setting) for seed in seeds]
    np.testing.assert_array_equal(result["final_error"], [e[0] for e in expected])  # bits, NaN where diverged
    np.testing.assert_array_equal(result["accuracy"], [e[1] for e in expected])
    np.testing.assert_array_equal(result["diverged_at"], [e[2] for e in expected])
    if setting.lr == 20.0:  # this configuration mixes diverging and converging networks in one batch
        assert 0 < (result["diverged_at"] >= 0).sum() < len(seeds)


def test_sweep_rows_do_not_depend_on_the_block_size():
    options = dict(lr=(0.1, 2.0), hidden=(5,), samples=(40,), iters=(12, 3), seeds=range(3, 8))
    one, three = moonxp.sweep(**options, block=1), moonxp.sweep(**options, block=3)
    assert list(one) == list(COLUMNS) and len(one["seed"]) == 2 * 2 * 5
    for name in COLUMNS:
        np.testing.assert_array_equal(one[name], three[name])
    assert one["lr"].tolist()[:10] == [0.1] * 10 and one["iters"].tolist()[:5] == [12] * 5  # lr varies slowest
    assert one["seed"].tolist()[:5] == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("options, message", [
    (dict(lr=()), "at least one value"),
    (dict(hidden=(5, 5)), "each once"),
    (dict(dtype=("float16",)), "unknown dtype"),
    (dict(seeds=range(5, 5)), "non-empty range"),
    (dict(device="tpu"), "unknown device"),
])
def test_sweep_rejects_bad_options_before_any_work(options, message):
    with pytest.raises(moonxp.MoonxpError, match=message):
        moonxp.sweep(**options)


def test_cli_sweep_writes_table_figures_and_summary(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    out = io.StringIO()
    code = main(["sweep", "--lr", "0.1,1", "--hidden", "4,6", "--samples", "30", "--iters", "5", "--seeds", "0:3",
                 "--format", "parquet", "--out", str(tmp_path)], stdout=out, stderr=io.StringIO())
    assert code == 0, out.getvalue()
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.column_names == list(COLUMNS) and table.num_rows == 12
    assert table.schema.metadata[b"moonxp.status"] == b"ok"
    row = table.slice(4, 1).to_pylist()[0]  # lr 0.1, hidden 6, seed 1
    setting = Setting(0.1, 6, 30, 0.0, 5, "float64")
    assert (row["lr"], row["hidden"], row["seed"]) == (0.1, 6, 1)
    assert (row["final_error"], row["accuracy"], row["diverged_at"]) == _single(1, setting)
    for name in ("heatmaps.png", "distributions.png", "sweep.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_csv_table_round_trips_exactly_without_pyarrow(monkeypatch):
    columns = moonxp.sweep(lr=(0.3,), hidden=(3,), samples=(20,), iters=(4,), seeds=range(0, 3))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    name, data = sweep_app.table_bytes(columns, "ok", "csv")
    assert name == "results.csv"
    lines = data.decode().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 4
    assert [float(line.split(",")[7]) for line in lines[1:]] == columns["final_error"].tolist()  # exact round trip


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "5:2"], "START:STOP"),
    (["--lr", "0.1,-1"], "--lr must be a finite number > 0, not -1.0"),
    (["--scheduler", "udp://x:1"], "unknown scheduler"),
    (["--scheduler", "local:0"], "no workers"),
    (["--block", "0"], "--block must be an integer >= 1, not 0"),
    (["--block", "-3"], "--block must be an integer >= 1, not -3"),
    (["--hidden", "5,0"], "--hidden must be an integer >= 1, not 0"),
    (["--samples", "0"], "--samples must be an integer >= 1, not 0"),
    (["--iters", "-1"], "--iters must be an integer >= 0, not -1"),
    (["--noise", "1e308"], "--noise 1e+308 puts points too far out for float64"),
    (["--noise", "1e37", "--dtype", "float32"], "use a smaller --noise"),
    (["--dtype", "float16"], "unknown --dtype 'float16'"),
    (["--device", "nope"], "unknown device 'nope'"),
    (["--backend", "nope"], "unknown backend 'nope'"),
    (["--seeds", "0:4294967296"], "4294967296 networks (1 configurations x 4294967296 seeds)"),
    (["--lr", ",".join(map(str, range(1, 41))), "--hidden", ",".join(map(str, range(1, 41))),
      "--samples", ",".join(map(str, range(1, 41))), "--noise", ",".join(map(str, range(40))),
      "--iters", ",".join(map(str, range(40)))], "or fewer values of --lr, --hidden, --samples, --noise, --iters"),
    (["--samples", "2000000", "--seeds", "0:250000"], "(--block) with 2000000 samples needs about"),
    (["--scheduler", "local:100000"], "would start 100000 worker processes"),
])
def test_cli_sweep_bad_options_are_one_line_and_exit_2(tmp_path, argv, message):
    err = io.StringIO()
    assert main(["sweep", "--out", str(tmp_path / "o"), *argv], stdout=io.StringIO(), stderr=err) == 2
    assert message in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before --out is created or a cluster starts


def test_sweep_sizes_are_refused_before_any_list_is_expanded(monkeypatch):
    from moonxp.engine import sweep as engine
    monkeypatch.setattr(engine, "host_memory", lambda: 1 << 30)
    monkeypatch.setattr(engine, "settings", lambda *a, **k: pytest.fail("the product was built"))
    big = tuple(range(1, 1001))
    with pytest.raises(moonxp.InvalidInputError, match="fewer values of lr, hidden"):
        moonxp.sweep(lr=big, hidden=big, samples=big, seeds=range(1000))
    with pytest.raises(moonxp.InvalidInputError, match="use block 5 or less"):  # 200 MB a network of 1e6 points
        moonxp.sweep(samples=(1_000_000,), seeds=range(5000))
    with pytest.raises(moonxp.InvalidInputError, match="lr must be a list of values, not 0.1"):
        moonxp.sweep(lr=0.1)


def test_a_task_too_large_is_told_alike_here_and_on_workers_and_a_worker_over_its_limit_has_0_free(monkeypatch):
    import re
    from moonxp.engine import sweep as engine
    options = dict(samples=(100_000,), seeds=range(10), block=10)  # 10 networks of about 20 MB: 0.19 GiB
    monkeypatch.setattr(engine, "host_memory", lambda: 100 << 20)
    with pytest.raises(moonxp.InvalidInputError) as here:
        moonxp.sweep(**options)
    monkeypatch.setattr(engine, "prepare", lambda client: {})
    monkeypatch.setattr(engine, "task_room", lambda *args: pytest.fail("the worker was taken as large enough"))
    over = -(50 << 20)  # the worker's process already uses 50 MB more than its 512 MB limit
    monkeypatch.setattr(engine, "worker_memory", lambda client: {"tcp://127.0.0.1:9": (over, 1, 512 << 20)})
    with pytest.raises(moonxp.InvalidInputError) as there:
        moonxp.sweep(**options, client=object())
    size = [re.search(r"^a task of 10 networks \(block\) with 100000 samples needs about [0-9.]+ GiB", str(error.value))
            for error in (here, there)]
    assert all(size) and size[0].group() == size[1].group(), (str(here.value), str(there.value))
    assert "tcp://127.0.0.1:9 (1 threads, 0.00 GiB free of 0.50 GiB)" in str(there.value), str(there.value)


@pytest.mark.parametrize("command", [["sweep"], ["train"]])
def test_scheduler_without_the_cluster_extra_names_it(tmp_path, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask[distributed] were not installed
    err = io.StringIO()
    code = main([*command, "--scheduler", "local:2", "--out", str(tmp_path)], stdout=io.StringIO(), stderr=err)
    assert code == 2 and 'pip install -e ".[cluster]"' in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1


def test_parquet_without_pyarrow_is_one_line_naming_it_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    err = io.StringIO()
    code = main(["sweep", "--format", "parquet", "--out", str(tmp_path / "o")], stdout=io.StringIO(), stderr=err)
    assert code == 2 and err.getvalue() == ('moonxp: error: --format parquet needs pyarrow, which is not installed: '
                                            'pip install -e ".[parquet]" in the moonxp checkout, or use --format csv\n')
    assert not (tmp_path / "o").exists()


def test_the_table_format_is_what_was_asked(tmp_path):
    options = ["sweep", "--hidden", "3", "--samples", "20", "--iters", "3", "--seeds", "0:4", "--no-plot"]
    assert main([*options, "--out", str(tmp_path / "a")], stdout=io.StringIO(), stderr=io.StringIO()) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["results.csv", "sweep.json"]
    pytest.importorskip("pyarrow")
    assert main([*options, "--format", "parquet", "--out", str(tmp_path / "b")], stdout=io.StringIO(),
                stderr=io.StringIO()) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["results.parquet", "sweep.json"]


def test_bench_refuses_a_scheduler_in_one_line():
    err = io.StringIO()
    assert main(["bench", "--scheduler", "local"], stdout=io.StringIO(), stderr=err) == 2
    assert "each worker machine" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


@pytest.mark.slow
def test_a_scheduler_that_does_not_answer_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("distributed")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    err = io.StringIO()
    started = time.monotonic()
    code = main(["sweep", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(tmp_path)], stdout=io.StringIO(),
                stderr=err)
    assert code == 2 and "no Dask scheduler answers" in err.getvalue()
    assert len(err.getvalue().strip().splitlines()) == 1
    assert time.monotonic() - started < 30  # bounded by the connect timeout, not Dask's 30 s default


def test_data_parallel_training_equals_training_on_all_points():
    X, T, params = make_problem(3, 500, 0.1, 12)
    data_parallel = sharded.trainer(None, 7, ("cpu", "numpy", "float64"))
    backend = moonxp.resolve()
    ours, errors = data_parallel(params, backend.asarray(X), backend.asarray(T), lr=0.4, iters=21, check_every=5)
    plain, expected = moonxp.train(params, X, T, lr=0.4, iters=21)
    np.testing.assert_allclose(errors, expected, rtol=1e-12, atol=1e-15)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_sharded_data_is_the_concatenation_of_its_shards_and_trains_alike():
    spec = ("cpu", "numpy", "float64")
    params, errors = sharded.train_sharded(5, 1000, 4, hidden=6, iters=9, check_every=4)
    shards = [sharded.draw_shard(k, seed=5, samples=1000, shards=4, noise=0.0, spec=spec) for k in range(4)]
    assert sum(len(t) for _, t in shards) == 1000
    X, T = np.concatenate([x for x, _ in shards]), np.concatenate([t for _, t in shards])
    start = moonxp.data.initial_params(np.random.RandomState(5), 6)
    plain, expected = moonxp.train(start, X, T, iters=9)
    np.testing.assert_allclose(errors, expected, rtol=1e-12, atol=1e-15)
    for a, b in zip(params, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_sharded_training_reports_divergence():
    with pytest.raises(moonxp.DivergedError):
        sharded.train_sharded(0, 200, 3, hidden=10, lr=1e6, iters=40, dtype="float32")


def test_a_band_of_the_grid_is_those_rows_of_the_grid():
    _, _, params = make_problem(1)
    full = moonxp.evaluate_grid(params, 64)
    np.testing.assert_allclose(moonxp.evaluate_grid(params, 64, rows=(10, 23)), full[10:23], rtol=1e-13, atol=1e-13)
    with pytest.raises(moonxp.InvalidInputError, match="grid row stop"):
        moonxp.evaluate_grid(params, 64, rows=(10, 65))


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_grid_to_disk_writes_every_band_and_a_restart_skips_the_written_ones(tmp_path, monkeypatch, suffix):
    if suffix == ".zarr":
        zarr = pytest.importorskip("zarr")
    monkeypatch.setattr(diskgrid, "BAND_BYTES", 8 * 2 * 100 * 7)  # 7 rows of two 100-wide float64 grids
    _, _, params = make_problem(2, hidden=9)
    batch = Params(*(np.stack([p, p * 0.5]) for p in params))  # two networks
    path = tmp_path / f"grid{suffix}"
    calls = []
    diskgrid.grid_to_disk(batch, path, 100, dtype="float64", progress=lambda done, total: calls.append((done, total)))
    stored = np.load(path) if suffix == ".npy" else zarr.open_array(str(path))[...]
    np.testing.assert_allclose(stored, moonxp.evaluate_grid(batch, 100), rtol=1e-13, atol=1e-13)
    assert calls[-1] == (15, 15) and len(calls) == 15
    (tmp_path / f"grid{suffix}.bands" / "14").unlink()  # as if the run had stopped before that band
    calls.clear()
    diskgrid.grid_to_disk(batch, path, 100, dtype="float64", progress=lambda done, total: calls.append((done, total)))
    assert calls == [(15, 15)]  # one band computed again, 14 skipped
    again = np.load(path) if suffix == ".npy" else zarr.open_array(str(path))[...]
    np.testing.assert_array_equal(again, stored)


def _damage_npy_shape(path):
    np.save(path, np.zeros((10, 10), dtype=np.int16))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def _delete_a_chunk(path):
    chunk = next(p for p in sorted((path / "c").rglob("*")) if p.is_file())
    chunk.unlink()


@pytest.mark.parametrize("suffix, damage", [(".npy", _damage_npy_shape), (".npy", _truncate),
                                            (".zarr", _delete_a_chunk)])
def test_grid_to_disk_resumes_only_onto_the_store_it_created(tmp_path, monkeypatch, suffix, damage):
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    monkeypatch.setattr(diskgrid, "BAND_BYTES", 4 * 40 * 7)  # 7 rows of a 40-wide float32 grid
    _, _, params = make_problem(2, hidden=5)
    path = tmp_path / f"grid{suffix}"
    diskgrid.grid_to_disk(params, path, 40)
    damage(path)
    calls = []
    diskgrid.grid_to_disk(params, path, 40, progress=lambda done, total: calls.append(done))
    assert calls == ([6] if suffix == ".zarr" else [1, 2, 3, 4, 5, 6])  # the lost chunk's band, or every band
    stored = np.load(path) if suffix == ".npy" else __import__("zarr").open_array(str(path))[...]
    np.testing.assert_allclose(stored, moonxp.evaluate_grid(Params(*(p.astype("float32") for p in params)), 40),
                               rtol=1e-6, atol=1e-6)


def test_grid_to_disk_refuses_bad_params_before_creating_the_store(tmp_path):
    _, _, params = make_problem(2, hidden=5)
    with pytest.raises(moonxp.InvalidInputError, match="NaN"):
        diskgrid.grid_to_disk(Params(params.W * np.nan, params.b, params.v), tmp_path / "g.npy", 4096)
    with pytest.raises(moonxp.InvalidInputError, match="D = 3"):
        diskgrid.grid_to_disk(Params(np.zeros((3, 5)), params.b, params.v), tmp_path / "g.npy", 4096)
    assert list(tmp_path.iterdir()) == []


def test_grid_to_disk_marker_that_cannot_be_written_is_an_output_error(tmp_path, monkeypatch):
    from pathlib import Path
    _, _, params = make_problem(2, hidden=5)
    real = Path.touch

    def refused(self, *args, **kwargs):
        if self.parent.name.endswith(".bands"):
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Path, "touch", refused)
    with pytest.raises(moonxp.OutputError, match="cannot mark band 0 done .*Permission denied"):
        diskgrid.grid_to_disk(params, tmp_path / "g.npy", 20)


def test_grid_to_disk_with_other_parameters_starts_afresh(tmp_path):
    _, _, params = make_problem(2, hidden=4)
    path = tmp_path / "g.npy"
    diskgrid.grid_to_disk(params, path, 20)
    diskgrid.grid_to_disk(Params(*(p * 2 for p in params)), path, 20)
    expected = moonxp.evaluate_grid(Params(*(np.float32(2) * p.astype("float32") for p in params)), 20)
    np.testing.assert_allclose(np.load(path), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(moonxp.OutputError, match=".zarr"):
        diskgrid.grid_to_disk(params, tmp_path / "g.bin", 20)


def test_a_malformed_result_from_a_worker_is_refused(monkeypatch):
    from moonxp.engine import sweep as engine

    def broken(task, **kwargs):
        return {"final_error": np.zeros(task[2] - task[1] + 1), "accuracy": [], "diverged_at": []}
    monkeypatch.setattr(engine, "train_block", broken)
    with pytest.raises(moonxp.InvalidInputError, match="malformed result"):
        moonxp.sweep(seeds=range(0, 2))


def test_ctrl_c_in_process_writes_the_finished_rows_marked_interrupted(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import json
    from moonxp.engine import sweep as engine
    real, calls = engine.train_block, []

    def interrupted_on_the_third_task(task, **kwargs):
        calls.append(task)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, **kwargs)
    monkeypatch.setattr(engine, "train_block", interrupted_on_the_third_task)
    err = io.StringIO()
    code = main(["sweep", "--hidden", "3", "--samples", "20", "--iters", "3", "--seeds", "0:10", "--block", "2",
                 "--format", "parquet", "--out", str(tmp_path)], stdout=io.StringIO(), stderr=err)
    assert code == 130 and err.getvalue() == "moonxp: interrupted\n"
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert (summary["status"], summary["tasks_done"], summary["tasks"]) == ("interrupted", 2, 5)
    table = pq.read_table(tmp_path / "results.parquet")
    assert table.column("seed").to_pylist() == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distributions.png", "heatmaps.png", "results.parquet",
                                                          "sweep.json"]  # whole files, no temporaries
