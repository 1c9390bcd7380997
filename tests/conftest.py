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

import functools
import importlib.util
import os

import numpy as np
import pytest
from array_api_compat import array_namespace, device as device_of

import moonxp
from moonxp import Backend, to_host

# JAX would take 75% of a GPU's memory when first asked about it, and CuPy's and torch's cases share the GPU
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# float64 on JAX needs JAX's process-wide x64 mode, the caller's to turn on (moonxp.resolve refuses without it);
# JAX reads this when it loads
os.environ.setdefault("JAX_ENABLE_X64", "true")


def _strict_device1() -> Backend:
    import array_api_strict as xps
    return Backend("array-api-strict", xps, xps.Device("device1"), xps.float32, "device1", "float32",
                   xps.__version__)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs(module: str) -> pytest.MarkDecorator:
    """Skip marker for a test (or parameter) that needs the optional package `module`."""
    return pytest.mark.skipif(not _installed(module), reason=f"{module} missing")


# What the homework prints with seed 0 (its notebook's output), the promise of `python -m moonxp`.
HOMEWORK_LINES = ["It: 0, Error: 0.127", "It: 1, Error: 0.052", "It: 3, Error: 0.010", "It: 7, Error: 0.001",
                  "It: 15, Error: 0.000", "It: 31, Error: 0.000", "It: 63, Error: 0.000", "It: 127, Error: 0.000"]


@functools.lru_cache(maxsize=None)
def cuda_usable(backend: str = "cupy", index: int = 0) -> bool:
    """Whether moonxp can use CUDA device `index` through `backend` (cupy, torch or jax) here."""
    try:
        moonxp.resolve(f"cuda:{index}", backend, "float32")  # float32: no JAX x64 switch as a side effect
        return True
    except moonxp.MoonxpError:
        return False


def cuda(backend: str = "cupy", index: int = 0) -> pytest.MarkDecorator:
    """Mark a test as needing CUDA device `index` through `backend`: skipped where that is not usable."""
    return pytest.mark.cuda(backend=backend, index=index)


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
RTOL = {"float64": 1e-12, "float32": 1e-5}


def tolerance(case: Backend) -> float:
    """Relative comparison tolerance of the case's dtype."""
    return RTOL[case.dtype_name]


def assert_on_case(actual, case: Backend) -> None:
    """`actual` lives in the case's namespace, on its device, in its dtype."""
    assert array_namespace(actual) is array_namespace(case.asarray(np.zeros(1)))
    assert device_of(actual) == case.device
    assert actual.dtype == case.dtype


def assert_near(actual: np.ndarray, expected: np.ndarray, case: Backend, scale: float = 1.0) -> None:
    """Host `actual` matches `expected` within the case's dtype tolerance, absolute part scaled to |expected|."""
    expected = np.asarray(expected, dtype=np.float64)
    rtol = tolerance(case) * scale
    magnitude = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * max(magnitude, 1e-3))


def assert_close(actual, expected: np.ndarray, case: Backend, scale: float = 1.0) -> None:
    """`actual` is on the case (namespace, device, dtype) and matches the float64 reference `expected`."""
    assert_on_case(actual, case)
    assert_near(to_host(actual), expected, case, scale)
