"""NumPy tile workers as processes (moonxp.engine.processes): the same bits as threads, each way training
spreads its work, and what happens when a call stops early, a worker dies, or the workers cannot start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

import moonxp
from moonxp import Params
from moonxp.engine import policy, processes, training

pytestmark = pytest.mark.skipif(os.name != "posix", reason="worker processes run on POSIX only")


@pytest.fixture
def fresh(monkeypatch):
    """Worker processes of this test's own (two worker threads' worth: policy.cores is 2), closed after it;
    the first call with parallel work starts them (START_AFTER_S = 0)."""
    monkeypatch.setattr(processes, "_state", {"team": None, "starting": None, "failed": None, "spawned": [], "work_s": 0.0})
    monkeypatch.setattr(policy, "cores", lambda: 2)
    monkeypatch.setattr(processes, "START_AFTER_S", 0.0)
    monkeypatch.delenv("MOONXP_WORKER_PROCESSES", raising=False)
    yield processes._state
    processes.settle()
    if processes._state["team"] is not None:
        processes._state["team"].close()


def up(size: int = 1) -> processes.Team:
    team = processes.start(size)
    assert team is not None, processes._state
    return team


def sent(monkeypatch) -> list:
    """The functions sent to worker processes from now on."""
    calls = []
    real = processes.Team.send
    monkeypatch.setattr(processes.Team, "send", lambda self, k, fn, *args: (calls.append(fn.__name__),
                                                                            real(self, k, fn, *args))[1])
    return calls


def batch(networks: int = 16, samples: int = 100, hidden: int = 50, dtype=np.float64):
    X, T, p = moonxp.make_ensemble(1, networks, n_samples=samples, hidden=hidden)
    return X.astype(dtype), T.astype(dtype), Params(*(a.astype(dtype) for a in p))


def large(samples: int = 12_000, dtype=np.float64):
    X, T, p = moonxp.make_problem(2, n_samples=samples, hidden=50)
    return X.astype(dtype), T.astype(dtype), Params(*(a.astype(dtype) for a in p))


def on_threads(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("MOONXP_WORKER_PROCESSES", "0")
        return moonxp.train(*args, **kwargs)


def assert_same_bits(a, b):
    for x, y in zip((*a[0], a[1]), (*b[0], b[1]), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("tiles", [None, 20_000], ids=["whole", "tiles"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_of_networks_in_a_process_equal_threads_bit_for_bit(fresh, monkeypatch, tiles, dtype):
    """With the points whole or in tiles (a worker tiles its block as this process says: `limit_tiles`)."""
    X, T, p = batch(dtype=dtype)
    with policy.limit_tiles(tiles or 1 << 62):
        threads = on_threads(monkeypatch, p, X, T, lr=0.1, iters=40, check_every=16)
        up()
        calls = sent(monkeypatch)
        ours = moonxp.train(p, X, T, lr=0.1, iters=40, check_every=16)
    assert calls == ["_chunks_of_a_block"]  # one call streams every chunk
    assert_same_bits(ours, threads)


def test_tiles_of_points_in_a_process_equal_threads_bit_for_bit(fresh, monkeypatch):
    X, T, p = large()
    threads = on_threads(monkeypatch, p, X, T, lr=0.1, iters=20, check_every=8)
    up()
    calls = sent(monkeypatch)
    ours = moonxp.train(p, X, T, lr=0.1, iters=20, check_every=8)
    assert calls == ["_sums_of_held"] * 20  # one exchange per step
    assert_same_bits(ours, threads)


def test_small_work_stays_on_threads_and_starts_nothing(fresh):
    X, T, p = batch(networks=2)
    moonxp.train(p, X, T, iters=3)
    X, T, p = moonxp.make_problem(0)  # the homework: one tile
    moonxp.train(p, X, T, iters=3)
    assert fresh == {"team": None, "starting": None, "failed": None, "spawned": [], "work_s": 0.0}


def test_workers_start_once_work_adds_up_and_a_long_call_waits_for_them(fresh, monkeypatch):
    """A one-off small batch starts nothing; work that adds up to START_AFTER_S starts the workers in the
    background (calls meanwhile on threads); a call estimated at WAIT_S or more waits for them."""
    X, T, p = batch()
    calls = sent(monkeypatch)
    work_s = 16 * 100 * 50 * 4 * training.UNIT_S / 2  # one call's estimate: 16 networks, 4 steps, 2 workers
    monkeypatch.setattr(processes, "START_AFTER_S", 2.5 * work_s)
    moonxp.train(p, X, T, iters=4)
    moonxp.train(p, X, T, iters=4)
    assert fresh["starting"] is None and fresh["team"] is None and fresh["work_s"] == pytest.approx(2 * work_s)
    moonxp.train(p, X, T, iters=4)  # past START_AFTER_S: the start begins, this call on threads
    assert fresh["starting"] is not None or fresh["team"] is not None
    processes.settle()
    assert calls == [] and fresh["team"] is not None
    moonxp.train(p, X, T, iters=4)
    assert calls == ["_chunks_of_a_block"]
    fresh["team"].close()
    fresh["team"] = None
    monkeypatch.setattr(processes, "WAIT_S", work_s)
    moonxp.train(p, X, T, iters=4)  # long enough to wait for new workers
    assert calls == ["_chunks_of_a_block"] * 2


def test_start_waits_out_a_smaller_team_being_started_and_replaces_it(fresh):
    processes._running(1, begin=True)  # one worker starting (the process's cores were fewer then)
    team = processes.start(2)
    assert team is not None and len(team) == 2 and team.alive() and fresh["starting"] is None


def test_off_where_asked_and_outside_the_main_thread(fresh, monkeypatch):
    monkeypatch.setenv("MOONXP_WORKER_PROCESSES", "0")
    assert processes.start(1) is None and processes.team(1, work_s=60.0) is None
    monkeypatch.delenv("MOONXP_WORKER_PROCESSES")
    found = []
    thread = threading.Thread(target=lambda: found.append((processes.start(1), processes.team(1, work_s=60.0))))
    thread.start()
    thread.join()
    assert found == [(None, None)] and fresh["starting"] is None and fresh["team"] is None


def test_divergence_is_reported_as_on_threads_and_the_workers_stay(fresh, monkeypatch):
    X, T, p = batch()
    p = Params(p.W, p.b, p.v * np.where(np.arange(16) == 11, 1e300, 1.0)[:, None])  # network 11, in the worker's half
    with pytest.raises(moonxp.DivergedError) as on_threads_error:
        on_threads(monkeypatch, p, X, T, iters=64, check_every=4)
    team = up()
    with pytest.raises(moonxp.DivergedError) as on_processes_error:
        moonxp.train(p, X, T, iters=64, check_every=4)
    assert str(on_processes_error.value) == str(on_threads_error.value)
    assert "1 of 16 networks" in str(on_processes_error.value)
    assert not any(team.running) and processes.team(1) is team  # stopped, read, and ready for the next call
    X, T, p = batch()
    assert_same_bits(moonxp.train(p, X, T, iters=4), on_threads(monkeypatch, p, X, T, iters=4))


def test_a_failing_progress_callback_stops_the_worker_an_interrupt_closes_it(fresh, monkeypatch):
    X, T, p = batch()
    team = up()

    def fail(error):
        def progress(done, total):
            if done == 8:
                raise error
        return progress
    with pytest.raises(ValueError):
        moonxp.train(p, X, T, iters=64, check_every=4, progress=fail(ValueError("callback")))
    assert processes.team(1) is team and team.alive()
    with pytest.raises(KeyboardInterrupt):
        moonxp.train(p, X, T, iters=64, check_every=4, progress=fail(KeyboardInterrupt()))
    assert fresh["team"] is None and not team.alive()
    ours = moonxp.train(p, X, T, iters=8)  # threads now, new workers starting
    processes.settle()
    assert fresh["team"] is not None and fresh["team"] is not team
    assert_same_bits(moonxp.train(p, X, T, iters=8), ours)


def test_a_worker_that_dies_is_one_clear_error_and_the_next_call_starts_new_ones(fresh, monkeypatch):
    """However little work the process has seen (the benchmark starts its workers up front)."""
    monkeypatch.setattr(processes, "START_AFTER_S", 1e9)
    X, T, p = large()
    team = up()
    os.kill(team.processes[0].pid, signal.SIGKILL)
    team.processes[0].wait()
    assert processes.team(1) is None and fresh["starting"] is not None  # noticed before any work: started afresh
    processes.settle()
    team = fresh["team"]
    assert team is not None and team.alive()

    def kill_the_worker(done, total):
        os.kill(team.processes[0].pid, signal.SIGKILL)
    with pytest.raises(processes.WorkerProcessError, match="worker process .* exited"):
        moonxp.train(p, X, T, iters=200, check_every=2, progress=kill_the_worker)
    assert processes.team(1) is None and fresh["starting"] is not None
    processes.settle()
    assert fresh["team"] is not team and fresh["team"].alive()
    assert_same_bits(moonxp.train(p, X, T, iters=4), on_threads(monkeypatch, p, X, T, iters=4))


def test_a_worker_that_dies_while_a_stopped_call_is_read_closes_the_team_without_waiting(fresh):
    X, T, p = batch()
    team = up()

    def fail(done, total):
        os.kill(team.processes[0].pid, signal.SIGKILL)  # its call still running: `stop` reads an end of file
        raise ValueError("callback")
    with pytest.raises(ValueError, match="callback"):
        moonxp.train(p, X, T, iters=400, check_every=4, progress=fail)
    assert fresh["team"] is None and not team.alive()


def test_an_error_in_this_process_s_share_stops_the_worker_s_and_keeps_the_team(fresh, monkeypatch):
    X, T, p = large()
    team = up()
    calls = [0]
    real = training._gradient_sums

    def failing(*args, **kwargs):  # this process's tiles only: the worker has its own module
        calls[0] += 1
        if calls[0] == 5:
            raise ValueError("a tile here")
        return real(*args, **kwargs)
    with monkeypatch.context() as m:
        m.setattr(training, "_gradient_sums", failing)
        with pytest.raises(ValueError, match="a tile here"):
            moonxp.train(p, X, T, iters=20)
    assert processes.team(1) is team and not any(team.running) and not team.broken
    assert_same_bits(moonxp.train(p, X, T, iters=8), on_threads(monkeypatch, p, X, T, iters=8))


def test_an_interrupt_while_a_message_is_half_written_closes_the_team(fresh, monkeypatch):
    X, T, p = large()
    team = up()
    connection = team.connections[0]
    real = connection._send

    def interrupted(buffer, *args):  # the first half of the worker's share of the points, then Ctrl-C
        if len(buffer) > 1 << 16:
            real(buffer[:len(buffer) // 2], *args)
            raise KeyboardInterrupt
        return real(buffer, *args)
    monkeypatch.setattr(connection, "_send", interrupted, raising=False)
    with pytest.raises(KeyboardInterrupt):
        moonxp.train(p, X, T, iters=4)
    assert fresh["team"] is None and not team.alive()
    processes.start(1)
    assert_same_bits(moonxp.train(p, X, T, iters=4), on_threads(monkeypatch, p, X, T, iters=4))


def test_a_call_from_inside_a_call_runs_on_threads(fresh, monkeypatch):
    """A progress callback that trains: the workers are busy with the outer call."""
    X, T, p = batch()
    want = on_threads(monkeypatch, p, X, T, iters=8, check_every=4)
    outer_want = on_threads(monkeypatch, p, X, T, iters=16, check_every=4)
    up()
    inner = []
    outer = moonxp.train(p, X, T, iters=16, check_every=4,
                         progress=lambda done, total: inner.append(moonxp.train(p, X, T, iters=8, check_every=4)))
    assert len(inner) == 4
    for result in inner:
        assert_same_bits(result, want)
    assert_same_bits(outer, outer_want)


class Unreadable(Exception):
    def __init__(self, a, b):  # pickles, but does not unpickle (BaseException pickles its args only)
        super().__init__(f"{a} and {b}")


def raise_unreadable():
    raise Unreadable(1, 2)


def test_worker_errors_warnings_and_unreadable_replies(fresh):
    X, T, p = batch()
    diverging = Params(p.W, p.b, p.v * 1e300)
    team = up()
    with processes.owing(team):  # an exception raised in the worker comes back as itself
        team.send(0, moonxp.train, diverging, X, T)
        with pytest.raises(moonxp.DivergedError, match=r"diverged at iteration 1 \(16 of 16 networks\)"):
            team.receive(0)
    with pytest.warns(UserWarning, match="from the worker"):  # its warnings are given here
        with processes.owing(team):
            team.send(0, warnings.warn, "from the worker", UserWarning)
            assert team.receive(0) is None
    with processes.owing(team):  # one that would not unpickle here is told in words
        team.send(0, raise_unreadable)
        with pytest.raises(processes.WorkerProcessError, match="could not send Unreadable: 1 and 2"):
            team.receive(0)
    assert processes.team(1) is team and not team.broken
    with pytest.raises(processes.WorkerProcessError, match="could not be read"):
        with processes.owing(team):  # a result that does not unpickle here: the team cannot go on
            team.send(0, Unreadable, 3, 4)
            team.receive(0)
    assert fresh["team"] is None and not team.alive()


def test_workers_that_cannot_start_warn_once_and_the_work_runs_on_threads(fresh, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/bin/false")
    X, T, p = batch()
    with pytest.warns(processes.WorkerProcessWarning, match="exited while starting") as warned:
        moonxp.train(p, X, T, iters=4)
        processes.settle()
        moonxp.train(p, X, T, iters=4)
    assert [w.filename for w in warned] == [__file__]  # told at the line that called train
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = moonxp.train(p, X, T, iters=4)
    assert fresh["team"] is None and fresh["starting"] is None
    assert_same_bits(result, on_threads(monkeypatch, p, X, T, iters=4))


FORKED = """
import os
from moonxp.engine import processes
team = processes.start(1)
assert team is not None
processes._state["work_s"] = 1.0  # the parent's count of work, which the child starts afresh
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: its parent's workers are forgotten here
    ok = (processes._state == {"team": None, "starting": None, "failed": None, "spawned": [], "work_s": 0.0}
          and all(c.closed for c in team.connections))  # its copies closed: the workers see their end with the parent
    os.write(write, b"1" if ok else b"0")
    os._exit(0)
os.waitpid(pid, 0)
assert os.read(read, 1) == b"1", "the forked child kept its parent's workers"
assert team.alive() and processes.team(1) is team, "the parent's workers were touched"
print("ok")
"""


def test_a_child_forked_from_a_process_with_workers_starts_its_own():
    """In a fresh process (one without JAX's threads, which a fork would copy)."""
    done = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MOONXP_WORKER_PROCESSES": "1"})
    assert done.stdout == "ok\n", done.stderr
