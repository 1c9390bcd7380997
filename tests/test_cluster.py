"""The cluster path on a LocalCluster of worker processes: same results as in-process, faults, Ctrl-C.

All tests share one LocalCluster (2 worker processes, started by `connect("local:2")`) per test run;
they run in the default `pytest` (about 45 s), so CI runs the fault tests.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import moonxp
from moonxp.app.cli import main
from moonxp.engine import cluster, diskgrid, sharded
from moonxp.engine.sweep import COLUMNS

pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")
SRC = str(Path(moonxp.__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def client():
    with cluster.connect("local:2") as client:
        client.wait_for_workers(2)
        yield client


def _kill_one_worker(client) -> None:
    """SIGKILL one worker process (its nanny starts a new one; Dask reruns its tasks)."""
    pid = next(iter(client.run(os.getpid).values()))
    os.kill(pid, signal.SIGKILL)


def _steady(client, workers: int = 2) -> None:
    """Wait until the scheduler lists exactly `workers` workers: a killed worker's entry gone, its restart in."""
    deadline = time.monotonic() + 60
    while len(client.scheduler_info()["workers"]) != workers:
        assert time.monotonic() < deadline, client.scheduler_info()["workers"]
        time.sleep(0.1)


def test_local_cluster_listens_on_loopback_only(client):
    info = client.scheduler_info()
    assert client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert info["workers"] and all(address.startswith("tcp://127.0.0.1:") for address in info["workers"])
    if client.dashboard_link:  # bokeh installed
        assert "127.0.0.1" in client.dashboard_link


def test_cli_sweep_on_a_cluster_writes_the_same_files_as_in_process(client, tmp_path):
    argv = ["sweep", "--lr", "0.01,0.1,1", "--hidden", "10,50", "--seeds", "0:30", "--iters", "40", "--block", "8"]
    here, there = tmp_path / "here", tmp_path / "there"
    assert main([*argv, "--out", str(here)], stdout=io.StringIO(), stderr=io.StringIO()) == 0
    assert main([*argv, "--out", str(there), "--scheduler", client.scheduler.address], stdout=io.StringIO(),
                stderr=io.StringIO()) == 0
    files = sorted(p.name for p in here.iterdir() if p.name != "sweep.json")
    assert len(files) == 3 and files == sorted(p.name for p in there.iterdir() if p.name != "sweep.json")
    for name in files:
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
    import json
    summary = json.loads((there / "sweep.json").read_text())
    assert summary["versions"]["moonxp"] == moonxp.__version__ and "cluster" not in json.loads(
        (here / "sweep.json").read_text())
    assert {w["numpy"] for w in summary["cluster"]["workers"].values()} == {np.__version__}


def test_a_sweep_completes_identically_when_a_worker_dies(client):
    options = dict(lr=(0.05, 0.5), hidden=(30,), samples=(400,), iters=(60,), seeds=range(0, 24), block=4)
    expected = moonxp.sweep(**options)
    killed = []

    def progress(done: int, total: int) -> None:
        if not killed:
            killed.append(done)
            _kill_one_worker(client)
    got = moonxp.sweep(**options, client=client, progress=progress)
    assert killed
    for name in COLUMNS:
        np.testing.assert_array_equal(got[name], expected[name])


def test_a_grid_completes_identically_when_a_worker_dies(client, tmp_path, monkeypatch):
    monkeypatch.setattr(diskgrid, "BAND_BYTES", 4 * 600 * 25)  # 24 bands of 25 rows
    _, _, params = moonxp.make_problem(4)
    diskgrid.grid_to_disk(params, tmp_path / "here.npy", 600)
    killed = []

    def progress(done: int, total: int) -> None:
        if not killed:
            killed.append(done)
            _kill_one_worker(client)
    diskgrid.grid_to_disk(params, tmp_path / "there.npy", 600, client=client, progress=progress)
    assert killed
    np.testing.assert_array_equal(np.load(tmp_path / "there.npy"), np.load(tmp_path / "here.npy"))


