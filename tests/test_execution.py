"""How work runs on each device: device context, GPU tile policies, fused kernel forms, compiled and DLPack paths.

Without a GPU here, the CUDA paths run on stand-ins: NumPy arrays under a GPU-like
policy, a recording device context, fake JAX/torch devices for the policies, and
NumPy arrays bridged by DLPack into jax.jit / torch.compile in place of CuPy's.
Tests marked `cuda` check the real thing where their library has a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys

import array_api_compat.numpy as np_xp
import numpy as np
import pytest

import moonxp
from moonxp import InvalidTypeError, Params, kernels
from moonxp.engine import executor, grid, policy, training
from moonxp.engine.policy import Bridge, Policy, limit_tiles
from helpers import assert_close, assert_on_case, cuda


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
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 141 << 30)  # an H200: ~1.9e10 float32
    gpu = policy.policy(torch_xp, torch.device("cuda:0"), torch.float32)
    assert gpu.tile_elements == policy.GPU_TILE_CAP == 1 << 31
    assert gpu.workers == 1 and gpu.cost == policy.TORCH_CUDA and gpu.fused and gpu.compiled_as == "torch.compile"
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 1 << 30)  # below the cap: a share of it
    assert policy.policy(torch_xp, torch.device("cuda:0"), torch.float32).tile_elements == (1 << 30) // 2 // 4


def test_the_benchmark_sizes_fit_one_gpu_tile():
    """On an H200 the largest training (N = 10^7, H = 16) and grid (16384^2) rows need no tiling at all."""
    from moonxp.engine.training import _shape
    params = moonxp.make_problem(0, 10, 0.0, 16)[2]
    assert len(executor.plan(*_shape(params, np.zeros((10**7, 2))), policy.GPU_TILE_CAP)) == 1


def test_jax_on_a_gpu_gets_gpu_tiles(monkeypatch):
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    cpu = policy.policy(jax.numpy, jax.devices("cpu")[0], jax.numpy.float32)
    assert cpu.tile_elements == policy.JAX_TILE_ELEMENTS and not cpu.fused and cpu.compiled_as == "jax.jit"
    gpu = policy.policy(jax.numpy, FakeJaxGpu(limit=60 << 30, in_use=4 << 30), jax.numpy.float32)
    assert gpu.tile_elements == policy.GPU_TILE_CAP and gpu.fused and gpu.cost == policy.ALWAYS
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    small = policy.policy(jax.numpy, FakeJaxGpu(limit=2 << 30, in_use=1 << 30), jax.numpy.float32)
    assert small.tile_elements == (1 << 30) // 2 // 4  # half of what XLA's allocator has left
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    untold = FakeJaxGpu(0, 0)
    untold.stats = None  # a platform without memory statistics: the cap
    assert policy.policy(jax.numpy, untold, jax.numpy.float32).tile_elements == policy.GPU_TILE_CAP


HOMEWORK_WORK = (128, 100 * 50)  # steps, (network, point, hidden unit) per step


def test_compiling_only_where_it_pays(monkeypatch):
    """The homework runs eager under torch.compile's CUDA cost model, large work compiles; JAX always jits;
    torch on the CPU compiles only when asked; NumPy has no compiler. Each says why."""
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda xp, device: 8 << 30)
    cuda = policy.policy(torch_xp, torch.device("cuda:0"), torch.float32)
    assert not executor.compiles(cuda, None, *HOMEWORK_WORK)
    assert executor.execution(cuda, None, *HOMEWORK_WORK) == "eager (too small to compile)"
    assert executor.execution(cuda, True, *HOMEWORK_WORK) == "torch.compile"
    assert executor.execution(cuda, None, 10_000, 10**7 * 16) == "torch.compile"  # train-large, long enough
    assert not executor.compiles(cuda, None, 1, 16384 * 16384 * 16)  # one big grid: eager is done first
    cpu = policy.policy(torch_xp, torch.device("cpu"), torch.float32)
    assert executor.execution(cpu, None, 10**6, 10**9) == "eager (compiles only when asked)"
    assert executor.execution(cpu, False, *HOMEWORK_WORK) == "eager (compiling off)"
    numpy = policy.policy(np_xp, "cpu", np_xp.float64)
    assert executor.execution(numpy, None, *HOMEWORK_WORK) == executor.execution(numpy, False, 1, 1) == \
        "eager (no compiler)"
    with pytest.raises(moonxp.InvalidTypeError, match="no compiler"):
        executor.compiles(numpy, True, 1, 1)
    jax = pytest.importorskip("jax")
    assert executor.execution(policy.policy(jax.numpy, jax.devices("cpu")[0], jax.numpy.float64), None, 1, 1) \
        == "jax.jit"


def test_compile_cost_model():
    cost = policy.CompileCost(compile_s=10.0, step_s=1e-4, unit_s=1e-9)
    assert not cost.pays(128, 5000)  # 128 * (1e-4 + 5e-6) s = 0.013 s saved for 10 s of compiling
    assert cost.pays(100_000, 0) and cost.pays(10, 10**9) and not cost.pays(0, 10**12)


def test_cupy_policy_picks_a_compiler_through_dlpack_without_importing_it():
    """CuPy compiles through torch (else JAX) by DLPack; the policy names it without importing it (seconds),
    so an eager CuPy run never imports torch."""
    pytest.importorskip("cupy")
    pytest.importorskip("torch")
    code = ("import sys; import array_api_compat.cupy as xp, cupy; from moonxp.engine import policy, executor\n"
            "policy._free_gpu_memory = lambda xp, device: 8 << 30\n"
            "p = policy.policy(xp, cupy.cuda.Device(0), xp.float32)\n"
            "assert p.compiled_as == 'torch.compile via DLPack' and p.cost == policy.TORCH_CUDA and p.fused\n"
            "assert p.bridge is policy._bridge('torch', 4) and 'torch' not in sys.modules, sorted(sys.modules)\n"
            "print(executor.execution(p, None, 128, 5000))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "eager (too small to compile)"


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
    [getattr(moonxp, name) for name in moonxp.__all__]  # import all first: one imported while patched keeps it
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
    return Policy(**{**base.__dict__, "fused": True, "cost": policy.ALWAYS, **changes})


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
    connect = functools.partial(lambda bridge: bridge, bridge)  # one connection for every policy: programs stay cached
    return lambda base: _fused(base, workers=1, compiler=compiler, bridge=connect, compiled_as=f"{name} via DLPack")


def test_dlpack_bridge_into_jax_jit_equals_numpy(homework, monkeypatch):
    case = moonxp.resolve("cpu", "numpy", "float64")
    make = _bridge_policy("jax")
    assert executor.execution(make(policy.policy(np_xp, "cpu", np_xp.float64)), None, 1, 1) == "jax.jit via DLPack"
    _check_train_and_grid(case, homework, monkeypatch, make)


@pytest.mark.slow
def test_dlpack_bridge_into_torch_compile_equals_numpy(homework, monkeypatch):
    case = moonxp.resolve("cpu", "numpy", "float32")
    _check_train_and_grid(case, homework, monkeypatch, _bridge_policy("torch"), iters=4, check_every=2)


def _count_traces(monkeypatch, *names):
    """{name: times traced}: the functions of `training` and `grid` called while a compiler traces them."""
    traced = dict.fromkeys(names, 0)
    for name in names:
        module = grid if name == "_rows" else training
        real = getattr(module, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            traced[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, counting)
    executor._program.cache_clear()
    return traced


def test_jax_compiles_one_program_per_kind_of_work(homework, monkeypatch):
    """The homework as the main job runs it (segments of 1, 2, 4, ... 64 steps), a batched run and a grid
    each compile one small program per input shape: a step, the scores, a band of grid rows."""
    pytest.importorskip("jax")
    case = moonxp.resolve("cpu", "jax", "float64")
    X, T, p = homework
    expected = moonxp.train(p, X, T, iters=128)[1][:-1]
    traced = _count_traces(monkeypatch, "_step", "_score_sums", "_rows")
    try:
        P, Xd, Td = on(case, p, X, T)
        errors = []
        for iters in (1, 2, 4, 8, 16, 32, 64, 1):
            P, e = moonxp.train(P, Xd, Td, iters=iters)
            errors.append(moonxp.to_host(e)[:-1])
        assert traced == {"_step": 1, "_score_sums": 0, "_rows": 0}  # the final error: the step program's
        np.testing.assert_allclose(np.concatenate(errors)[:128], expected, rtol=1e-12, atol=1e-14)
        Xb, Tb, pb = moonxp.make_ensemble(0, 8, n_samples=40, hidden=5)
        moonxp.train(*on(case, pb, Xb, Tb), iters=40)
        assert traced == {"_step": 2, "_score_sums": 0, "_rows": 0}
        moonxp.evaluate_grid(P, size=64)
        moonxp.evaluate(P, Xd, Td)
        assert traced == {"_step": 2, "_score_sums": 1, "_rows": 1}
    finally:
        executor._program.cache_clear()


@contextlib.contextmanager
def _jax_lowerings(P, X, T):
    """The names of the XLA programs JAX lowers inside the `with` (a lowering precedes every compile, cached or
    not), after a warm-up on 10 points for what JAX compiles once per process (array_api_compat's namespace, ...);
    JAX's and moonxp's program caches cleared before and after."""
    import jax
    from jax import monitoring
    jax.clear_caches()
    executor._program.cache_clear()
    moonxp.train(P, X[:10], T[:10], iters=0)
    lowered = []

    def listen(event, seconds, **kwargs):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered.append(kwargs.get("fun_name"))
    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield lowered
    finally:
        monitoring.unregister_event_duration_listener(listen)
        executor._program.cache_clear()
        jax.clear_caches()  # later tests count their own traces


def test_jax_training_compiles_no_eager_op(homework):
    """Eager JAX compiles every distinct op (a stack of k errors, a transpose for the ones column): the
    homework as the main job trains it (segments of 0, 1, 2, 4, ... 64 steps) lowers two XLA programs,
    the ones column and the step, and nothing else."""
    pytest.importorskip("jax")
    X, T, p = homework
    P, Xd, Td = on(moonxp.resolve("cpu", "jax", "float64"), p, X, T)
    with _jax_lowerings(P, Xd, Td) as lowered:
        for iters in (0, 1, 2, 4, 8, 16, 32, 64, 1):
            P, errors = moonxp.train(P, Xd, Td, iters=iters)
    assert sorted(lowered) == ["jit(_step)", "jit(_with_ones)"], lowered
    assert errors.shape == (2,) and float(errors[-1]) == 0.0


def test_jax_training_in_tiles_of_points_compiles_no_eager_op(homework):
    """Tiles of points on JAX: the tiles' sums (two tile shapes) and one program adding them up and taking the
    step (`training._apply`) are lowered, and no eager op but the tiles' slices (made once per chunk of steps):
    each would be an XLA program of its own, dispatched every step (docs/design.md)."""
    pytest.importorskip("jax")
    X, T, p = homework
    P, Xd, Td = on(moonxp.resolve("cpu", "jax", "float64"), p, X, T)
    expected = moonxp.train(p, X, T, iters=20)[1]
    with _jax_lowerings(P, Xd, Td) as lowered, limit_tiles(30 * (4 * 50 + 2)):  # 4 tiles, the last of 10 points
        P, errors = moonxp.train(P, Xd, Td, iters=20)
    programs = sorted(name for name in lowered if name != "jit(dynamic_slice)")  # the tiles' points, once a chunk
    assert programs == ["jit(_apply)", "jit(_gradient_sums)", "jit(_gradient_sums)", "jit(_with_ones)"], lowered
    np.testing.assert_allclose(moonxp.to_host(errors), expected, rtol=1e-12, atol=1e-14)


def test_tiles_are_planned_outside_compiled_programs(homework, monkeypatch):
    """Tiled, the per-tile sums are the program: at most two tile shapes, so at most two traces, whatever the
    number of tiles and steps."""
    pytest.importorskip("jax")
    case = moonxp.resolve("cpu", "jax", "float64")
    X, T, p = homework
    expected = moonxp.train(p, X, T, iters=20)[1]
    traced = _count_traces(monkeypatch, "_step")
    sums = []
    real = kernels.error_and_gradient_sums
    monkeypatch.setattr(training, "error_and_gradient_sums",
                        lambda *args, **kwargs: (sums.append(1), real(*args, **kwargs))[1])
    executor._program.cache_clear()
    try:
        with limit_tiles(30 * (4 * 50 + 2)):  # 30 points a tile: 4 tiles, the last one of 10 points
            params, errors = moonxp.train(*on(case, p, X, T), iters=20)
        assert traced["_step"] == 0 and len(sums) == 2
        np.testing.assert_allclose(moonxp.to_host(errors), expected, rtol=1e-12, atol=1e-14)
    finally:
        executor._program.cache_clear()


def test_torch_compile_makes_whole_graphs(homework, monkeypatch):
    """moonxp.train, evaluate and evaluate_grid on torch tensors with compile=True: no graph break (fullgraph
    would raise), one graph per program and shape. Dynamo only (backend "eager"): graphs, not code."""
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real(fn, **{**kwargs, "backend": "eager"}))
    torch._dynamo.reset()
    counters.clear()
    executor._program.cache_clear()
    try:
        for dtype in ("float64", "float32"):
            case = moonxp.resolve("cpu", "torch", dtype)
            X, T, p = homework
            P, Xd, Td = on(case, p, X, T)
            for iters in (1, 2, 4):
                P, errors = moonxp.train(P, Xd, Td, iters=iters, compile=True)
            moonxp.evaluate(P, Xd, Td, compile=True)
            moonxp.evaluate_grid(P, size=32, compile=True)
            Xb, Tb, pb = moonxp.make_ensemble(0, 8, n_samples=40, hidden=5)
            moonxp.train(*on(case, pb, Xb, Tb), iters=3, compile=True)
        assert not counters["graph_break"], dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] == 2 * 4  # per dtype: step, scores (evaluate), rows; batched step
        assert not executor._failed
    finally:
        executor._program.cache_clear()
        torch._dynamo.reset()


# ---------------------------------------------------------------- compiler failures, run-time out of memory

def _stand_in(monkeypatch, compiler, name="torch.compile"):
    """NumPy arrays under a policy that compiles by default with `compiler` (fn, static names) -> program."""
    stand_in = Policy(tile_elements=1 << 40, workers=1, compiler=compiler, compiled_as=name, cost=policy.ALWAYS)
    for module in (training, grid):
        monkeypatch.setattr(module, "policy_for", lambda xp, device, dtype: stand_in)
    monkeypatch.setattr(executor, "_failed", {})
    executor._program.cache_clear()
    return stand_in


def _failing(fn, static):
    def compiled(*args, **kwargs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable\nmore lines")
    return compiled


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(homework, monkeypatch):
    X, T, p = homework
    expected = moonxp.train(p, X, T, iters=20)
    stand_in = _stand_in(monkeypatch, _failing)
    try:
        with pytest.warns(moonxp.CompileWarning, match=r"^torch.compile failed \(RuntimeError: Failed to find C "
                                                      r"compiler. Please specify via CC environment variable\); "
                                                      r"running eager$") as caught:
            params, errors = moonxp.train(p, X, T, iters=20)
            moonxp.evaluate_grid(params, size=16)
        assert len(caught) == 1
        np.testing.assert_array_equal(errors, expected[1])
        assert executor.execution(stand_in, None, 1, 1) == "torch.compile failed: eager"
        with pytest.raises(moonxp.CompileError, match="torch.compile failed .*without compile=True"):
            moonxp.train(p, X, T, iters=2, compile=True)  # asked for: an error
    finally:
        executor._program.cache_clear()


def test_out_of_memory_inside_a_compiled_program_retries_in_tiles(homework, monkeypatch):
    """At run time, a compiled program that runs out of device memory gets the work again in smaller tiles;
    an out-of-memory error wrapped by the compiler (torch's BackendCompilerFailed) counts too."""
    class FakeOutOfMemoryError(RuntimeError):
        pass

    def compiler(fn, static):
        def compiled(*args, **kwargs):
            if hasattr(args[1], "shape") and args[1].shape[-2] > 50:  # X: more than 50 points do not "fit"
                try:
                    raise FakeOutOfMemoryError("CUDA out of memory")
                except FakeOutOfMemoryError as exc:
                    raise RuntimeError("BackendCompilerFailed: backend='inductor' raised") from exc
            return fn(*args, **kwargs)
        return compiled
    X, T, p = homework
    expected = moonxp.train(p, X, T, iters=20)
    _stand_in(monkeypatch, compiler)
    monkeypatch.setattr(policy, "_fitted", {})
    try:
        params, errors = moonxp.train(p, X, T, iters=20)
        np.testing.assert_allclose(errors, expected[1], rtol=1e-13, atol=1e-15)
        assert not executor._failed and list(policy._fitted.values()) == [(100 * (4 * 50 + 2)) // 2]
    finally:
        executor._program.cache_clear()


def test_jax_computes_float32_matmuls_at_full_precision(monkeypatch):
    """On NVIDIA GPUs JAX's default is TF32: moonxp asks for "highest" wherever it computes, jitted or not."""
    jax = pytest.importorskip("jax")
    seen = []
    real = kernels.preactivation  # X @ W, traced or run
    monkeypatch.setattr(kernels, "preactivation", lambda *a, **k: (seen.append(jax.config.jax_default_matmul_precision),
                                                                   real(*a, **k))[1])
    case = moonxp.resolve("cpu", "jax", "float32")
    X, T, p = moonxp.make_problem(0, 20, 0.0, 4)
    P, Xd, Td = on(case, p, X, T)
    moonxp.forward(P, Xd)
    moonxp.train(P, Xd, Td, iters=2, compile=False)
    executor._program.cache_clear()
    moonxp.train(P, Xd, Td, iters=2, compile=True)
    assert seen and set(seen) == {"highest"}
    assert jax.config.jax_default_matmul_precision is None  # and only there
    executor._program.cache_clear()


def test_jax_leaves_gpu_memory_to_others_unless_told(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    moonxp.resolve("cpu", "jax", "float32")
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    moonxp.resolve("cpu", "jax", "float32")
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_compilation_caches_live_in_one_moonxp_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("MOONXP_CACHE_DIR", str(tmp_path / "mine"))
    assert policy.cache_folder() == tmp_path / "mine"
    monkeypatch.delenv("MOONXP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert policy.cache_folder() == tmp_path / "xdg" / "moonxp"
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    policy._torch_compile(len, ())
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "xdg" / "moonxp" / "torchinductor")


def test_torch_compile_trusts_the_cpus_vector_instructions(monkeypatch, tmp_path):
    """Inductor takes the instruction sets the CPU reports instead of a trial C++ build of each (most of a
    cold CPU compile, docs/gpu.md), unless the user chose (TORCHINDUCTOR_VEC_ISA_OK)."""
    torch = pytest.importorskip("torch")
    from torch._inductor import config as inductor
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    options = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: options.append(kwargs["options"]) or fn)
    policy._torch_compile(len)
    monkeypatch.setattr(inductor.cpp, "vec_isa_ok", False)
    policy._torch_compile(len)
    assert options == [{"cpp.vec_isa_ok": True}, {}]


# ---------------------------------------------------------------- on a real GPU

GPU_CASES = [  # few, small programs: each torch.compile takes seconds
    pytest.param(("cupy", "cuda:0", "float64"), marks=cuda(), id="cupy-f64"),
    pytest.param(("cupy", "cuda:1", "float32"), marks=cuda(index=1), id="cupy-cuda1-f32"),
    pytest.param(("torch", "cuda:0", "float32"), marks=cuda("torch"), id="torch-cuda-f32"),
    pytest.param(("torch", "cuda:1", "float64"), marks=cuda("torch", 1), id="torch-cuda1-f64"),
    pytest.param(("jax", "cuda:0", "float32"), marks=cuda("jax"), id="jax-cuda-f32"),
]


@pytest.mark.parametrize("spec", GPU_CASES)
def test_gpu_default_and_eager_paths_equal_numpy(spec, homework):
    """The compiled path (fused forms; CuPy through DLPack where torch or JAX is there) and the eager path
    agree with NumPy float64, on the device."""
    backend, device, dtype = spec
    case = moonxp.resolve(device, backend, dtype)
    X, T, p = homework
    ref_params, ref_errors = moonxp.train(p, X, T, iters=8)
    ref_grid = moonxp.evaluate_grid(ref_params, size=64)
    P, Xd, Td = on(case, p, X, T)
    with moonxp.arrays.device_context(case.xp, case.device):
        runs = executor.execution(policy.policy(case.xp, case.device, case.dtype), None, *HOMEWORK_WORK)
    assert runs == ("jax.jit" if backend == "jax" else "eager (too small to compile)")
    for compile in (True, False):
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


# ---------------------------------------------------------------- tracers and transforms

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
