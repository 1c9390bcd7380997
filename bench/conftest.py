"""pytest-benchmark suite: every case of `moonxp.benchmark.cases`, on every backend and device found here.

    pytest bench/                                    # quick sizes, timed
    pytest bench/ --sizes full --benchmark-json results.json
    pytest bench/ --benchmark-disable                # smoke (CI): smallest sizes, each case once, results checked

The cases, the test of whether a backend is usable, the call that is timed and
the roofline post-processing are the ones `moonxp bench` uses; pytest-benchmark
does the rounds, statistics, JSON and `--benchmark-compare`. Warm-up is
excluded and GPU work is synchronized inside the timed call. `extra_info`
holds the same result record as `moonxp bench --json`, so `moonxp bench show`
and `moonxp bench compare` read the `--benchmark-json` file too.
"""

from __future__ import annotations

import os

import pytest

from moonxp.benchmark import cases
from moonxp.benchmark.worker import ENVIRONMENT
from moonxp.engine.policy import keep_freed_memory

os.environ.update(ENVIRONMENT)  # before any backend is imported: JAX must not take 75% of a GPU
keep_freed_memory()  # moonxp is timed as the command line runs it


def pytest_addoption(parser):
    parser.addoption("--sizes", choices=cases.MODES, default=None,
                     help="problem sizes (default: smoke with --benchmark-disable, else quick)")


@pytest.fixture(scope="session")
def mode(request) -> str:
    return _mode(request.config)


def _mode(config) -> str:
    return config.getoption("--sizes") or ("smoke" if config.getoption("benchmark_disable") else "quick")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    mode = _mode(metafunc.config)
    params = []
    for case in cases.suite(mode):
        marks = [pytest.mark.cuda] if case.device == "cuda" else []
        if not cases.usable(case.device, case.backend):
            marks.append(pytest.mark.skip(reason=f"{case.backend} not usable on {case.device}"))
        elif mode == "smoke" and case.backend == "torch" and case.compile:
            marks.append(pytest.mark.skip(reason="torch.compile takes minutes: not in the smoke run"))
        params.append(pytest.param(case, id=case.id, marks=marks))
    metafunc.parametrize("case", params)


_LIMITS: dict = {}


@pytest.fixture
def limits(mode):
    """Measured limits of (device, dtype), measured once per session with the device's default backend."""
    def get(device: str, dtype: str) -> dict:
        if (device, dtype) not in _LIMITS:
            from moonxp import resolve
            from moonxp.benchmark.limits import measure
            _LIMITS[device, dtype] = measure(resolve(device, None, dtype), mode)
        return _LIMITS[device, dtype]
    return get
