"""The command line: main(argv) in-process, one real `python -m moonxp` that writes PNGs, and bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import moonxp
import moonxp.app.cli
from moonxp.app.cli import main
import moonxp.app.report
from helpers import HOMEWORK_LINES, cli, cuda, cuda_usable, metrics_of, needs

BLUE, ORANGE = (0x00 / 255, 0x88 / 255, 0xFF / 255), (0xFF / 255, 0x88 / 255, 0x00 / 255)


def it_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("It:")]


# ---------------------------------------------------------------- runs in-process

def test_default_run(tmp_path):
    code, out, err = cli("--out", str(tmp_path), "--no-plot")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("moonxp ")
    for word in ("numpy", "cpu", "float64", "N=100", "H=50", "128 iterations", "grid 100x100"):
        assert word in lines[0]
    assert lines[1:9] == HOMEWORK_LINES
    assert lines[9].startswith("Done: final error 0.000, accuracy 100.0%")
    assert "metrics.json" in lines[9]
    assert len(lines) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # --no-plot: no PNG, no temporary
    assert "Traceback" not in err


def test_json_prints_the_metrics(tmp_path):
    code, out, err = cli("--out", str(tmp_path), "--no-plot", "--json", "--iters", "16")
    assert code == 0, err
    data = json.loads(out)  # nothing but JSON on stdout
    for key in ("config", "backend", "versions", "errors", "accuracy", "timings"):
        assert key in data
    assert data["config"]["iters"] == 16 and data["config"]["lr"] == 0.1 and data["config"]["seed"] == 0
    assert data["backend"]["name"] == "numpy" and data["backend"]["dtype"] == "float64"
    assert data["backend"]["device"] == "cpu" and data["backend"]["execution"] == "eager (no compiler)"
    assert data["versions"]["numpy"] == np.__version__ and data["versions"]["moonxp"] == moonxp.__version__
    assert len(data["errors"]) == 17
    assert ["It: %d, Error: %.3f" % (i, data["errors"][i]) for i in (0, 1, 3, 7, 15)] == HOMEWORK_LINES[:5]
    assert 0 <= data["accuracy"] <= 1
    assert data["timings"]["total_s"] >= 0
    assert json.loads((tmp_path / "metrics.json").read_text()) == data


def test_quiet_prints_nothing(tmp_path):
    code, out, err = cli("--out", str(tmp_path), "--no-plot", "--quiet", "--iters", "4")
    assert (code, out, err) == (0, "", "")
    assert len(json.loads((tmp_path / "metrics.json").read_text())["errors"]) == 5


def test_ensemble_shows_the_spread(tmp_path):
    code, out, err = cli("--out", str(tmp_path), "--ensemble", "4", "--iters", "8", "--grid", "20")
    assert code == 0, err
    assert "4 networks" in out.splitlines()[0]
    lines = it_lines(out)
    assert len(lines) == 4  # It: 0, 1, 3, 7
    for line, homework in zip(lines, HOMEWORK_LINES):
        assert line.startswith(homework + "  (4 networks: median ")  # network 0 is the homework's
        assert ", min " in line and ", max " in line
    data = json.loads((tmp_path / "metrics.json").read_text())
    ensemble = data["ensemble"]
    assert ensemble["networks"] == 4
    assert len(ensemble["final_errors"]) == len(ensemble["accuracies"]) == 4
    assert ensemble["final_errors"][0] == data["final_error"]
    assert len(set(ensemble["final_errors"])) > 1  # four different networks
    assert ensemble["final_error"]["min"] <= ensemble["final_error"]["median"] <= ensemble["final_error"]["max"]
    import matplotlib.image
    image = matplotlib.image.imread(tmp_path / "ensemble.png")
    assert image.shape[0] == 300 and image.shape[1] == 300 * 6  # 4 boundaries + 2 histograms, 3 in each
    assert (tmp_path / "boundaries.png").exists() and (tmp_path / "curve.png").exists()


@pytest.fixture(scope="module")
def numpy_lines(tmp_path_factory):
    code, out, err = cli("--out", str(tmp_path_factory.mktemp("numpy")), "--no-plot", "--iters", "32")
    assert code == 0, err
    return it_lines(out)


@pytest.mark.parametrize("argv", [
    pytest.param(["--backend", "torch"], marks=needs("torch"),
                 id="torch"),
    pytest.param(["--backend", "jax"], marks=needs("jax"),
                 id="jax"),
    pytest.param(["--backend", "array-api-strict"], id="array-api-strict",
                 marks=needs("array_api_strict")),
    pytest.param(["--device", "cuda"], marks=cuda(), id="cupy-cuda"),
    pytest.param(["--device", "cuda:1"], marks=cuda(index=1), id="cupy-cuda1"),
    pytest.param(["--device", "cuda:0", "--backend", "torch"], marks=cuda("torch"), id="torch-cuda"),
    pytest.param(["--device", "cuda:0", "--backend", "jax"], marks=cuda("jax"), id="jax-cuda"),
])
def test_backend_end_to_end(argv, tmp_path, numpy_lines):
    code, out, err = cli(*argv, "--out", str(tmp_path), "--no-plot", "--iters", "32")
    assert code == 0, err
    backend = argv[argv.index("--backend") + 1] if "--backend" in argv else "cupy"
    assert out.splitlines()[0].startswith(f"moonxp {moonxp.__version__}: {backend} ")
    assert it_lines(out) == numpy_lines == HOMEWORK_LINES[:6]
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["backend"]["name"] == backend and data["backend"]["dtype"] == "float64"
    gpu = "--device" in argv
    expected = {"jax": "jax.jit", "torch": "eager (too small to compile)" if gpu else "eager (compiles only when asked)",
                "array-api-strict": "eager (no compiler)"}  # CuPy: too small to compile, or no compiler
    assert data["backend"]["execution"] == expected.get(backend, "eager (too small to compile)") or \
        backend == "cupy" and data["backend"]["execution"] == "eager (no compiler)"
    assert f", {data['backend']['execution']} | " in out.splitlines()[0]


def test_backend_float32_runs(tmp_path):
    code, out, err = cli("--dtype", "float32", "--out", str(tmp_path), "--no-plot", "--iters", "8")
    assert code == 0, err
    assert "float32" in out.splitlines()[0]
    assert it_lines(out)[0] == HOMEWORK_LINES[0]


# ---------------------------------------------------------------- one real process, real PNGs

def _near(image: np.ndarray, colour: tuple, tol: float = 0.06) -> int:
    return int((np.abs(image[..., :3] - np.array(colour)) < tol).all(axis=-1).sum())


def test_python_m_moonxp_writes_real_pngs(tmp_path):
    import matplotlib.image
    out = tmp_path / "out"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "moonxp", "--out", str(out)], capture_output=True, text=True,
                          timeout=120, env=env)
    wall = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    in_all = float(done.stdout.splitlines()[-1].split(" s in all")[0].rpartition(", ")[2])
    assert 0.5 * wall <= in_all <= wall  # the printed time is the command's, as felt (less Python's start-up)
    assert it_lines(done.stdout) == HOMEWORK_LINES
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["boundaries.png", "curve.png", "metrics.json"]

    boundaries = matplotlib.image.imread(out / "boundaries.png")
    assert boundaries.shape[:2] == (600, 1200)  # 8 panels: 2 rows of 4, 3 inches each at 100 dpi
    assert _near(boundaries, BLUE) > 100 and _near(boundaries, ORANGE) > 100  # the data points
    # the decision regions: the homework's colours, lightened
    assert _near(boundaries, [1 - 0.35 * (1 - c) for c in BLUE]) > 10_000
    assert _near(boundaries, [1 - 0.35 * (1 - c) for c in ORANGE]) > 10_000
    assert (boundaries[..., :3].max(axis=-1) < 0.25).sum() > 1000  # dark: dashed contour, titles, ticks

    curve = matplotlib.image.imread(out / "curve.png")
    assert curve.shape[:2] == (350, 600)
    assert (curve[..., :3].max(axis=-1) < 0.25).sum() > 500  # the black error curve and the labels

    data = json.loads((out / "metrics.json").read_text())
    assert data["status"] == "ok"
    assert len(data["errors"]) == 129
    assert ["It: %d, Error: %.3f" % (s["iteration"], s["error"]) for s in data["snapshots"]] == HOMEWORK_LINES
    assert data["final_error"] == data["errors"][-1] == 0.0
    assert data["accuracy"] == 1.0
    assert data["config"] == {**data["config"], "hidden": 50, "lr": 0.1, "iters": 128, "samples": 100,
                              "noise": 0.0, "seed": 0, "grid": 100, "dtype": "float64", "device": "cpu"}


# ---------------------------------------------------------------- what each command loads

BACKENDS_AND_PLOTTING = {"numpy", "cupy", "torch", "jax", "array_api_strict", "matplotlib", "PIL", "sklearn", "scipy",
                         "distributed", "pyarrow", "zarr"}


def _loaded(*argv: str) -> set[str]:
    """The top-level packages `python -m moonxp ARGV` imports (from ``-X importtime``)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "moonxp", *argv], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    names = [line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "moonxp" in names
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "--help"], ["bench", "--help"], ["train", "--help"],
                                  ["--version"]])
