"""How work runs on each device: device context, GPU tile policies, fused kernel forms, compiled and DLPack paths.

Without a GPU here, the CUDA paths run on stand-ins: NumPy arrays under a GPU-like
policy, a recording device context, fake JAX/torch devices for the policies, and
NumPy arrays bridged by DLPack into jax.jit / torch.compile in place of CuPy's.
Tests marked `cuda` check the real thing where their library has a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import moonxp
from moonxp import Params, kernels
from moonxp.engine import executor, grid, policy, training
from moonxp.engine.policy import Bridge, Policy, limit_tiles
from conftest import assert_close, assert_on_case, cuda


def on(case, *arrays):
    return [Params(*(case.asarray(p) for p in a)) if isinstance(a, Params) else case.asarray(a) for a in arrays]


# ---------------------------------------------------------------- kernels: one source, two forms

class NoMT(np.ndarray):
    """An array without `.mT`, like CuPy before v14: the kernels must use xp.matrix_transpose."""

    @property
    def mT(self):
        raise AttributeError("'ndarray' object has no attribute 'mT' (CuPy < 14)")


def test_kernels_need_no_mT(homework):
    X, T, p = homework
    plain = kernels.error_and_gradient_sums(p, X, T, np_xp)
    without = kernels.error_and_gradient_sums(Params(*(a.view(NoMT) for a in p)), X.view(NoMT), T.view(NoMT), np_xp)
    for a, b in zip((plain[0], *plain[1]), (without[0], *without[1])):
        np.testing.assert_array_equal(np.asarray(b), a)  # same operations, same bits


@pytest.mark.parametrize("batch", [(), (3,)], ids=["one", "B=3"])
def test_fused_forms_are_the_same_math(case, batch):
    """fused=True (broadcast multiply + sum) equals the matmul forms: forward, gradient sums, grid rows."""
    X, T, p = moonxp.make_ensemble(2, 3, n_samples=30, hidden=7) if batch else moonxp.make_problem(2, 30, 0.0, 7)
    P, Xd, Td = on(case, p, X, T)
    xp = case.xp
    for fused in (False, True):
        assert_close(kernels.forward(P, Xd, xp=xp, fused=fused), kernels.forward(p, X, xp=np_xp), case)
        e, sums = kernels.error_and_gradient_sums(P, Xd, Td, xp, fused)
        e_ref, sums_ref = kernels.error_and_gradient_sums(p, X, T, np_xp)
        assert_close(e, e_ref, case, scale=30)
        for g, g_ref in zip(sums, sums_ref):
            assert_close(g, g_ref, case, scale=30)
    rng = np.random.default_rng(0)
    row, col, v, col_v = rng.normal(size=(5, 7)), rng.normal(size=(7, 9)), rng.normal(size=7), rng.normal(size=9)
    expected = grid._rows(row, grid.ones_over(col, np_xp), v, col_v, np_xp, False)
    np.testing.assert_allclose(expected, (np.abs(row[:, None, :] + col.T) @ v + (row @ v)[:, None] + col_v) / 2,
                               rtol=1e-13)
    row, col, v, col_v = on(case, row, col, v, col_v)
    assert_close(grid._rows(row, grid.ones_over(col, xp), v, col_v, xp, True), expected, case, scale=10)


# ---------------------------------------------------------------- policies on GPUs (stand-ins)

class FakeJaxGpu:
    """What policy() reads of a JAX GPU device."""

    platform = "gpu"

    def __init__(self, limit: int, in_use: int):
        self.stats = {"bytes_limit": limit, "bytes_in_use": in_use}

    def memory_stats(self):
        return self.stats

    def __str__(self):
        return "cuda:0"


def test_gpu_tiles_are_capped(monkeypatch):
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 80 << 30)  # an H100: ~1e10 float32
    gpu = policy.policy(torch_xp, torch.device("cuda:0"), torch.float32)
    assert gpu.tile_elements == policy.GPU_TILE_CAP == 1 << 28
    assert gpu.workers == 1 and gpu.compile_by_default and gpu.fused and gpu.compiled_as == "torch.compile"
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 1 << 30)  # below the cap: a share of it
    assert policy.policy(torch_xp, torch.device("cuda:0"), torch.float32).tile_elements == (1 << 30) // 2 // 4


def test_jax_on_a_gpu_gets_gpu_tiles(monkeypatch):
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    cpu = policy.policy(jax.numpy, jax.devices("cpu")[0], jax.numpy.float32)
    assert cpu.tile_elements == policy.JAX_TILE_ELEMENTS and not cpu.fused and cpu.compiled_as == "jax.jit"
    gpu = policy.policy(jax.numpy, FakeJaxGpu(limit=60 << 30, in_use=4 << 30), jax.numpy.float32)
    assert gpu.tile_elements == policy.GPU_TILE_CAP and gpu.fused and gpu.compile_by_default
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    small = policy.policy(jax.numpy, FakeJaxGpu(limit=2 << 30, in_use=1 << 30), jax.numpy.float32)
    assert small.tile_elements == (1 << 30) // 2 // 4  # half of what XLA's allocator has left
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    untold = FakeJaxGpu(0, 0)
    untold.stats = None  # a platform without memory statistics: the cap
    assert policy.policy(jax.numpy, untold, jax.numpy.float32).tile_elements == policy.GPU_TILE_CAP


def test_torch_compiles_by_default_on_cuda_only():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp
    cpu = policy.policy(torch_xp, torch.device("cpu"), torch.float32)
    assert cpu.compiler is not None and not cpu.compile_by_default and not cpu.fused
    assert executor.execution(cpu, None) == "eager" and executor.execution(cpu, True) == "torch.compile"
    numpy = policy.policy(np_xp, "cpu", np_xp.float64)
    assert executor.execution(numpy, None) == executor.execution(numpy, False) == "eager"


def test_cupy_policy_picks_a_compiler_through_dlpack(monkeypatch):
    """CuPy compiles through torch (with CUDA), else JAX (with a GPU), else runs eager."""
    cupy = pytest.importorskip("cupy")
    import array_api_compat.cupy as cupy_xp
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 8 << 30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    policy._cupy_bridge.cache_clear()
    try:
        bridged = policy.policy(cupy_xp, cupy.cuda.Device(0), cupy_xp.float32)
        assert bridged.compiled_as == "torch.compile via DLPack" and bridged.compile_by_default and bridged.fused
        assert bridged.bridge.into is torch.from_dlpack and bridged.bridge.xp.__name__.endswith("torch")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setitem(sys.modules, "jax", None)  # no torch CUDA, no JAX: eager CuPy
        monkeypatch.setattr(policy.importlib.util, "find_spec", lambda name: None if name == "jax" else 1)
        policy._cupy_bridge.cache_clear()
        eager = policy.policy(cupy_xp, cupy.cuda.Device(0), cupy_xp.float32)
        assert eager.compiler is None and executor.execution(eager, None) == "eager"
    finally:
        policy._cupy_bridge.cache_clear()


# ---------------------------------------------------------------- tiling under a GPU policy (item 2)

GPU_LIKE = Policy(tile_elements=policy.GPU_TILE_CAP, workers=1)  # one huge tile per call, one worker


@pytest.fixture
def gpu_like(monkeypatch):
    """NumPy under a GPU's policy: the tests below tile only because `limit_tiles` caps every device."""
    for module in (training, grid):
        monkeypatch.setattr(module, "policy_for", lambda xp, device, dtype: GPU_LIKE)
    counts = []
    run = executor.run
    monkeypatch.setattr(executor, "run", lambda work, tiles, workers: (counts.append(len(tiles)),
                                                                       run(work, tiles, workers))[1])
    return counts