def test_data_parallel_training_on_the_cluster_is_bit_identical_to_in_process(client):
    options = dict(seed=2, samples=3000, shards=20, hidden=8, lr=0.3, iters=10, check_every=4)  # 20 > FAN_IN: a tree
    here, errors_here = sharded.train_sharded(**options)
    there, errors_there = sharded.train_sharded(**options, client=client)
    np.testing.assert_array_equal(errors_there, errors_here)
    for a, b in zip(there, here):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scattered", [True, False], ids=["scattered shards", "drawn shards"])
def test_data_parallel_training_survives_a_worker_that_dies_bit_identically(client, scattered):
    X, T, params = moonxp.make_problem(0, 3000, hidden=8)
    spec = ("cpu", None, "float64")

    def train(progress=None):
        if scattered:  # the CLI's path: the points sent from here
            return sharded.trainer(client, 4, spec)(params, X, T, lr=0.3, iters=24, check_every=4, progress=progress)
        return sharded.train_sharded(seed=1, samples=3000, shards=4, hidden=8, lr=0.3, iters=24, check_every=4,
                                     client=client, progress=progress)
    expected = train()
    killed = []

    def progress(done: int, total: int) -> None:
        if not killed and done >= 8:
            killed.append(done)
            _kill_one_worker(client)
    got = train(progress)
    assert killed
    for a, b in zip(got[0], expected[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[1], expected[1])


def test_cli_train_on_a_cluster_matches_in_process(client, tmp_path):
    import json
    argv = ["train", "--iters", "20", "--samples", "300", "--no-plot", "--quiet"]
    _steady(client)  # an earlier test's killed worker may still be restarting
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b"), "--scheduler", client.scheduler.address]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b"))
    assert a["final_error"] == pytest.approx(b["final_error"], rel=1e-9, abs=1e-12)
    assert a["accuracy"] == b["accuracy"]
    assert "cluster" not in a and b["cluster"]["scheduler"]["moonxp"] == moonxp.__version__  # the versions met
    assert sorted(b["cluster"]["workers"]) == sorted(client.scheduler_info()["workers"])
    assert {w["moonxp"] for w in b["cluster"]["workers"].values()} == {moonxp.__version__}