def test_help_loads_no_backend_and_no_matplotlib(argv):
    assert _loaded(*argv) & BACKENDS_AND_PLOTTING == set()


def test_each_run_loads_only_what_it_uses(tmp_path):
    assert _loaded("--no-plot", "--out", str(tmp_path / "a")) & BACKENDS_AND_PLOTTING == {"numpy"}
    assert _loaded("--out", str(tmp_path / "b")) & BACKENDS_AND_PLOTTING == {"numpy", "matplotlib", "PIL"}
    assert _loaded("sweep", "--no-plot", "--seeds", "0:2", "--iters", "3",
                   "--out", str(tmp_path / "c")) & BACKENDS_AND_PLOTTING == {"numpy"}


# ---------------------------------------------------------------- bad command lines

BAD = {
    "lr nan": ["--lr", "nan"],
    "lr inf": ["--lr", "inf"],
    "lr -1": ["--lr=-1"],
    "lr 0": ["--lr", "0"],
    "lr text": ["--lr", "fast"],
    "hidden 0": ["--hidden", "0"],
    "iters -1": ["--iters=-1"],
    "iters 1.5": ["--iters", "1.5"],
    "samples 0": ["--samples", "0"],
    "grid 1": ["--grid", "1"],
    "noise -0.1": ["--noise=-0.1"],
    "noise nan": ["--noise", "nan"],
    "seed -1": ["--seed=-1"],
    "seed 2**32": ["--seed", str(2**32)],
    "seed + ensemble > 2**32": ["--seed", str(2**32 - 2), "--ensemble", "4"],
    "grid 5000": ["--grid", "5000"],
    "ensemble 0": ["--ensemble", "0"],
    "dtype float16": ["--dtype", "float16"],
    "device tpu": ["--device", "tpu"],
    "device cuda:x": ["--device", "cuda:x"],
    "device cpu:0": ["--device", "cpu:0"],
    "backend unknown": ["--backend", "tensorflow"],
    "numpy on cuda": ["--device", "cuda", "--backend", "numpy"],
    "array-api-strict on cuda": ["--device", "cuda:0", "--backend", "array-api-strict"],
    "cupy on cpu": ["--backend", "cupy"],
    "unknown option": ["--hiden", "5"],
}


