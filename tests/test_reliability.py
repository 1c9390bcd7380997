"""Reliability, round 2: other signals, closed pipes, silly sizes, failures inside failure handlers.

Each test reproduces one item of issue 9 as a user meets it. Signals are real
(`os.kill` to a `python -m moonxp` child) wherever the handler is what is tested;
a hook module makes them land at one chosen moment (an import, a figure, a write)
instead of after a sleep, so no test depends on timing.
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
import textwrap

import numpy as np
import pytest

import moonxp
import moonxp.app.budget
import moonxp.app.cli
import moonxp.app.info
import moonxp.app.job
import moonxp.app.report
import moonxp.plot
import moonxp.saved
from moonxp import InvalidInputError, InvalidTypeError, Params
from moonxp.app.model import Config
from moonxp.outputs import write_json

SRC = os.path.dirname(os.path.dirname(moonxp.__file__))
posix = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def cli(*argv: str, stdout=None) -> tuple[int, str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    code = moonxp.app.cli.main(list(argv), stdout=out, stderr=err)
    return code, (out.getvalue() if isinstance(out, io.StringIO) else ""), err.getvalue()


def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp") or name.startswith("."))


def metrics_of(directory) -> dict:
    def no_constant(name):
        raise ValueError(name)
    return json.loads((directory / "metrics.json").read_text(), parse_constant=no_constant)


def child(hook: str, *argv: str, **popen) -> subprocess.Popen:
    """`python -m moonxp argv` with `hook` (Python source) run first, before moonxp is imported."""
    code = hook + "\nimport runpy, sys\nsys.argv = ['moonxp'] + sys.argv[1:]\n" \
                  "runpy.run_module('moonxp', run_name='__main__', alter_sys=True)\n"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=env, text=True, **popen)


def run_child(hook: str, *argv: str, timeout: float = 120) -> tuple[int, str, str]:
    process = child(hook, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, out, err


def signal_when(function: str, condition: str, signame: str, every: bool = False) -> str:
    """Hook: `function` (module.attr) sends this process `signame` when `condition` holds for its arguments."""
    module, name = function.rsplit(".", 1)
    return textwrap.dedent(f"""
        import importlib, os, signal
        module = importlib.import_module({module!r})
        real, sent = getattr(module, {name!r}), []
        def hooked(*args, **kwargs):
            if ({condition}) and ({every} or not sent):
                sent.append(1)
                os.kill(os.getpid(), signal.{signame})
            return real(*args, **kwargs)
        setattr(module, {name!r}, hooked)
    """)


# ---------------------------------------------------------------- 1, 2: any interruption, any signal

@pytest.fixture
def previous_run(tmp_path):
    """An output directory holding a finished earlier run (iters 3, figures and metrics)."""
    assert cli("--iters", "3", "--grid", "8", "--out", str(tmp_path))[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["boundaries.png", "curve.png", "metrics.json"]
    return tmp_path


def interrupt_on(calls: list, when):
    def raiser(*args, **kwargs):
        calls.append(args)
        if when(*args):
            raise KeyboardInterrupt
    return raiser


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
@pytest.mark.slow  # a process each; SIGINT in training is tests/test_faults.py::test_real_sigint_during_training
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


# ---------------------------------------------------------------- 3: Ctrl-C during start-up

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


# ---------------------------------------------------------------- 4: closed or full stdout

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


# ---------------------------------------------------------------- 5: the atomic writer's own failures

def test_cleanup_failure_never_masks_the_first_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "unlink", lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EPERM, "unlink")))
    with pytest.raises(moonxp.OutputError) as info:
        write_json(tmp_path / "metrics.json", {"a": 1})
    assert str(info.value) == f"cannot write {str(tmp_path / 'metrics.json')!r}: Operation not permitted; it was " \
                              f"left as it was; choose another --out"
    assert info.value.__context__ is None or not isinstance(info.value.__context__, PermissionError) or \
        "unlink" not in str(info.value.__context__)


@pytest.fixture
def append_only(tmp_path):
    directory = tmp_path / "append-only"
    directory.mkdir()
    if subprocess.run(["chattr", "+a", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("chattr +a is not available here")
    yield directory
    subprocess.run(["chattr", "-a", str(directory)], check=True)


def test_append_only_directory_is_refused_before_training(append_only, monkeypatch):
    monkeypatch.setattr(moonxp.app.job, "execute", lambda *a, **k: pytest.fail("trained before checking --out"))
    code, out, err = cli("--iters", "2", "--out", str(append_only))
    assert code == 2 and err.count("\n") == 1 and "append-only or immutable" in err and "--out" in err
    with pytest.raises(moonxp.OutputError, match="append-only"):
        write_json(append_only / "metrics.json", {"a": 1})
    assert os.listdir(append_only) == []                           # no temporary that could never be removed


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_new_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == mode


# ---------------------------------------------------------------- 6: sizes refused up front; the ensemble draw

@pytest.mark.parametrize("seed, networks, n_samples, noise, hidden", [
    (0, 6, 100, 0.0, 50), (7, 4, 1, 0.2, 1), (2**32 - 3, 3, 7, 0.05, 3), (123, 5, 2, 1.0, 2), (42, 3, 33, 0.1, 17),
])
def test_ensemble_network_k_is_bit_identical_to_the_run_of_seed_plus_k(seed, networks, n_samples, noise, hidden):
    X, T, params = moonxp.make_ensemble(seed, networks, n_samples, noise, hidden)
    X0, T0, _ = moonxp.make_problem(seed, n_samples, noise, hidden)
    assert X.tobytes() == X0.tobytes() and T.tobytes() == T0.tobytes()
    for k in range(networks):
        single = moonxp.make_problem(seed + k, n_samples, noise, hidden)[2]
        for field, a, b in zip("Wbv", params, single):
            assert a[k].tobytes() == b.tobytes(), (field, k)


@pytest.fixture
def host_memory(monkeypatch):
    """`host_memory(bytes)`: the budget sees that much free host memory."""
    def set_(size: int) -> None:
        monkeypatch.setattr(moonxp.app.budget, "host_memory", lambda: size)
    return set_


@pytest.mark.parametrize("option, value, others", [
    ("ensemble", 10_000_000, []), ("hidden", 10**9, []), ("samples", 10**9, []), ("grid", 4096, []),
    ("iters", 10**10, []), ("grid", 4096, ["--ensemble", "100"]),
])
def test_sizes_that_cannot_fit_are_refused_before_any_work(tmp_path, monkeypatch, host_memory, option, value,
                                                          others):
    host_memory(2 << 30)
    monkeypatch.setattr(moonxp.app.job, "make_problem", lambda *a: pytest.fail("drew data for a refused run"))
    monkeypatch.setattr(moonxp.app.job, "make_ensemble", lambda *a: pytest.fail("drew data for a refused run"))
    code, out, err = cli(f"--{option}", str(value), *others, "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and out == "" and not (tmp_path / "out").exists()
    assert err.startswith(f"moonxp: error: --{option} {value} is too large: this run needs about ")
    largest = int(err.split(f"use --{option} ")[1].split()[0])
    backend = moonxp.resolve()
    config = Config(**{**Config().as_dict(), option: largest, **({"ensemble": 100} if others else {})})
    moonxp.app.budget.check(config, backend, plots=True)          # the value it names fits ...
    with pytest.raises(InvalidInputError):                         # ... and the next one does not
        moonxp.app.budget.check(Config(**{**config.as_dict(), option: largest + 1}), backend, plots=True)


def test_the_homework_run_fits_in_little_memory(host_memory):
    host_memory(200 << 20)
    moonxp.app.budget.check(Config(), moonxp.resolve(), plots=True)


def test_ensemble_beyond_the_seeds_is_named_plainly(tmp_path):
    code, out, err = cli("--ensemble", str(10**12), "--out", str(tmp_path))
    assert code == 2 and err == "moonxp: error: --ensemble must be an integer from 1 to 4294967296, not 1000000000000\n"
    with pytest.raises(InvalidInputError, match=r"networks must be an integer from 1 to 4294967296, not 10+$"):
        moonxp.make_ensemble(0, 10**12)


# ---------------------------------------------------------------- 7: divergence in the final state

def test_non_finite_parameters_after_a_step_are_divergence(homework):
    with pytest.raises(moonxp.DivergedError, match="diverged at iteration 1:"):
        moonxp.train(homework[2], np.array([[-0.8, 1.0]]), np.array([1.0]), lr=1e308, iters=1)
    for check_every in (1, 16):                                    # caught at the check, whatever its period
        with pytest.raises(moonxp.DivergedError, match="diverged at iteration 1:"):
            moonxp.train(homework[2], np.array([[-0.8, 1.0]]), np.array([1.0]), lr=1e308, iters=5,
                         check_every=check_every)


# ---------------------------------------------------------------- 8: only documented errors

def _torch_meta(homework):
    torch = pytest.importorskip("torch")
    X, T, p = homework
    p = Params(*(torch.asarray(a, device="meta") for a in p))
    moonxp.train(p, torch.asarray(X, device="meta"), torch.asarray(T, device="meta"))


EMPTY_BATCH = Params(np.zeros((3, 0, 2, 50)), np.zeros((3, 0, 50)), np.zeros((3, 0, 50)))
RAW_ERRORS = {
    "lr 10**400": (lambda h: moonxp.train(h[2], h[0], h[1], lr=10**400), InvalidInputError),
    "descent lr 10**400": (lambda h: moonxp.descent(h[2], h[2], 10**400), InvalidInputError),
    "noise 10**400": (lambda h: moonxp.make_problem(noise=10**400), InvalidInputError),
    "lo -10**400": (lambda h: moonxp.evaluate_grid(h[2], 5, lo=-10**400), InvalidInputError),
    "empty batch": (lambda h: moonxp.evaluate_grid(EMPTY_BATCH, 5), InvalidInputError),
    "snapshot 1.5": (lambda h: moonxp.snapshot_iterations(1.5), InvalidInputError),
    "to_host list": (lambda h: moonxp.to_host([1, 2]), InvalidTypeError),
    "torch meta train": (_torch_meta, InvalidTypeError),
    "masked X": (lambda h: moonxp.forward(h[2], np.ma.masked_array(h[0], mask=h[0] > 2)), InvalidTypeError),
    "grid overflow": (lambda h: moonxp.evaluate_grid(h[2], 5, -1e308, 1e308), InvalidInputError),
    "float32 grid beyond range": (lambda h: moonxp.evaluate_grid(Params(*(a.astype(np.float32) for a in h[2])), 5,
                                                                 -1e39, 1e39), InvalidInputError),
    "one label for N points": (lambda h: moonxp.train(h[2], h[0], np.ones(1), iters=1), InvalidInputError),
    "one label, backprop": (lambda h: moonxp.backprop(h[2], h[0], np.ones(1)), InvalidInputError),
}


@pytest.mark.parametrize("name", RAW_ERRORS)
def test_every_library_error_is_a_documented_type(homework, name):
    call, kind = RAW_ERRORS[name]
    with pytest.raises(kind) as info:
        call(homework)
    assert isinstance(info.value, moonxp.MoonxpError) and "\n" not in str(info.value)


def test_numpy_integer_grid_size_is_accepted(homework):
    grid = moonxp.evaluate_grid(homework[2], np.int16(400))
    assert grid.shape == (400, 400) and np.isfinite(grid).all()


# ---------------------------------------------------------------- 9: CLI messages name the right thing

@pytest.mark.parametrize("argv", [["--noise", "1e308"], ["--noise", "1e37", "--dtype", "float32"]])
def test_huge_noise_names_noise(tmp_path, argv):
    code, out, err = cli(*argv, "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "--noise" in err and "learning rate" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_bench_output_that_is_a_directory_fails_before_measuring(tmp_path, monkeypatch, option):
    from moonxp.benchmark import runner
    monkeypatch.setattr(runner, "measure_all", lambda *a, **k: pytest.fail(f"measured before checking {option}"))
    code, out, err = cli("bench", "--quick", option, str(tmp_path))
    assert code == 2 and err == f"moonxp: error: cannot write {str(tmp_path)!r}: it is a directory; give {option} " \
                                f"a file name\n"


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_bench_output_below_a_file_names_its_option(tmp_path, monkeypatch, option):
    from moonxp.benchmark import runner
    monkeypatch.setattr(runner, "measure_all", lambda *a, **k: pytest.fail(f"measured before checking {option}"))
    (tmp_path / "file").write_text("")
    code, out, err = cli("bench", "--quick", option, str(tmp_path / "file" / "r.out"))
    assert code == 2 and f"choose another {option}" in err and "--out" not in err


def test_divergence_with_metrics_unwritable_keeps_both_messages(tmp_path):
    (tmp_path / "metrics.json").mkdir()
    code, out, err = cli("--lr", "1e6", "--no-plot", "--out", str(tmp_path))
    lines = err.splitlines()
    assert code == 3 and len(lines) == 2
    assert lines[0].startswith("moonxp: training diverged at iteration ")
    assert lines[1].startswith("moonxp: error: cannot write ") and "metrics.json" in lines[1]


def test_failure_after_a_figure_was_written_says_what_happened(previous_run, monkeypatch):
    real = moonxp.app.report.write_figure

    def full_at_curve(path, figure):
        if path.name == "curve.png":
            raise moonxp.OutputError(f"cannot write {str(path)!r}: No space left on device; it was left as it was")
        real(path, figure)
    monkeypatch.setattr(moonxp.app.report, "write_figure", full_at_curve)
    code, out, err = cli("--iters", "5", "--grid", "8", "--out", str(previous_run))
    assert code == 2 and "curve.png" in err and "nothing was written" not in err
    metrics = metrics_of(previous_run)                             # this run, marked failed, no figure set
    assert metrics["status"] == "failed" and "curve.png" in metrics["message"] and metrics["config"]["iters"] == 5
    assert os.listdir(previous_run) == ["metrics.json"]


@pytest.mark.parametrize("argv", [["--out", ""], ["--backend", ""], ["--device", "cpu\n"], ["--out", " "],
                                  ["bench", "--json", ""]])
def test_empty_or_unprintable_names_are_refused(tmp_path, argv):
    code, out, err = cli(*argv) if argv[0] == "bench" else cli(*argv, "--iters", "1")
    assert code == 2 and "is not a name" in err and err.count("\n") == 1


# ---------------------------------------------------------------- 10: tracers and transforms

def test_public_functions_under_jax_transforms(homework):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    X0, T0, p0 = homework                                          # NumPy float64: the references
    X, T = jax.numpy.asarray(X0), jax.numpy.asarray(T0)
    p = Params(*(jax.numpy.asarray(a) for a in p0))
    np.testing.assert_allclose(jax.jit(lambda P: moonxp.forward(P, X))(p), moonxp.forward(p0, X0), rtol=1e-12)
    grads = jax.grad(lambda P: moonxp.loss(moonxp.forward(P, X), T))(p)
    np.testing.assert_allclose(grads.W, moonxp.backprop(p0, X0, T0).W, rtol=1e-10, atol=1e-12)
    batch = Params(*(np.stack([a, 2 * a]) for a in p0))
    np.testing.assert_allclose(jax.vmap(lambda P: moonxp.forward(P, X))(Params(*map(jax.numpy.asarray, batch))),
                               moonxp.forward(batch, X0), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda P: moonxp.evaluate_grid(P, 4))(p), moonxp.evaluate_grid(p0, 4),
                               rtol=1e-12)
    with pytest.raises(InvalidTypeError, match="moonxp.kernels"):
        jax.jit(lambda P: moonxp.train(P, X, T, iters=2))(p)


def test_public_functions_under_torch_func(homework):
    torch = pytest.importorskip("torch")
    X, T = torch.asarray(homework[0]), torch.asarray(homework[1])
    p = Params(*(torch.asarray(a) for a in homework[2]))
    stacked = torch.stack([p.W, 2 * p.W])
    out = torch.func.vmap(lambda W: moonxp.forward(Params(W, p.b, p.v), X))(stacked)
    np.testing.assert_allclose(out[1].numpy(), moonxp.forward(Params(2 * p.W, p.b, p.v), X).numpy(), rtol=1e-12)
    grad = torch.func.grad(lambda W: moonxp.loss(moonxp.forward(Params(W, p.b, p.v), X), T))(p.W)
    np.testing.assert_allclose(grad.numpy(), moonxp.backprop(p, X, T).W.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(InvalidTypeError, match="moonxp.kernels"):
        torch.func.vmap(lambda W: moonxp.train(Params(W, p.b, p.v), X, T, iters=1)[1])(stacked)


# ---------------------------------------------------------------- 11: a broken backend install

@pytest.fixture
def broken_cupy(monkeypatch):
    real = importlib.import_module

    def import_module(name, package=None):
        if name.split(".")[0] == "cupy":
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version\nmore")
        return real(name, package)
    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # "installed"


def test_broken_backend_install_is_one_line(broken_cupy, tmp_path):
    code, out, err = cli("--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "cupy is installed but cannot be imported (RuntimeError: CUDA driver version is insufficient" in err


def test_broken_backend_install_in_info(broken_cupy):
    text = moonxp.app.info.text(measure_limits=False)
    line = next(line for line in text.splitlines() if line.strip().startswith("cupy"))
    assert "not usable: " in line and "RuntimeError" in line
