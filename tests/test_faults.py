"""Faults survived: divergence, device out of memory, Ctrl-C, outputs that cannot be written.

Faults are simulated: out-of-memory by an exception named like CuPy's and PyTorch's
raised on large tiles, Ctrl-C by a KeyboardInterrupt from inside training, and an
unwritable or full disk by OSError(EACCES / ENOSPC) from the file calls (the tests
run as root, whom chmod does not stop).
"""

from __future__ import annotations

import errno
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from matplotlib.figure import Figure

import moonxp
import moonxp.app.cli
import moonxp.app.job
import moonxp.validate
from conftest import HOMEWORK_LINES, assert_near, assert_on_case
from moonxp import DivergedError, Params
from moonxp.engine import policy
from moonxp.engine.executor import map_tiles as real_map_tiles
from moonxp.outputs import write_figure, write_json

training = importlib.import_module(moonxp.train.__module__)
grid = importlib.import_module(moonxp.evaluate_grid.__module__)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = moonxp.app.cli.main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def leftovers(directory) -> list[str]:
    """Temporary files left behind in `directory`."""
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp") or name.startswith("."))


def strict_json(path) -> dict:
    def no_constant(name):
        raise ValueError(f"{name} in strict JSON")
    return json.loads(path.read_text(), parse_constant=no_constant)


def first_diverged_iteration(lr: float) -> int:
    """Where the homework's run diverges at learning rate `lr`, checked at every iteration."""
    X, T, p = moonxp.make_problem(0)
    with pytest.raises(DivergedError) as info:
        moonxp.train(p, X, T, lr=lr, iters=128, check_every=1)
    return info.value.iteration


# ---------------------------------------------------------------- divergence

def test_divergence_names_the_first_bad_iteration_and_the_learning_rate(homework):
    X, T, p = homework
    with pytest.raises(DivergedError) as info:
        moonxp.train(p, X, T, lr=1e6, iters=128)
    i = info.value.iteration
    assert f"training diverged at iteration {i}:" in str(info.value)
    assert "use a smaller learning rate than 1e+06" in str(info.value)
    assert isinstance(info.value, FloatingPointError) and isinstance(info.value, moonxp.MoonxpError)
    assert i == first_diverged_iteration(1e6)                      # found the same when checking every step
    errors = moonxp.train(p, X, T, lr=1e6, iters=i - 1)[1]        # and the state before it is finite
    assert np.isfinite(errors).all()


def test_divergence_on_every_backend(case, homework):
    X, T, p = homework
    huge = np.finfo(case.dtype_name).max ** 0.75                    # finite, but y = a v overflows
    params = Params(*(case.asarray(a) for a in p._replace(v=p.v * huge, W=p.W * huge)))
    with pytest.raises(DivergedError, match="diverged at iteration 0"):
        moonxp.train(params, case.asarray(X), case.asarray(T), iters=4)


def test_divergence_is_checked_every_k_iterations_not_every_step(homework):
    X, T, p = homework
    checks = []
    moonxp.train(p, X, T, iters=64, check_every=16, progress=lambda done, total: checks.append(done))
    assert checks == [16, 32, 48, 64]                              # one host read-back per check, not per step
    checks.clear()
    with pytest.raises(DivergedError):
        moonxp.train(p, X, T, lr=1e6, iters=128, check_every=16, progress=lambda done, total: checks.append(done))
    assert checks == [16]                                          # iteration 27 is caught at the check after it


def test_validation_runs_once_per_call_not_per_iteration(homework, monkeypatch):
    X, T, p = homework
    reads = []
    real = moonxp.validate._finite
    monkeypatch.setattr(moonxp.validate, "_finite", lambda *a: reads.append(1) or real(*a))
    counts = []
    for iters in (1, 40):
        reads.clear()
        moonxp.train(p, X, T, iters=iters)
        counts.append(len(reads))
    assert counts[0] == counts[1] <= 2                              # params and X: one read-back each


def test_cli_divergence_exit_3_with_whole_metrics(tmp_path):
    code, out, err = cli("--lr", "1e6", "--no-plot", "--out", str(tmp_path))
    assert code == 3
    i = first_diverged_iteration(1e6)
    assert err == f"moonxp: training diverged at iteration {i}: the error or the parameters are no longer finite; " \
                  f"use a smaller learning rate than 1e+06\n"       # one line, the true iteration, no warnings
    metrics = strict_json(tmp_path / "metrics.json")
    assert metrics["status"] == "diverged" and f"iteration {i}" in metrics["message"]
    assert metrics["config"]["lr"] == 1e6
    assert [s["iteration"] for s in metrics["snapshots"]] == [0, 1, 3, 7, 15]
    assert leftovers(tmp_path) == [] and os.listdir(tmp_path) == ["metrics.json"]


def test_cli_divergence_of_an_ensemble(tmp_path):
    code, out, err = cli("--lr", "1e300", "--ensemble", "3", "--iters", "4", "--no-plot", "--out", str(tmp_path))
    assert code == 3 and "diverged at iteration 1 (3 of 3 networks)" in err and err.count("\n") == 1
    assert strict_json(tmp_path / "metrics.json")["status"] == "diverged"


