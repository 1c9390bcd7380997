"""Helpers the tests share: the homework's printed lines, skip markers, comparisons on a backend case,
reference math in the homework's NumPy style, and running the command line in-process or as a child.

Fixtures live in conftest.py; everything else shared is imported from here (``from helpers import ...``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from array_api_compat import array_namespace, device as device_of

import moonxp
import moonxp.app.cli
from moonxp import Backend, Params, to_host


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs(module: str) -> pytest.MarkDecorator:
    """Skip marker for a test (or parameter) that needs the optional package `module`."""
    return pytest.mark.skipif(not _installed(module), reason=f"{module} missing")


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


MARGIN = 0.05  # every |z| and |y| of a test problem is at least this far from a kink


def ref_forward(W, B, V, X):
    Z = X.dot(W) + B
    A = np.maximum(0, Z)
    return A.dot(V)


def ref_loss(Y, T):
    return np.maximum(0, -Y * T).mean()


def ref_backprop(W, B, V, X, T):
    Z = X.dot(W) + B
    A = np.maximum(0, Z)
    Y = A.dot(V)
    DY = (-Y * T > 0) * (-T)
    DZ = np.outer(DY, V) * (Z > 0)
    N = len(X)
    return X.T.dot(DZ) / N, DZ.sum(axis=0) / N, A.T.dot(DY) / N


def central_differences(loss_of, p: Params, h: float = 1e-6) -> Params:
    """d loss_of(p) / d p by central differences, one entry of W, b and v at a time (host NumPy float64)."""
    grads = []
    for name, param in zip("Wbv", p):
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            plus, minus = param.copy(), param.copy()
            plus[index] += h
            minus[index] -= h
            numeric[index] = (loss_of(p._replace(**{name: plus})) - loss_of(p._replace(**{name: minus}))) / (2 * h)
        grads.append(numeric)
    return Params(*grads)


def smooth_network(rng: np.random.Generator, n: int = 12, hidden: int = 6, X: np.ndarray | None = None,
                   T: np.ndarray | None = None, inputs: int = 2):
    """(X (n, D), T (n,), Params) host float64 with every |z| and |y| >= MARGIN, some points misclassified."""
    for _ in range(1000):
        Xk = rng.uniform(-2, 2, (n, inputs)) if X is None else X
        Tk = rng.choice([-1.0, 1.0], n) if T is None else T
        W, B, V = rng.normal(0, 1, (inputs, hidden)), rng.normal(0, 1, hidden), rng.normal(0, 1, hidden)
        Z = Xk @ W + B
        Y = np.maximum(Z, 0) @ V
        if np.abs(Z).min() > MARGIN and np.abs(Y).min() > MARGIN and 0 < (Y * Tk < 0).sum() < n:
            return Xk, Tk, Params(W, B, V)
    raise AssertionError("no smooth test problem found")


def smooth_batch(rng: np.random.Generator, batch: tuple, n: int = 12, hidden: int = 6, shared_X: bool = False):
    """Networks stacked to `batch`: data (X (n, 2), T (n,)) shared or (*batch, n, 2), (*batch, n); Params (*batch, ...)."""
    X0, T0 = (rng.uniform(-2, 2, (n, 2)), rng.choice([-1.0, 1.0], n)) if shared_X else (None, None)
    nets = [smooth_network(rng, n, hidden, X0, T0) for _ in range(int(np.prod(batch)))]
    X = X0 if shared_X else np.stack([x for x, _, _ in nets]).reshape(*batch, n, 2)
    T = T0 if shared_X else np.stack([t for _, t, _ in nets]).reshape(*batch, n)
    params = Params(*(np.stack([p[k] for _, _, p in nets]).reshape(*batch, *nets[0][2][k].shape)
                      for k in range(3)))
    return X, T, params


def on(case, *arrays):
    """Host arrays (or Params) moved to the case."""
    out = [Params(*(case.asarray(p) for p in a)) if isinstance(a, Params) else case.asarray(a) for a in arrays]
    return out[0] if len(out) == 1 else out


SEEDS_AND_WIDTHS = [(0, 2), (1, 2), (2, 2), (3, 1), (4, 3), (5, 30)]


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


def interrupt_on(calls: list, when):
    def raiser(*args, **kwargs):
        calls.append(args)
        if when(*args):
            raise KeyboardInterrupt
    return raiser


def strict_json(path) -> dict:
    def no_constant(name):
        raise ValueError(f"{name} in strict JSON")
    return json.loads(path.read_text(), parse_constant=no_constant)
