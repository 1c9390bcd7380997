"""pytest-benchmark suite: moonxp and its peers on every backend/device found here.

    pytest bench/                                # quick sizes, timed
    pytest bench/ --sizes cpu --benchmark-json results.json
    pytest bench/ --benchmark-disable            # smoke: smallest sizes, each case once (CI)

Each case is one workload at one size and dtype, by one implementation; warm-up
is excluded and GPU work is synchronized before the clock is read.
`extra_info` carries the device, versions, throughput and % of the device's
measured limit (see moonxp.benchmark.limits).
"""

from __future__ import annotations

import importlib.util

import pytest

import moonxp
from moonxp.errors import MoonxpError
from moonxp.benchmark.workloads import WORKLOADS


def pytest_addoption(parser):
    parser.addoption("--sizes", choices=("smoke", "quick", "quick-gpu", "cpu", "gpu"), default=None,
                     help="problem sizes (default: smoke with --benchmark-disable, else quick)")


def _sizes(config) -> str:
    return config.getoption("--sizes") or ("smoke" if config.getoption("benchmark_disable") else "quick")


def _usable(device: str, backend: str) -> bool:
    module = {"array-api-strict": "array_api_strict"}.get(backend, backend)
    if importlib.util.find_spec(module) is None:
        return False
    try:
        moonxp.resolve(device, backend, "float32")
        return True
    except MoonxpError:
        return False


# (id, implementation, backend, device, compile): moonxp on each backend, eager and compiled, and the peers.
IMPLEMENTATIONS = [
    ("moonxp-numpy", "moonxp", "numpy", "cpu", None),
    ("moonxp-torch-cpu", "moonxp", "torch", "cpu", False),
    ("moonxp-torch-cpu-compile", "moonxp", "torch", "cpu", True),
    ("moonxp-jax-cpu", "moonxp", "jax", "cpu", True),
    ("moonxp-jax-cpu-eager", "moonxp", "jax", "cpu", False),
    ("numpy-homework", "numpy-homework", "numpy", "cpu", None),
    ("torch-eager-cpu", "torch-eager", "torch", "cpu", None),
    ("jax-jit-cpu", "jax-jit", "jax", "cpu", None),
    ("moonxp-cupy", "moonxp", "cupy", "cuda", None),
    ("moonxp-torch-cuda", "moonxp", "torch", "cuda", False),
    ("moonxp-torch-cuda-compile", "moonxp", "torch", "cuda", True),
    ("moonxp-jax-gpu", "moonxp", "jax", "cuda", True),
    ("torch-eager-cuda", "torch-eager", "torch", "cuda", None),
    ("jax-jit-gpu", "jax-jit", "jax", "cuda", None),
]


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    sizes = _sizes(metafunc.config)
    params = []
    for name, workload in WORKLOADS.items():
        for impl_id, implementation, backend, device, compile in IMPLEMENTATIONS:
            # GPU sizes only where a GPU runs the case; the CPU keeps its own sizes
            chosen = {"gpu": "cpu", "quick-gpu": "quick"}.get(sizes, sizes) if device == "cpu" else sizes
            dtypes = ("float64",) if name == "homework" else ("float32", "float64")
            for size in workload.sizes[chosen]:
                for dtype in dtypes:
                    marks = [pytest.mark.cuda] if device == "cuda" else []
                    if not _usable(device, backend):
                        marks.append(pytest.mark.skip(reason=f"{backend} not usable on {device}"))
                    elif sizes == "smoke" and backend == "torch" and compile:
                        marks.append(pytest.mark.skip(reason="torch.compile takes minutes: not in the smoke run"))
                    params.append(pytest.param((name, size, dtype, implementation, backend, device, compile),
                                               id=f"{name}-{size}-{dtype}-{impl_id}", marks=marks))
    metafunc.parametrize("case", params)


_LIMITS: dict = {}


@pytest.fixture
def limits():
    """Measured limits of (device, dtype), measured once per session with the device's default backend."""
    def get(device: str, dtype: str) -> dict:
        if (device, dtype) not in _LIMITS:
            from moonxp.benchmark.limits import measure
            _LIMITS[device, dtype] = measure(moonxp.resolve(device, None, dtype), quick=True)
        return _LIMITS[device, dtype]
    return get