def test_limit_tiles_tiles_gpu_policies_too(gpu_like):
    X, T, p = moonxp.make_ensemble(0, 2, n_samples=40, hidden=8)
    untiled = moonxp.train(p, X, T, iters=3)
    untiled_grid = moonxp.evaluate_grid(p, size=16)
    assert gpu_like == []  # a GPU's tile holds it all: one tile, no tiled run
    with limit_tiles(64):
        tiled = moonxp.train(p, X, T, iters=3)
        tiled_grid = moonxp.evaluate_grid(p, size=16)
    assert min(gpu_like) >= 10
    for a, b in zip((tiled[1], *tiled[0], tiled_grid), (untiled[1], *untiled[0], untiled_grid)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- every public entry on its arrays' device

class Recorder:
    """A device context that records which device is current (as CuPy's `with device:` sets it)."""

    def __init__(self):
        self.current = None

    def __call__(self, xp, device):
        @contextlib.contextmanager
        def entered():
            previous, self.current = self.current, str(device)
            try:
                yield
            finally:
                self.current = previous
        return entered()


def test_every_public_entry_runs_on_its_arrays_device(monkeypatch, homework):
    """forward, loss, backprop, descent, train, evaluate, evaluate_grid: the math and the policy (free memory)
    run with the arrays' device current."""
    recorder, seen, real = Recorder(), [], moonxp.arrays.device_context
    for name, module in list(sys.modules.items()):  # wherever `device_context` was imported
        if name.startswith("moonxp") and getattr(module, "device_context", None) is real:
            monkeypatch.setattr(module, "device_context", recorder)

    def watched(fn, what):
        @functools.wraps(fn)
        def inside(*args, **kwargs):
            seen.append((what, recorder.current))
            return fn(*args, **kwargs)
        return inside
    for module, name in ((kernels, "preactivation"), (kernels, "loss_terms"), (kernels, "descent"),
                         (grid, "_rows"), (training, "policy_for"), (grid, "policy_for")):
        monkeypatch.setattr(module, name, watched(getattr(module, name), name))
    monkeypatch.setattr(kernels, "loss", watched(kernels.loss, "loss"))
    executor._program.cache_clear()
    X, T, p = homework
    try:  # a device other than the default one, where array-api-strict is installed
        import array_api_strict as strict
        backend = moonxp.Backend("array-api-strict", strict, strict.Device("device1"), strict.float64, "device1",
                                 "float64", strict.__version__)
    except ImportError:
        backend = moonxp.resolve("cpu", "numpy", "float64")
    P, Xd, Td = on(backend, p, X, T)
    expected = str(backend.device)
    entries = {
        "forward": lambda: moonxp.forward(P, Xd),
        "loss": lambda: moonxp.loss(moonxp.forward(P, Xd), Td),
        "backprop": lambda: moonxp.backprop(P, Xd, Td),
        "descent": lambda: moonxp.descent(P, P, 0.1),
        "train": lambda: moonxp.train(P, Xd, Td, iters=2),
        "evaluate": lambda: moonxp.evaluate(P, Xd, Td),
        "evaluate_grid": lambda: moonxp.evaluate_grid(P, size=8),
    }
    for entry, call in entries.items():
        seen.clear()
        result = call()
        assert seen, f"{entry} ran no watched function"
        assert all(current == expected for _, current in seen), (entry, seen)
        assert recorder.current is None  # and left it again
        assert_on_case(result[1] if entry == "train" else result[0] if isinstance(result, tuple) else result,
                       backend)
    executor._program.cache_clear()


# ---------------------------------------------------------------- compiled and bridged paths == eager NumPy float64

def _fused(base: Policy, **changes) -> Policy:
    return Policy(**{**base.__dict__, "fused": True, "compile_by_default": True, **changes})


def _check_train_and_grid(case, homework, monkeypatch, make_policy, iters=8, check_every=4):
    """train, evaluate and evaluate_grid under the policy made by `make_policy(real policy)` equal NumPy float64."""
    X, T, p = homework
    ref_params, ref_errors = moonxp.train(p, X, T, iters=iters)
    ref_grid = moonxp.evaluate_grid(ref_params, size=12)
    ref_scores = moonxp.evaluate(ref_params, X, T)
    real = policy.policy
    for module in (training, grid):
        monkeypatch.setattr(module, "policy_for", lambda xp, device, dtype: make_policy(real(xp, device, dtype)))
    executor._program.cache_clear()
    try:
        P, Xd, Td = on(case, p, X, T)
        params, errors = moonxp.train(P, Xd, Td, iters=iters, check_every=check_every)
        assert_close(errors, ref_errors, case, scale=10)
        for a, b in zip(params, ref_params):
            assert_close(a, b, case, scale=10)
        assert_close(moonxp.evaluate_grid(params, size=12), ref_grid, case, scale=10)
        for a, b in zip(moonxp.evaluate(params, Xd, Td), ref_scores):
            assert_close(a, np.asarray(b), case, scale=10)
    finally:
        executor._program.cache_clear()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_jit_with_fused_forms_equals_numpy(homework, monkeypatch, dtype):
    pytest.importorskip("jax")
    case = moonxp.resolve("cpu", "jax", dtype)
    _check_train_and_grid(case, homework, monkeypatch, _fused)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_compile_with_fused_forms_equals_numpy(homework, monkeypatch, dtype):
    pytest.importorskip("torch")
    case = moonxp.resolve("cpu", "torch", dtype)
    _check_train_and_grid(case, homework, monkeypatch, _fused, iters=4, check_every=2)


def _bridge_policy(name: str):
    """NumPy arrays standing in for CuPy's: compiled in torch or JAX, through DLPack, like CuPy on CUDA."""
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        # NumPy marks arrays it imports read-only, and JAX refuses to import those again: the stand-in
        # copies on the way back (CuPy's arrays are always writable)
        bridge = Bridge(jax.numpy, jax.numpy.from_dlpack, lambda a: np.from_dlpack(a).copy())
        compiler = policy._jax_jit
    else:
        torch = pytest.importorskip("torch")
        import array_api_compat.torch as torch_xp
        bridge, compiler = Bridge(torch_xp, torch.from_dlpack, np_xp.from_dlpack), policy._torch_compile
    name = "jax.jit" if name == "jax" else "torch.compile"
    return lambda base: _fused(base, workers=1, compiler=compiler, bridge=bridge, compiled_as=f"{name} via DLPack")


def test_dlpack_bridge_into_jax_jit_equals_numpy(homework, monkeypatch):
    case = moonxp.resolve("cpu", "numpy", "float64")
    make = _bridge_policy("jax")
    assert executor.execution(make(policy.policy(np_xp, "cpu", np_xp.float64)), None) == "jax.jit via DLPack"
    _check_train_and_grid(case, homework, monkeypatch, make)


@pytest.mark.slow
def test_dlpack_bridge_into_torch_compile_equals_numpy(homework, monkeypatch):
    case = moonxp.resolve("cpu", "numpy", "float32")
    _check_train_and_grid(case, homework, monkeypatch, _bridge_policy("torch"), iters=4, check_every=2)


def test_check_every_steps_are_one_compiled_program(homework, monkeypatch):
    """16 steps (check_every) compile once, as one program; shorter chunks share one one-step program."""
    jax = pytest.importorskip("jax")
    case = moonxp.resolve("cpu", "jax", "float64")
    traced = []
    real = training._steps

    def counting(*args, count, **kwargs):
        traced.append(count)
        return real(*args, count=count, **kwargs)
    monkeypatch.setattr(training, "_steps", counting)
    executor._program.cache_clear()
    try:
        X, T, p = homework
        moonxp.train(*on(case, p, X, T), iters=48, check_every=16)
        assert traced == [16]  # traced once for 16 steps, then the compiled program ran three times
        errors = moonxp.train(*on(case, p, X, T), iters=23, check_every=16)[1]
        assert traced == [16, 1]  # a shorter chunk (7) runs the one-step program: two programs in all
        for iters in (1, 3, 7):  # the main job's snapshot segments compile nothing new
            moonxp.train(*on(case, p, X, T), iters=iters, check_every=16)
        assert traced == [16, 1]
        np.testing.assert_allclose(moonxp.to_host(errors), moonxp.train(p, X, T, iters=23)[1], rtol=1e-12, atol=1e-14)
    finally:
        executor._program.cache_clear()


# ---------------------------------------------------------------- on a real GPU

GPU_CASES = [  # few, small programs: each torch.compile takes seconds
    pytest.param(("cupy", "cuda:0", "float64"), marks=cuda(), id="cupy-f64"),
    pytest.param(("cupy", "cuda:1", "float32"), marks=cuda(index=1), id="cupy-cuda1-f32"),
    pytest.param(("torch", "cuda:0", "float32"), marks=cuda("torch"), id="torch-cuda-f32"),
    pytest.param(("torch", "cuda:1", "float64"), marks=cuda("torch", 1), id="torch-cuda1-f64"),
    pytest.param(("jax", "cuda:0", "float32"), marks=cuda("jax"), id="jax-cuda-f32"),
]


@pytest.mark.compiled
@pytest.mark.parametrize("spec", GPU_CASES)
def test_gpu_default_and_eager_paths_equal_numpy(spec, homework):
    """The default path (compiled, fused forms; CuPy through DLPack where torch or JAX is there) and the eager
    path agree with NumPy float64, on the device."""
    backend, device, dtype = spec
    case = moonxp.resolve(device, backend, dtype)
    X, T, p = homework
    ref_params, ref_errors = moonxp.train(p, X, T, iters=8)
    ref_grid = moonxp.evaluate_grid(ref_params, size=64)
    P, Xd, Td = on(case, p, X, T)
    with moonxp.arrays.device_context(case.xp, case.device):
        runs = executor.execution(policy.policy(case.xp, case.device, case.dtype), None)
    assert runs != "eager" or backend == "cupy"  # CuPy without torch or JAX runs eager
    for compile in (None, False):
        params, errors = moonxp.train(P, Xd, Td, iters=8, check_every=4, compile=compile)
        assert_close(errors, ref_errors, case, scale=10)
        assert_close(moonxp.evaluate_grid(params, size=64, compile=compile), ref_grid, case, scale=30)


@cuda(index=1)
def test_cupy_work_on_cuda1_runs_on_cuda1(homework):
    """With cuda:0 current, work on arrays of cuda:1 runs there (CuPy launches on the current device)."""
    import cupy
    case = moonxp.resolve("cuda:1", "cupy", "float32")
    X, T, p = homework
    P, Xd, Td = on(case, p, X, T)
    with cupy.cuda.Device(0):
        for result in (moonxp.forward(P, Xd), moonxp.backprop(P, Xd, Td).W, moonxp.train(P, Xd, Td, iters=4)[1],
                       moonxp.evaluate_grid(P, size=32)):
            assert result.device.id == 1
        assert cupy.cuda.Device().id == 0  # and the current device is left as it was
    assert_close(moonxp.train(P, Xd, Td, iters=4)[1], moonxp.train(p, X, T, iters=4)[1], case)
