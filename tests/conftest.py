"""Shared fixtures: `case` runs a test on every installed namespace/device/dtype.

Each case is a `moonxp.Backend`: its `asarray` moves host NumPy arrays there.
array-api-strict appears twice: its default device in float64 and
Device("device1") in float32, which catches a missing ``device=`` and any
hidden host conversion. Missing libraries and GPUs skip their cases: each CUDA
case checks its own library (CuPy, PyTorch, JAX) and device (cuda:1 needs two GPUs).

Optional packages (array-api-strict, hypothesis, CuPy, torch, JAX) are
`pytest.importorskip`-ed where used, so the suite passes with skips without them.
Check that, with array-api-strict and CuPy hidden as on the GPU machines:
    PYTHONPATH=tests/without:src python -m pytest -q tests/
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import moonxp
from moonxp import Backend

from helpers import cli, cuda, cuda_usable, needs


# JAX would take 75% of a GPU's memory when first asked about it, and CuPy's and torch's cases share the GPU
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# float64 on JAX needs JAX's process-wide x64 mode, the caller's to turn on (moonxp.resolve refuses without it);
# JAX reads this when it loads
os.environ.setdefault("JAX_ENABLE_X64", "true")


def _strict_device1() -> Backend:
    import array_api_strict as xps
    return Backend("array-api-strict", xps, xps.Device("device1"), xps.float32, "device1", "float32",
                   xps.__version__)


# What the homework prints with seed 0 (its notebook's output), the promise of `python -m moonxp`.


CASES = [
    pytest.param(lambda: moonxp.resolve("cpu", "numpy", "float64"), id="numpy-f64"),
    pytest.param(lambda: moonxp.resolve("cpu", "numpy", "float32"), id="numpy-f32"),
    pytest.param(lambda: moonxp.resolve("cpu", "array-api-strict", "float64"), id="strict-f64",
                 marks=needs("array_api_strict")),
    pytest.param(_strict_device1, id="strict-device1-f32",
                 marks=needs("array_api_strict")),
    pytest.param(lambda: moonxp.resolve("cpu", "torch", "float64"), id="torch-f64",
                 marks=needs("torch")),
    pytest.param(lambda: moonxp.resolve("cpu", "torch", "float32"), id="torch-f32",
                 marks=needs("torch")),
    pytest.param(lambda: moonxp.resolve("cpu", "jax", "float64"), id="jax-f64",
                 marks=needs("jax")),
    pytest.param(lambda: moonxp.resolve("cpu", "jax", "float32"), id="jax-f32",
                 marks=needs("jax")),
    pytest.param(lambda: moonxp.resolve("cuda", "cupy", "float64"), id="cupy-f64", marks=cuda()),
    pytest.param(lambda: moonxp.resolve("cuda", "cupy", "float32"), id="cupy-f32", marks=cuda()),
    pytest.param(lambda: moonxp.resolve("cuda:1", "cupy", "float32"), id="cupy-cuda1-f32", marks=cuda(index=1)),
    pytest.param(lambda: moonxp.resolve("cuda", "torch", "float32"), id="torch-cuda-f32", marks=cuda("torch")),
    pytest.param(lambda: moonxp.resolve("cuda:1", "torch", "float64"), id="torch-cuda1-f64",
                 marks=cuda("torch", 1)),
    pytest.param(lambda: moonxp.resolve("cuda", "jax", "float32"), id="jax-cuda-f32", marks=cuda("jax")),
]


# JAX on a GPU compiles every program and every distinct eager op (about 0.1-0.5 s each): its `case` instances
# run where JAX-on-CUDA numbers can differ from the CPU's (kernels, training, grids: matmul precision, fusion),
# so that the CUDA set fits gpu-check's time (docs/gpu.md); its entry points are covered by marked tests.
JAX_CUDA_MODULES = {"test_kernels", "test_train", "test_grid", "test_execution", "test_cli"}


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `cuda` (see `cuda`) where their library cannot use their CUDA device (asked once each),
    and JAX-on-CUDA `case` instances outside `JAX_CUDA_MODULES`."""
    for item in items:
        mark = item.get_closest_marker("cuda")
        if mark is None:
            continue
        backend, index = mark.kwargs.get("backend", "cupy"), mark.kwargs.get("index", 0)
        if not cuda_usable(backend, index):
            item.add_marker(pytest.mark.skip(reason=f"no CUDA device cuda:{index} usable by {backend}"))
        elif backend == "jax" and item.module.__name__.rsplit(".", 1)[-1] not in JAX_CUDA_MODULES:
            item.add_marker(pytest.mark.skip(reason="JAX on CUDA: covered in " + ", ".join(sorted(JAX_CUDA_MODULES))))


@pytest.fixture(params=CASES)
def case(request) -> Backend:
    """A backend case: namespace `.xp`, `.device`, `.dtype`, and `.asarray(host)`."""
    return request.param()


@pytest.fixture(params=[c for c in CASES if c.id.endswith("f64")])
def case64(request) -> Backend:
    """The float64 backend cases only (the homework's digits are a float64 promise)."""
    return request.param()


@pytest.fixture
def homework() -> tuple[np.ndarray, np.ndarray, moonxp.Params]:
    """The homework's data and initial parameters (seed 0), host float64."""
    return moonxp.make_problem(0)


# Relative tolerance against the NumPy float64 reference, by dtype: a few hundred ulps of float64
# (measured worst case here ~1e-16 relative), and float32's rounding over sums of up to a few
# hundred terms (measured worst case ~3e-7). Absolute tolerances scale with the data.


@pytest.fixture
def previous_run(tmp_path):
    """An output directory holding a finished earlier run (iters 3, figures and metrics)."""
    assert cli("--iters", "3", "--grid", "8", "--out", str(tmp_path))[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["boundaries.png", "curve.png", "metrics.json"]
    return tmp_path
