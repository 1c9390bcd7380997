"""Memory: device out of memory retried in smaller tiles (simulated by exceptions named like CuPy's and
PyTorch's on large tiles), host out of memory, and runs too large refused before any work."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import moonxp
import moonxp.app.budget
from moonxp import InvalidInputError, Params
from moonxp.app.model import Config
from moonxp.engine import policy
from moonxp.engine.executor import map_tiles as real_map_tiles

from helpers import assert_near, assert_on_case, cli


training = importlib.import_module(moonxp.train.__module__)


grid = importlib.import_module(moonxp.evaluate_grid.__module__)


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


# ---------------------------------------------------------------- sizes refused up front; the ensemble draw

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
