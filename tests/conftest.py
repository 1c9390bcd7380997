"""Shared fixtures: `case` runs a test on every installed namespace/device/dtype.

Each case is a `moonxp.Backend`: its `asarray` moves host NumPy arrays there.
array-api-strict appears twice: its default device in float64 and
Device("device1") in float32, which catches a missing ``device=`` and any
hidden host conversion. Missing libraries and GPUs skip their cases.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from array_api_compat import array_namespace, device as device_of

import moonxp
from moonxp.engine import policy
from moonxp import Backend, to_host


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


def cuda_usable() -> bool:
    """Whether moonxp can use a CUDA device here."""
    try:
        moonxp.resolve("cuda")
        return True
    except moonxp.MoonxpError:
        return False


CASES = [
    pytest.param(lambda: moonxp.resolve("cpu", "numpy", "float64"), id="numpy-f64"),
    pytest.param(lambda: moonxp.resolve("cpu", "numpy", "float32"), id="numpy-f32"),
    pytest.param(lambda: moonxp.resolve("cpu", "array-api-strict", "float64"), id="strict-f64",
                 marks=pytest.mark.skipif(not _installed("array_api_strict"), reason="array-api-strict missing")),
    pytest.param(_strict_device1, id="strict-device1-f32",
                 marks=pytest.mark.skipif(not _installed("array_api_strict"), reason="array-api-strict missing")),
    pytest.param(lambda: moonxp.resolve("cpu", "torch", "float64"), id="torch-f64",
                 marks=pytest.mark.skipif(not _installed("torch"), reason="torch missing")),
    pytest.param(lambda: moonxp.resolve("cpu", "torch", "float32"), id="torch-f32",
                 marks=pytest.mark.skipif(not _installed("torch"), reason="torch missing")),
    pytest.param(lambda: moonxp.resolve("cpu", "jax", "float64"), id="jax-f64",
                 marks=pytest.mark.skipif(not _installed("jax"), reason="jax missing")),
    pytest.param(lambda: moonxp.resolve("cpu", "jax", "float32"), id="jax-f32",
                 marks=pytest.mark.skipif(not _installed("jax"), reason="jax missing")),
    pytest.param(lambda: moonxp.resolve("cuda", "cupy", "float64"), id="cupy-f64", marks=pytest.mark.cuda),
    pytest.param(lambda: moonxp.resolve("cuda", "cupy", "float32"), id="cupy-f32", marks=pytest.mark.cuda),
    pytest.param(lambda: moonxp.resolve("cuda", "torch", "float32"), id="torch-cuda-f32", marks=pytest.mark.cuda),
]


def pytest_collection_modifyitems(config, items):
    """Skip tests marked `cuda` where no CUDA device is usable."""
    if any(item.get_closest_marker("cuda") for item in items) and not cuda_usable():
        skip = pytest.mark.skip(reason="no usable CUDA device")
        for item in items:
            if item.get_closest_marker("cuda"):
                item.add_marker(skip)


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