# ---------------------------------------------------------------- device out of memory

class FakeOutOfMemoryError(RuntimeError):
    """Named like cupy.cuda.memory.OutOfMemoryError and torch.cuda.OutOfMemoryError."""


def out_of_memory_above(limit: int, failures: list):
    """A map_tiles whose work runs out of 'device memory' in tiles planned for more than `limit` elements."""
    def map_tiles(work, planner, total, policy):
        budget = {}

        def recording(tile_elements):
            budget["now"] = tile_elements
            return planner(tile_elements)

        def bounded(tile):
            size = min(budget["now"], total)
            if size > limit:
                failures.append(size)
                raise FakeOutOfMemoryError(f"out of memory allocating {size} elements")
            return work(tile)
        return real_map_tiles(bounded, recording, total, policy)
    return map_tiles


@pytest.fixture
def device_memory(monkeypatch):
    """`limit(module, elements, failures)`: that module's work runs out of memory above `elements`.

    Tile sizes learned from these failures are forgotten after the test (`policy.reset`).
    """
    def limit(module, elements: int, failures: list) -> None:
        monkeypatch.setattr(module, "map_tiles", out_of_memory_above(elements, failures))
    yield limit
    policy.reset()


def test_grid_out_of_memory_retries_in_smaller_tiles(case, homework, monkeypatch, device_memory):
    params = Params(*(case.asarray(a) for a in homework[2]))
    expected = moonxp.evaluate_grid(params, 64)
    failures = []
    device_memory(grid, 20_000, failures)
    actual = moonxp.evaluate_grid(params, 64)
    assert failures                                                # it did run out, and recovered
    assert_on_case(actual, case)
    assert_near(moonxp.to_host(actual), moonxp.to_host(expected), case)


def test_batched_training_out_of_memory_retries_in_smaller_tiles(homework, monkeypatch, device_memory):
    X, T, p = moonxp.make_ensemble(0, 4, n_samples=256, hidden=16)
    expected = moonxp.train(p, X, T, iters=5)
    failures = []
    device_memory(training, 3000, failures)
    actual = moonxp.train(p, X, T, iters=5)
    assert failures
    for a, e in zip(actual[0], expected[0]):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-12, atol=1e-12)


def test_out_of_memory_that_no_tile_size_cures_is_a_clear_error(homework, monkeypatch, device_memory):
    device_memory(grid, 0, [])
    with pytest.raises(moonxp.MoonxpError, match="out of device memory even in tiles of .*use fewer networks or points"):
        moonxp.evaluate_grid(homework[2], 64)


def test_cli_out_of_memory_is_exit_2(tmp_path, monkeypatch, device_memory):
    device_memory(grid, 0, [])
    code, out, err = cli("--iters", "2", "--out", str(tmp_path))  # the grids are evaluated for the figures
    assert code == 2 and "out of device memory" in err and err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "metrics.json").exists()  # the trained run's metrics are not lost with the figures


@pytest.mark.parametrize("make", [
    lambda: FakeOutOfMemoryError("x"),
    lambda: pytest.importorskip("torch").cuda.OutOfMemoryError("CUDA out of memory"),
    lambda: pytest.importorskip("cupy").cuda.memory.OutOfMemoryError(1 << 40, 1 << 30, 0),
    lambda: RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB"),
], ids=["fake", "torch", "cupy", "xla"])
def test_out_of_memory_errors_of_each_library_are_recognized(make):
    from moonxp.arrays import is_out_of_memory
    assert is_out_of_memory(make())
    assert not is_out_of_memory(ValueError("shapes do not match"))


