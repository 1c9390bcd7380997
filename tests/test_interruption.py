"""Interruptions: Ctrl-C, SIGTERM and SIGHUP, a stdout closed or full, at start-up, in training and while
writing. Signals are real (`os.kill` to a `python -m moonxp` child) wherever the handler is what is
tested; a hook makes them land at one chosen moment (an import, a figure, a write), not after a sleep."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import moonxp
import moonxp.app.job
import moonxp.app.report

from helpers import (HOMEWORK_LINES, SRC, child, cli, interrupt_on, leftovers, metrics_of, posix, run_child,
                     signal_when, strict_json)


# ---------------------------------------------------------------- Ctrl-C

def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux: /proc)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(child) for child in f.read().split()]
        except FileNotFoundError:  # a thread that just ended: its children moved to another
            pass
    return found


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or not os.path.exists("/proc/self/task"),
                    reason="POSIX signals, Linux /proc")
@pytest.mark.parametrize("samples", [2000, 20_000], ids=["threads", "worker-processes"])
def test_real_sigint_during_training(tmp_path, samples):
    """A real Ctrl-C (SIGINT) to `python -m moonxp` while it trains: on threads (one tile of 2000 points), or
    with moonxp's worker processes (tiles of 20 000 points), which go with it."""
    process = subprocess.Popen([sys.executable, "-m", "moonxp", "--iters", "1000000", "--samples", str(samples),
                                "--no-plot", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "MOONXP_WORKER_PROCESSES": "1"})
    try:
        header = process.stdout.readline()                         # printed just before training starts
        assert header.startswith("moonxp "), process.stderr.read()
        deadline = time.monotonic() + (30 if samples > 2000 else 0.5)
        while not (workers := _children(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bool(workers) == (samples > 2000), workers
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and err == "moonxp: interrupted\n"
    assert strict_json(tmp_path / "metrics.json")["status"] == "interrupted"
    assert os.listdir(tmp_path) == ["metrics.json"]
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


def interrupt_after(calls: int, real):
    count = [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    return wrapper


def test_ctrl_c_between_snapshots_exit_130_metrics_interrupted(tmp_path, monkeypatch):
    monkeypatch.setattr(moonxp.app.job, "train", interrupt_after(3, moonxp.app.job.train))
    code, out, err = cli("--no-plot", "--out", str(tmp_path))
    assert code == 130 and err == "moonxp: interrupted\n"
    assert [line for line in out.splitlines() if line.startswith("It:")] == HOMEWORK_LINES[:3]
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "interrupted"
    assert [s["iteration"] for s in metrics["snapshots"]] == [0, 1, 3]
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["metrics.json"]


def test_ctrl_c_inside_the_training_loop(tmp_path, monkeypatch):
    calls = []

    real_train = moonxp.app.job.train

    def interrupting_train(*args, progress=None, **kwargs):  # train reports progress at each divergence check
        def report(done, total):
            calls.append(done)
            if len(calls) == 6:
                raise KeyboardInterrupt
            progress(done, total)
        return real_train(*args, progress=report, **kwargs)

    monkeypatch.setattr(moonxp.app.job, "train", interrupting_train)
    code, out, err = cli("--iters", "64", "--out", str(tmp_path))
    assert code == 130 and err == "moonxp: interrupted\n"
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "interrupted" and "final_error" not in metrics
    assert metrics["snapshots"] and len(metrics["errors"]) == metrics["snapshots"][-1]["iteration"] + 1
    assert os.listdir(tmp_path) == ["metrics.json"]                # no plots of an unfinished run, no .tmp


def test_ctrl_c_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    old = '{"status": "ok", "old": true}\n'
    (tmp_path / "metrics.json").write_text(old)

    def interrupted_fsync(fd):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    code, out, err = cli("--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert code == 130 and err == "moonxp: interrupted\n"
    assert (tmp_path / "metrics.json").read_text() == old
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- any interruption, any signal

@pytest.mark.parametrize("phase", ["drawing the figures", "boundaries.png", "curve.png", "metrics.json last"])
def test_interruption_while_writing_outputs_leaves_metrics_of_this_run(previous_run, monkeypatch, phase):
    report = moonxp.app.report
    if phase == "drawing the figures":
        monkeypatch.setattr(moonxp.plot, "curve", interrupt_on([], lambda *a: True))
    elif phase.endswith(".png"):
        real = report.write_figure
        monkeypatch.setattr(report, "write_figure",
                            lambda path, fig: (_ for _ in ()).throw(KeyboardInterrupt) if path.name == phase
                            else real(path, fig))
    else:
        real_json, seen = report.write_json, []

        def json_then_interrupt(path, data):
            seen.append(data["status"])
            if data["status"] == "ok":
                raise KeyboardInterrupt
            real_json(path, data)
        monkeypatch.setattr(report, "write_json", json_then_interrupt)
    code, out, err = cli("--iters", "5", "--grid", "8", "--out", str(previous_run))
    assert code == 130 and err == "moonxp: interrupted\n"
    metrics = metrics_of(previous_run)
    assert metrics["status"] == "interrupted" and metrics["config"]["iters"] == 5   # this run, not the last one
    assert [s["iteration"] for s in metrics["snapshots"]] == [0, 1, 3]
    assert metrics["figures"] == [] and os.listdir(previous_run) == ["metrics.json"]  # no old or half figure set


def test_publish_order_covers_the_animation_and_saved_params(tmp_path, monkeypatch):
    assert cli("--iters", "3", "--grid", "8", "--animate", "--out", str(tmp_path))[0] == 0
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "ok" and metrics["figures"] == ["boundaries.png", "curve.png", "boundaries.gif"]
    assert cli("--iters", "2", "--grid", "8", "--out", str(tmp_path))[0] == 0  # no --animate: the old GIF goes
    assert sorted(os.listdir(tmp_path)) == ["boundaries.png", "curve.png", "metrics.json"]
    monkeypatch.setattr(moonxp.app.animation, "write_animation", interrupt_on([], lambda *a: True))
    assert cli("--iters", "4", "--grid", "8", "--animate", "--out", str(tmp_path))[0] == 130
    assert metrics_of(tmp_path)["status"] == "interrupted" and os.listdir(tmp_path) == ["metrics.json"]
    monkeypatch.setattr(moonxp.saved, "save_params", interrupt_on([], lambda *a: True))
    saved = tmp_path.parent / f"{tmp_path.name}-params.npz"
    assert cli("--iters", "5", "--grid", "8", "--save", str(saved), "--out", str(tmp_path))[0] == 130
    assert metrics_of(tmp_path)["config"]["iters"] == 5 and metrics_of(tmp_path)["status"] == "interrupted"
    assert os.listdir(tmp_path) == ["metrics.json"] and not saved.exists()


@posix
@pytest.mark.slow  # a process each; SIGINT in training is tests/test_interruption.py::test_real_sigint_during_training
@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_real_signal_while_training(tmp_path, signame, code):
    hook = signal_when("moonxp.app.job.train", "kwargs['iters'] > 2", signame)  # iterations 3 to 7
    exit_code, out, err = run_child(hook, "--iters", "64", "--no-plot", "--out", str(tmp_path))
    assert exit_code == code
    assert err == ("moonxp: interrupted\n" if signame == "SIGINT" else f"moonxp: interrupted ({signame})\n")
    metrics = metrics_of(tmp_path)
    assert metrics["status"] == "interrupted" and [s["iteration"] for s in metrics["snapshots"]] == [0, 1, 3]
    assert os.listdir(tmp_path) == ["metrics.json"]


@posix
def test_real_sigterm_while_writing_a_figure(previous_run):
    hook = signal_when("moonxp.app.report.write_figure", "args[0].name == 'curve.png'", "SIGTERM")
    code, out, err = run_child(hook, "--iters", "5", "--grid", "8", "--out", str(previous_run))
    assert code == 143 and err == "moonxp: interrupted (SIGTERM)\n"
    metrics = metrics_of(previous_run)
    assert metrics["status"] == "interrupted" and metrics["config"]["iters"] == 5
    assert os.listdir(previous_run) == ["metrics.json"]


@posix
@pytest.mark.slow
def test_signals_inside_every_write_leave_no_temporary(previous_run):
    """SIGTERM during each fsync: the first interrupts, the rest (while cleaning up) are ignored."""
    hook = signal_when("os.fsync", "True", "SIGTERM", every=True)
    code, out, err = run_child(hook, "--iters", "5", "--grid", "8", "--out", str(previous_run))
    assert code == 143 and err == "moonxp: interrupted (SIGTERM)\n"
    assert leftovers(previous_run) == [] and os.listdir(previous_run) == ["metrics.json"]
    assert metrics_of(previous_run)["status"] == "interrupted"


@posix
@pytest.mark.slow
def test_signal_after_the_outcome_changes_nothing(tmp_path):
    """SIGTERM while the interpreter exits, after a finished run: exit 0, nothing on stderr."""
    hook = "import atexit, os, signal\natexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
    code, out, err = run_child(hook, "--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert (code, err) == (0, "") and "Done:" in out and metrics_of(tmp_path)["status"] == "ok"


# ---------------------------------------------------------------- Ctrl-C during start-up

def test_import_moonxp_loads_no_numpy():
    code = "import sys, moonxp; print('numpy' in sys.modules, moonxp.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}).stdout
    assert out == f"False {moonxp.__version__}\n"                 # python -m moonxp starts with almost nothing


@posix
@pytest.mark.parametrize("module", ["numpy"])  # matplotlib loads later, only to draw (an interruption of the run)
def test_ctrl_c_during_start_up_imports(tmp_path, module):
    hook = textwrap.dedent(f"""
        import importlib.abc, os, signal, sys
        class Finder(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == {module!r}:
                    os.kill(os.getpid(), signal.SIGINT)
        sys.meta_path.insert(0, Finder())
    """)
    code, out, err = run_child(hook, "--iters", "1", "--out", str(tmp_path / "out"))
    assert code == 130 and err == "moonxp: interrupted\n" and out == ""


@posix
def test_a_signal_while_python_shuts_down_changes_nothing(tmp_path):
    """The run has ended: a signal during interpreter shutdown neither raises nor kills (exit stays 0)."""
    hook = "import atexit, os, signal\natexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))"
    code, out, err = run_child(hook, "--iters", "1", "--no-plot", "--out", str(tmp_path))
    assert code == 0 and err == "" and "Done:" in out and metrics_of(tmp_path)["status"] == "ok"


# ---------------------------------------------------------------- closed or full stdout

@posix
def test_stdout_closed_by_its_reader_ends_quietly(tmp_path):
    process = child("", "--iters", "100000", "--samples", "1000", "--out", str(tmp_path),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline().startswith("moonxp ")     # what `| head -n1` reads
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 141 and err == ""
    assert metrics_of(tmp_path)["status"] == "interrupted" and leftovers(tmp_path) == []


@posix
@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_stdout_on_a_full_device_is_one_line_exit_2(tmp_path):
    with open("/dev/full", "w") as full:
        process = child("", "--iters", "1", "--out", str(tmp_path), stdout=full, stderr=subprocess.PIPE)
        err = process.communicate(timeout=120)[1]
    assert process.returncode == 2
    assert err == "moonxp: error: cannot write to standard output: No space left on device; redirect it " \
                  "to a file or use --quiet\n"


@posix
def test_closed_stdout_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" >&-', sys.executable, "-m", "moonxp", "--iters", "1",
                                "--out", str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    err = process.communicate(timeout=120)[1]                      # `>&-`: Python's sys.stdout is None
    assert process.returncode == 2
    assert err == "moonxp: error: cannot write to standard output: Bad file descriptor; redirect it to a file " \
                  "or use --quiet\n"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EBADF])
def test_unwritable_stdout_in_process(tmp_path, code):
    class Unwritable(io.StringIO):
        def write(self, text):
            raise OSError(code, os.strerror(code))
    assert cli("--iters", "1", "--no-plot", "--out", str(tmp_path), stdout=Unwritable())[:3:2] == \
        (2, f"moonxp: error: cannot write to standard output: {os.strerror(code)}; redirect it to a file or "
            f"use --quiet\n")
    assert cli("--iters", "1", "--no-plot", "--quiet", "--out", str(tmp_path), stdout=Unwritable())[0] == 0


def test_broken_pipe_in_process_marks_the_run_interrupted(tmp_path):
    class ClosedAfterHeader(io.StringIO):
        def write(self, text):
            if self.getvalue():
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")
            return super().write(text)
    code, out, err = cli("--iters", "8", "--out", str(tmp_path), stdout=ClosedAfterHeader())
    assert code == 141 and err == ""
    assert metrics_of(tmp_path)["status"] == "interrupted" and os.listdir(tmp_path) == ["metrics.json"]