def test_ctrl_c_stops_the_local_cluster_and_leaves_whole_partial_results(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "sweep"
    process = subprocess.Popen([sys.executable, "-m", "moonxp", "sweep", "--scheduler", "local:2", "--seeds",
                                "0:200000", "--block", "20", "--format", "parquet", "--out", str(out)],
                               env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    parent = psutil.Process(process.pid)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready and process.stdout.readline().startswith("cluster tcp://127.0.0.1:")  # the cluster is up
        time.sleep(3)  # let some tasks finish
        children = parent.children(recursive=True)
        assert len(children) >= 2
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:  # a failed test leaves no processes behind either
        for child in parent.children(recursive=True) if process.poll() is None else []:
            child.kill()
        process.kill()
    assert process.returncode == 130 and "moonxp: interrupted" in err and "Traceback" not in err, err
    time.sleep(1)
    orphans = [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert orphans == []
    import json
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["status"] == "interrupted" and summary["tasks_done"] < summary["tasks"]
    table = pq.read_table(out / "results.parquet")
    assert table.num_rows == 20 * summary["tasks_done"]
    assert table.schema.metadata[b"moonxp.status"] == b"interrupted"


def _first_worker_process(parent, process) -> None:
    """Wait until `parent` has started a local cluster's first worker process (multiprocessing's spawn child)."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        if any("spawn_main" in _command_line(child) for child in parent.children()):
            return
        time.sleep(0.005)


def _command_line(process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it exited meanwhile
        return ""


@pytest.mark.parametrize("command, signame, after", [
    ("sweep", "SIGINT", 0.1), ("sweep", "SIGINT", 0.4), ("train", "SIGINT", 0.2), ("sweep", "SIGTERM", 0.2),
    ("sweep", "SIGHUP", 0.2)])
def test_a_signal_to_the_process_group_while_the_local_cluster_starts_is_one_line(tmp_path, command, signame,
                                                                                    after):
    """Sent to the whole group `after` s past the first worker's spawn, before its preload: moonxp's line only."""
    options = ["--seeds", "0:2000"] if command == "sweep" else ["--no-plot"]
    process = subprocess.Popen([sys.executable, "-m", "moonxp", command, "--scheduler", "local:2", *options,
                                "--out", str(tmp_path / "out")], env={**os.environ, "PYTHONPATH": SRC},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    parent = psutil.Process(process.pid)
    children = []
    try:
        _first_worker_process(parent, process)
        time.sleep(after)
        children = parent.children(recursive=True)
        os.killpg(process.pid, getattr(signal, signame))
        _, err = process.communicate(timeout=120)
    finally:  # a failed test leaves no processes behind either
        for child in parent.children(recursive=True) if process.poll() is None else []:
            child.kill()
        process.kill()
    line = "moonxp: interrupted" + ("" if signame == "SIGINT" else f" ({signame})")
    assert (process.returncode, err.splitlines()) == (128 + getattr(signal, signame), [line]), err
    psutil.wait_procs(children, timeout=10)
    assert [p.pid for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


@contextlib.contextmanager
def _a_thread_that_takes_signals():
    """Beside NumPy's BLAS threads (there may be none): a thread started before the window, not blocking signals."""
    import threading
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join()


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks on this platform")
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_while_signals_are_held_is_raised_after_the_window_not_inside(signame):
    """Sent to the process, it may go to another thread: Python would run the handler in the window all the same."""
    from moonxp.app.process import Interrupted
    from moonxp.engine.workers import held_signals
    signum = getattr(signal, signame)

    def interrupt(number, frame):
        raise Interrupted(number)
    installed = signal.signal(signum, interrupt)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    inside = []
    try:
        with _a_thread_that_takes_signals(), pytest.raises(Interrupted) as raised:
            with held_signals():
                os.kill(os.getpid(), signum)
                for _ in range(100):  # 1 s for the handler to run here, if it would
                    time.sleep(0.01)
                inside.append("reached the end")
        assert inside == ["reached the end"] and raised.value.signum == signum
        assert signal.getsignal(signum) is interrupt and signal.pthread_sigmask(signal.SIG_BLOCK, ()) == mask
    finally:
        signal.signal(signum, installed)


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks on this platform")
def test_held_signals_restores_the_handlers_and_the_mask_when_its_body_raises():
    from moonxp.engine.workers import HELD_SIGNALS, held_signals
    handlers = {signum: signal.getsignal(signum) for signum in HELD_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    with pytest.raises(ValueError, match="the cluster did not start"):
        with held_signals():
            assert HELD_SIGNALS <= signal.pthread_sigmask(signal.SIG_BLOCK, ())
            raise ValueError("the cluster did not start")
    assert {signum: signal.getsignal(signum) for signum in HELD_SIGNALS} == handlers
    assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == mask


def test_shard_sums_run_with_the_shards_device_current(monkeypatch):
    """CuPy launches on the current device: a shard on cuda:N is summed (and its tiles sized) with cuda:N current."""
    from moonxp.engine import sharded
    current, seen = [None], []

    @contextlib.contextmanager
    def entered(xp, device):
        previous, current[0] = current[0], str(device)
        try:
            yield
        finally:
            current[0] = previous
    monkeypatch.setattr(sharded, "device_context", entered)
    real = sharded.policy_for
    monkeypatch.setattr(sharded, "policy_for", lambda *args: (seen.append(current[0]), real(*args))[1])
    spec = ("cpu", "numpy", "float64")
    shard = sharded.draw_shard(0, seed=0, samples=40, shards=2, noise=0.0, spec=spec)
    e, sums = sharded._shard_sums(shard, (moonxp.make_problem(0, 10, 0.0, 4)[2], None), spec)
    assert seen == ["cpu"] and current[0] is None and np.isfinite(e).all()