def test_cli_out_of_host_memory_is_exit_2(tmp_path, monkeypatch):
    def too_big(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(moonxp.app.job, "execute", too_big)
    code, out, err = cli("--no-plot", "--out", str(tmp_path))
    assert code == 2 and err == "moonxp: error: out of host memory: use a smaller --samples, --hidden, " \
                                "--ensemble or --grid\n"


@pytest.mark.parametrize("make", [
    lambda: type("OutOfMemoryError", (MemoryError,), {})("Out of memory allocating 4,294,967,296 bytes"),
    lambda: pytest.importorskip("cupy").cuda.memory.OutOfMemoryError(1 << 32, 1 << 30, 0),
], ids=["stand-in", "cupy"])
def test_cli_device_out_of_memory_that_is_a_memory_error(tmp_path, monkeypatch, make):
    """CuPy's OutOfMemoryError subclasses MemoryError: it is still the device's memory, not the host's."""
    error = make()
    assert isinstance(error, MemoryError)

    def too_big(*args, **kwargs):
        raise error
    monkeypatch.setattr(moonxp.app.job, "execute", too_big)
    code, out, err = cli("--no-plot", "--out", str(tmp_path))
    assert code == 2 and err.startswith("moonxp: error: out of device memory (") and err.count("\n") == 1
    assert "host" not in err


# ---------------------------------------------------------------- Ctrl-C

@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_real_sigint_during_training(tmp_path):
    """A real Ctrl-C (SIGINT) to `python -m moonxp` while it trains."""
    process = subprocess.Popen([sys.executable, "-m", "moonxp", "--iters", "1000000", "--samples", "2000",
                                "--no-plot", "--out", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        header = process.stdout.readline()                         # printed just before training starts
        assert header.startswith("moonxp "), process.stderr.read()
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and err == "moonxp: interrupted\n"
    assert strict_json(tmp_path / "metrics.json")["status"] == "interrupted"
    assert os.listdir(tmp_path) == ["metrics.json"]


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


# ---------------------------------------------------------------- outputs that cannot be written

def raise_oserror(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def test_cli_unwritable_out_directory_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "TemporaryFile", raise_oserror(errno.EACCES))  # what a read-only dir does
    monkeypatch.setattr(moonxp.app.job, "execute", lambda *a, **k: pytest.fail("trained before checking --out"))
    code, out, err = cli("--no-plot", "--out", str(tmp_path / "out"))
    assert code == 2 and out == ""
    assert err == f"moonxp: error: cannot write into {str(tmp_path / 'out')!r}: Permission denied; " \
                  f"choose another --out\n"


def refuse_temporaries(code: int, real=os.open):
    """os.open that fails for the writer's temporary files only."""
    def open_(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code))
        return real(path, *args, **kwargs)
    return open_


@pytest.mark.parametrize("call, code, phrase", [
    ("fsync", errno.ENOSPC, "No space left on device; it was left as it was; free disk space or choose another --out"),
    ("replace", errno.EACCES, "Permission denied; it was left as it was; choose another --out"),
    ("open", errno.EACCES, "Permission denied; it was left as it was"),
    ("open", errno.ENOSPC, "No space left on device"),
])
def test_cli_output_write_fails_whole(tmp_path, monkeypatch, call, code, phrase):
    monkeypatch.setattr(os, call, refuse_temporaries(code) if call == "open" else raise_oserror(code))
    exit_code, out, err = cli("--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert exit_code == 2 and phrase in err and err.count("\n") == 1 and "Traceback" not in err
    assert os.listdir(tmp_path) == []                              # no metrics.json, no half file, no .tmp


def test_cli_directory_in_the_way_of_an_output_file(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    code, out, err = cli("--iters", "2", "--no-plot", "--out", str(tmp_path))
    assert code == 2 and "cannot write" in err and "metrics.json" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["metrics.json"] and (tmp_path / "metrics.json").is_dir()


def test_write_json_disk_full_raises_output_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", raise_oserror(errno.ENOSPC))
    with pytest.raises(moonxp.OutputError, match="No space left on device") as info:
        write_json(tmp_path / "m.json", {"a": 1})
    assert isinstance(info.value, OSError)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- atomic replacement

def test_existing_output_is_replaced_atomically(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    with open(path) as reader:                                     # a reader of the old file ...
        write_json(path, {"new": True})
        assert reader.read() == "old\n"                            # ... still sees it whole
    assert strict_json(path) == {"new": True}
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EXDEV, errno.EACCES])
def test_failed_replacement_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / "metrics.json"
    path.write_text("old\n")
    monkeypatch.setattr(os, "replace", raise_oserror(code))
    with pytest.raises(moonxp.OutputError, match="it was left as it was"):
        write_json(path, {"new": True})
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["metrics.json"]


def test_figure_that_fails_half_way_keeps_the_old_png(tmp_path):
    path = tmp_path / "curve.png"
    path.write_bytes(b"old png")
    figure = Figure()

    def half_then_full(f, **kwargs):
        f.write(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    figure.savefig = half_then_full
    with pytest.raises(moonxp.OutputError, match="No space left on device"):
        write_figure(path, figure)
    assert path.read_bytes() == b"old png" and os.listdir(tmp_path) == ["curve.png"]


def test_non_os_error_while_writing_leaves_no_temporary(tmp_path):
    figure = Figure()
    figure.savefig = lambda f, **kwargs: (f.write(b"partial"), 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_figure(tmp_path / "boundaries.png", figure)
    assert os.listdir(tmp_path) == []


def test_cli_rerun_replaces_outputs_whole(tmp_path):
    assert cli("--iters", "3", "--grid", "8", "--out", str(tmp_path))[0] == 0
    first = strict_json(tmp_path / "metrics.json")
    assert cli("--iters", "4", "--grid", "8", "--out", str(tmp_path))[0] == 0
    second = strict_json(tmp_path / "metrics.json")
    assert first["config"]["iters"] == 3 and second["config"]["iters"] == 4
    assert sorted(os.listdir(tmp_path)) == ["boundaries.png", "curve.png", "metrics.json"]
    for png in ("boundaries.png", "curve.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_out_of_memory_inside_a_compiled_program_is_exit_2(tmp_path, monkeypatch):
    class XlaRuntimeError(RuntimeError):
        pass

    def exhausted(*args, **kwargs):
        raise XlaRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4.0GiB.\ndetails")
    monkeypatch.setattr(moonxp.app.job, "train", exhausted)
    code, _, err = cli("--out", str(tmp_path), "--no-plot")
    assert code == 2
    assert err.count("\n") == 1 and "out of device memory (RESOURCE_EXHAUSTED" in err