@pytest.mark.parametrize("argv", BAD.values(), ids=BAD.keys())
def test_bad_command_line_is_one_line_exit_2(argv, tmp_path):
    code, out, err = cli(*argv, "--out", str(tmp_path / "out"), "--no-plot")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n") and len(err) > 20
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.skipif(cuda_usable(), reason="a CUDA device is usable here")
@pytest.mark.parametrize("argv", [["--device", "cuda"], ["--device", "cuda:1"], ["--device", "cuda", "--backend", "torch"]],
                         ids=["cupy", "cupy-cuda1", "torch"])
def test_cuda_without_a_gpu_is_one_line_exit_2(argv, tmp_path):
    code, out, err = cli(*argv, "--out", str(tmp_path), "--no-plot")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cuda" in err.lower() or "torch" in err  # names the device, or the package that is missing


def test_messages_name_the_problem(tmp_path):
    assert "cuda" in cli("--backend", "numpy", "--device", "cuda", "--out", str(tmp_path))[2]
    assert "tensorflow" in cli("--backend", "tensorflow", "--out", str(tmp_path))[2]
    assert "--lr" in cli("--lr", "nan", "--out", str(tmp_path))[2]
    assert "float16" in cli("--dtype", "float16", "--out", str(tmp_path))[2]
    assert "4294967295" in cli("--seed", "4294967296", "--out", str(tmp_path))[2]  # NumPy's largest seed, in full


def test_progress_bar_is_erased_before_each_printed_line(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(moonxp.app.cli, "PROGRESS_DELAY_S", 0.0)
    screen = Terminal()  # stdout and stderr on one terminal, as in a shell
    assert main(["--iters", "40", "--no-plot", "--out", str(tmp_path)], stdout=screen, stderr=screen) == 0
    text = screen.getvalue()
    assert "/40 [" in text  # the bar was drawn
    for line in text.split("\n"):
        visible = line.split("\r")[-1]  # what remains on the terminal row after carriage returns
        if "It:" in line:
            assert visible.startswith("It:")


def test_a_failing_compiler_is_one_warning_line_or_with_compile_exit_2(tmp_path, monkeypatch):
    """moonxp's own choice to compile falls back to eager (the homework's numbers, one warning line, the
    metrics say so); an asked-for --compile that fails is one error line and exit 2."""
    pytest.importorskip("jax")
    from moonxp.engine import executor, policy

    def failing(fn, static):
        def compiled(*args, **kwargs):
            raise RuntimeError("XLA compilation failed\nits details")
        return compiled
    monkeypatch.setattr(policy, "_jax_jit", failing)
    monkeypatch.setattr(executor, "_failed", {})
    executor._program.cache_clear()
    try:
        code, out, err = cli("--backend", "jax", "--out", str(tmp_path), "--no-plot", "--iters", "32")
        assert code == 0, err
        assert err == "moonxp: warning: jax.jit failed (RuntimeError: XLA compilation failed); running eager\n"
        assert it_lines(out) == HOMEWORK_LINES[:6]
        assert json.loads((tmp_path / "metrics.json").read_text())["backend"]["execution"] == "jax.jit failed: eager"
        monkeypatch.setattr(executor, "_failed", {})
        code, out, err = cli("--backend", "jax", "--compile", "--out", str(tmp_path), "--no-plot")
        assert code == 2 and err.startswith("moonxp: error: jax.jit failed (RuntimeError: XLA compilation failed)")
        assert len(err.splitlines()) == 1
    finally:
        executor._program.cache_clear()


# ---------------------------------------------------------------- CLI messages name the right thing

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
