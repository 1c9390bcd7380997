"""moonxp.resolve and the host/device helpers: every name/device/dtype, and every failure with a fix."""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from array_api_compat import array_namespace, device as device_of

import moonxp
from moonxp.engine import backend, policy
import moonxp.app.info
from helpers import assert_close, assert_on_case, cli, needs as needs_module


needs = {name: needs_module(module) for name, module in (("torch", "torch"), ("jax", "jax"),
                                                          ("array-api-strict", "array_api_strict"), ("cupy", "cupy"))}


# ---------------------------------------------------------------- resolution

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", [
    "numpy", pytest.param("torch", marks=needs["torch"]), pytest.param("jax", marks=needs["jax"]),
    pytest.param("array-api-strict", marks=needs["array-api-strict"])])
def test_resolve_cpu_backends(backend, dtype):
    b = moonxp.resolve("cpu", backend, dtype)
    assert isinstance(b, moonxp.Backend)
    assert (b.name, b.device_name, b.dtype_name) == (backend, "cpu", dtype)
    x = b.asarray(np.array([1.0, -2.0]))
    assert array_namespace(x) is array_namespace(b.xp.asarray(x))
    assert x.dtype == b.dtype == getattr(b.xp, dtype)
    assert device_of(x) == b.device
    assert b.version and b.version[0].isdigit()
    np.testing.assert_array_equal(moonxp.to_host(x), [1.0, -2.0])


def test_resolve_defaults_to_numpy_float64_on_cpu():
    b = moonxp.resolve()
    assert (b.name, b.device_name, b.dtype_name, b.version) == ("numpy", "cpu", "float64", np.__version__)
    assert moonxp.resolve("cpu", None, "float32").name == "numpy"
    x = b.asarray([0.5])
    assert isinstance(x, np.ndarray) and x.dtype == np.float64


def test_resolve_numpy_is_the_array_api_namespace():
    import array_api_compat.numpy
    assert moonxp.resolve("cpu", "numpy").xp is array_api_compat.numpy


@needs["torch"]
def test_resolve_torch_is_the_array_api_namespace():
    import array_api_compat.torch
    import torch
    b = moonxp.resolve("cpu", "torch")
    assert b.xp is array_api_compat.torch and b.device == torch.device("cpu")


@needs["array-api-strict"]
def test_resolve_strict_is_the_reference_namespace():
    import array_api_strict
    b = moonxp.resolve("cpu", "array-api-strict")
    assert b.xp is array_api_strict
    assert b.device == array_api_strict.__array_namespace_info__().default_device()


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_defaults_to_cupy(device, monkeypatch):
    """--device cuda without --backend asks CuPy (here: CuPy missing, so the CuPy hint comes back)."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(moonxp.BackendError, match="cupy"):
        moonxp.resolve(device)


@needs["jax"]
def test_jax_float64_needs_x64_turned_on_by_the_caller():
    import jax
    previous = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        with pytest.raises(moonxp.BackendError, match="x64 mode, which is process-wide"):
            moonxp.resolve("cpu", "jax", "float64")
        assert not jax.config.jax_enable_x64  # the library left the process as it was
        moonxp.resolve("cpu", "jax", "float32")
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", previous)


@needs["jax"]
def test_the_command_line_turns_x64_on_for_float64(tmp_path):
    code = ("import sys; from moonxp.app.cli import main; "
            "code = main(sys.argv[1:]); import jax; print(code, jax.config.jax_enable_x64)")
    for dtype, on in (("float32", False), ("float64", True)):
        done = subprocess.run([sys.executable, "-c", code, "--backend", "jax", "--dtype", dtype, "--iters", "2",
                               "--no-plot", "--quiet", "--out", str(tmp_path / dtype)], capture_output=True,
                              text=True, timeout=120,
                              env={k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"})  # conftest's
        assert done.stdout.split() == ["0", str(on)], done.stderr


@needs["jax"]
def test_jax_float64_really_computes_in_float64():
    import jax
    jax.config.update("jax_enable_x64", True)
    b = moonxp.resolve("cpu", "jax", "float64")
    x = b.asarray(np.array([1.0]))
    assert x.dtype == b.xp.float64
    assert float(((x + 1e-12) - x)[0]) != 0.0  # lost in float32
    X, T, p = moonxp.make_problem(0, n_samples=20, hidden=4)
    Y = moonxp.forward(moonxp.Params(*(b.asarray(a) for a in p)), b.asarray(X))
    assert Y.dtype == b.xp.float64
    np.testing.assert_allclose(moonxp.to_host(Y), np.maximum(X @ p.W + p.b, 0) @ p.v, rtol=1e-14, atol=1e-14)


@needs["jax"]
def test_jax_float32_stays_float32():
    b = moonxp.resolve("cpu", "jax", "float32")
    x = b.asarray(np.array([1.0, 2.0]))
    assert x.dtype == b.xp.float32
    assert (x * 0.5).dtype == b.xp.float32


# ---------------------------------------------------------------- failures that name the fix

@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", "CUDA", "", "cuda:", "gpu", "cuda:-1"])
def test_unknown_device(device):
    with pytest.raises(moonxp.MoonxpError, match="device") as info:
        moonxp.resolve(device)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", ["float16", "int32", "float", ""])
def test_unknown_dtype(dtype):
    with pytest.raises(moonxp.MoonxpError, match="float64 or float32"):
        moonxp.resolve("cpu", "numpy", dtype)


@pytest.mark.parametrize("backend", ["tensorflow", "Numpy", "array_api_strict", "mlx"])
def test_unknown_backend(backend):
    with pytest.raises(moonxp.MoonxpError, match="unknown backend") as info:
        moonxp.resolve("cpu", backend)
    assert "numpy, cupy, torch, jax, array-api-strict" in str(info.value)


@pytest.mark.parametrize("backend", ["numpy", "array-api-strict"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cpu_only_backend_on_cuda(backend, device):
    with pytest.raises(moonxp.MoonxpError, match="CPU only") as info:
        moonxp.resolve(device, backend)
    assert "cupy" in str(info.value)  # names a backend that does run there


def test_cupy_on_cpu():
    with pytest.raises(moonxp.MoonxpError, match="CUDA devices only") as info:
        moonxp.resolve("cpu", "cupy")
    assert "--device cuda" in str(info.value)


def test_cupy_missing_names_the_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(moonxp.BackendError) as info:
        moonxp.resolve("cuda", "cupy")
    message = str(info.value)
    assert 'pip install -e ".[cuda12]" in the moonxp checkout' in message and '".[cuda13]"' in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, ImportError)  # a library user sees why (the CLI prints one line)


def test_cupy_missing_via_import_module(monkeypatch):
    real = importlib.import_module

    def no_cupy(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ModuleNotFoundError("No module named 'cupy'", name="cupy")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_cupy)
    with pytest.raises(moonxp.BackendError, match=r'"\.\[cuda12\]"'):
        moonxp.resolve("cuda")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_missing_optional_backend_names_the_install(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, backend, None)
    with pytest.raises(moonxp.BackendError, match=f"pip install .*{backend}"):
        moonxp.resolve("cpu", backend)


@needs["cupy"]
def test_cupy_without_a_device_or_driver(monkeypatch):
    """The real CuPy here has no usable GPU: its runtime error becomes a one-line BackendError."""
    import cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = None  # no driver: the real refusal
    if count is None:
        with pytest.raises(moonxp.BackendError, match="no CUDA device") as info:
            moonxp.resolve("cuda")
        assert "--device cpu" in str(info.value)
    # with a driver but no device
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 0)
    with pytest.raises(moonxp.BackendError, match="no CUDA device"):
        moonxp.resolve("cuda:0", "cupy")


@needs["cupy"]
def test_cupy_device_index_out_of_range(monkeypatch):
    import cupy
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 2)
    with pytest.raises(moonxp.BackendError, match="cuda:5 does not exist") as info:
        moonxp.resolve("cuda:5")
    assert "cuda:0 to cuda:1" in str(info.value)


@needs["torch"]
def test_torch_without_cuda(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(moonxp.BackendError, match="no CUDA device") as info:
        moonxp.resolve("cuda", "torch")
    assert "PyTorch" in str(info.value)


@needs["torch"]
def test_torch_device_index_out_of_range(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(moonxp.BackendError, match="cuda:5 does not exist") as info:
        moonxp.resolve("cuda:5", "torch")
    assert "1 CUDA device" in str(info.value)
    b = moonxp.resolve("cuda:0", "torch", "float32")  # the one that exists resolves
    assert (b.name, b.device_name, b.dtype_name) == ("torch", "cuda:0", "float32")
    assert b.device == torch.device("cuda:0")


@needs["jax"]
def test_jax_without_a_gpu(monkeypatch):
    import jax

    def no_gpu(backend=None):
        if backend in ("gpu", "cuda"):
            raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are instances of gpu")
        return [d for d in jax.local_devices(backend="cpu")]

    monkeypatch.setattr(jax, "devices", no_gpu)
    with pytest.raises(moonxp.BackendError, match="no CUDA device"):
        moonxp.resolve("cuda", "jax", "float32")


def test_errors_are_the_builtin_kinds():
    """A library user can catch the usual built-ins: ValueError for bad names, RuntimeError for unusable devices."""
    with pytest.raises(ValueError):
        moonxp.resolve("tpu")
    with pytest.raises(ValueError):
        moonxp.resolve("cpu", "tensorflow")
    assert issubclass(moonxp.BackendError, RuntimeError)


# ---------------------------------------------------------------- host, device, synchronization

def test_to_host_and_synchronize(case):
    host = np.arange(1.0, 15.0).reshape(7, 2) * 0.25
    x = case.asarray(host)
    assert_on_case(x, case)
    back = moonxp.to_host(x)
    assert isinstance(back, np.ndarray)
    assert back.dtype == np.dtype(case.dtype_name) and back.shape == (7, 2)
    np.testing.assert_array_equal(back, host.astype(case.dtype_name))
    y = case.xp.sum(x * 2.0, axis=0)
    assert moonxp.synchronize(y, x) is None
    np.testing.assert_allclose(moonxp.to_host(y), host.sum(axis=0) * 2, rtol=1e-6)


def test_to_host_of_a_scalar(case):
    x = case.xp.sum(case.asarray(np.array([1.5, 2.5])))
    back = moonxp.to_host(x)
    assert isinstance(back, np.ndarray) and back.shape == () and float(back) == 4.0


def test_stack_of_numpy_arrays_equals_np_stack():
    """NumPy's own path of `arrays.stack` (one np.asarray): np.stack's values, shape, dtype and C order, for the
    NumPy scalars that 0-d results are and for batches, at every axis."""
    import array_api_compat.numpy as xp
    from moonxp.arrays import stack
    for parts in ([np.float64(0.5), np.float64(-1.5)], [np.arange(3, dtype=np.float32) + k for k in range(4)],
                  [np.arange(6.0).reshape(2, 3) * k for k in range(5)]):
        for axis in range(-1, parts[0].ndim + 1):
            stacked = stack(xp, parts, axis)
            np.testing.assert_array_equal(stacked, np.stack(parts, axis=axis), strict=True)
            assert stacked.flags.c_contiguous


def test_eager_numpy_programs_compute_in_the_lean_namespace():
    """array-api-compat's NumPy namespace with `astype` and `matrix_transpose` as the ndarray methods they wrap:
    the same results (values, dtype, copy or view), everything else the same objects; eager NumPy programs get it."""
    import array_api_compat.numpy as compat
    from moonxp.arrays import kernel_namespace
    from moonxp.engine import executor
    lean = kernel_namespace(compat)
    x = np.arange(24.0).reshape(2, 3, 4)
    for copy in (True, False):
        np.testing.assert_array_equal(lean.astype(x > 5, np.float32, copy=copy),
                                      compat.astype(x > 5, np.float32, copy=copy), strict=True)
    assert (lean.astype(x, x.dtype, copy=False) is x) and (lean.astype(x, x.dtype) is not x)
    np.testing.assert_array_equal(lean.matrix_transpose(x), compat.matrix_transpose(x), strict=True)
    assert np.shares_memory(lean.matrix_transpose(x), x)
    assert lean.vecdot is compat.vecdot and lean.concat is compat.concat and lean.sum is compat.sum
    assert lean.matmul is np.matmul and kernel_namespace(compat, threads=True).matmul is not np.matmul
    seen = []
    two_workers = dataclasses.replace(policy.policy(compat, "cpu", np.float64), workers=2)
    for tiles in (False, True):
        run = executor.program(lambda a, xp, fused: seen.append(xp), two_workers, None, False, tiles=tiles, xp=compat)
        run(x)
    assert seen == [lean, kernel_namespace(compat, threads=True)]  # tiles on threads: matmul releases the GIL


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lean_matmul_equals_numpys_bit_for_bit(dtype):
    """The lean namespace's matmul for tiles on threads (np.dot for two matrices, which releases the GIL):
    np.matmul's values."""
    import array_api_compat.numpy as compat
    from moonxp.arrays import kernel_namespace
    lean, rng = kernel_namespace(compat, threads=True), np.random.default_rng(0)
    shapes = [((2, 5190), (5190, 50)), ((1, 5190), (5190, 50)), ((5190, 3), (3, 50)), ((5190, 50), (50, 1)),
              ((4, 2, 100), (4, 100, 50)), ((100, 3), (4, 3, 50))]
    for a_shape, b_shape in shapes:
        a, b = rng.normal(size=a_shape).astype(dtype), rng.normal(size=b_shape).astype(dtype)
        for a_view in (a, np.asfortranarray(a)):
            np.testing.assert_array_equal(lean.matmul(a_view, b), np.matmul(a_view, b), strict=True)
    W = rng.normal(size=(7, 100)).astype(dtype)  # strides BLAS cannot take: np.dot's copy could differ
    for a, b in ((rng.normal(size=(1, 7)).astype(dtype), W[:, ::2]), (W[::2, ::3].T, W[::2, :1]),
                 (np.zeros((1, 1), dtype), -np.ones((1, 1), dtype))):
        np.testing.assert_array_equal(lean.matmul(a, b), np.matmul(a, b), strict=True)
        assert np.signbit(lean.matmul(a, b)).tolist() == np.signbit(np.matmul(a, b)).tolist()


def test_kernels_contract_through_the_namespaces_matmul():
    """Every contraction of the eager kernels is `xp.matmul` (an `@` would bypass the engine's choice)."""
    import array_api_compat.numpy as compat
    from moonxp.kernels import error_and_gradient_sums, forward, logistic_error_and_gradient_sums, with_ones
    calls = []
    spy = types.SimpleNamespace(**{**vars(compat), "matmul": lambda a, b: calls.append(1) or compat.matmul(a, b)})
    X, T, p = moonxp.make_problem(0, n_samples=30, hidden=5)
    forward(p, X, xp=spy)
    error_and_gradient_sums(p, X, T, spy)
    error_and_gradient_sums(p, with_ones(X, compat), T, spy, ones_column=True)
    logistic_error_and_gradient_sums(p, X, T, np.ones_like(T), spy)
    assert len(calls) == 2 + 5 + 5 + 5  # forward: X W, a v; each gradient: those and three sums over N


def test_outputs_stay_on_the_inputs_device(case):
    """Every public function returns arrays on the input's device (strict's device1 catches a missing device=)."""
    X, T, p = moonxp.make_problem(3, n_samples=40, hidden=8)  # test_train's sizes: JAX compiles once
    params = moonxp.Params(*(case.asarray(a) for a in p))
    Xd, Td = case.asarray(X), case.asarray(T)
    Y = moonxp.forward(params, Xd)
    outputs = [Y, moonxp.loss(Y, Td), *moonxp.backprop(params, Xd, Td),
               *moonxp.train(params, Xd, Td, iters=2)[0], moonxp.train(params, Xd, Td, iters=2)[1],
               *moonxp.evaluate(params, Xd, Td), moonxp.evaluate_grid(params, size=5)]
    for a in outputs:
        assert_on_case(a, case)
    assert_close(Y, np.maximum(X @ p.W + p.b, 0) @ p.v, case)


def test_execution_policies():
    import array_api_compat.numpy as np_xp
    numpy_policy = policy.policy(np_xp, "cpu", np_xp.float64)
    assert numpy_policy.workers == len(os.sched_getaffinity(0)) and numpy_policy.compiler is None
    assert numpy_policy == policy.policy(np_xp, "cpu", np_xp.float32)  # cached compiled code stays valid
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as torch_xp
    torch_policy = policy.policy(torch_xp, torch.device("cpu"), torch.float32)
    assert torch_policy.compiler is not None and torch_policy.cost is None  # compiles only when asked


def test_gpu_policy_tiles_by_free_memory_and_stays_fixed(monkeypatch):
    cupy = pytest.importorskip("cupy")
    import array_api_compat.cupy as cupy_xp
    device = cupy.cuda.Device(0)  # a real (unhashable) CuPy device object; no GPU needed to build it
    free = [1 << 30]  # below the cap (GPU_TILE_CAP: tests/test_execution.py)
    monkeypatch.setattr(policy, "_gpu_tiles", {})
    monkeypatch.setattr(policy, "_free_gpu_memory", lambda case, dev: free[0])
    first = policy.policy(cupy_xp, device, cupy_xp.float32)
    assert first.tile_elements == int((1 << 30) * policy.GPU_MEMORY_SHARE) // 4 and first.workers == 1
    free[0] = 1 << 28  # memory use changed: the policy (and so compiled code, tile sizes learned) stays
    assert policy.policy(cupy_xp, device, cupy_xp.float32) == first
    assert policy.policy(cupy_xp, device, cupy_xp.float64).tile_elements == int((1 << 28) * policy.GPU_MEMORY_SHARE) // 8
    assert policy.policy(cupy_xp, cupy.cuda.Device(1), cupy_xp.float32).tile_elements == (1 << 28) * 0.5 // 4


def test_malloc_tuning_runs_once_and_can_be_turned_off(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

    monkeypatch.setattr(policy.ctypes, "CDLL", lambda name: FakeLibc())
    monkeypatch.setattr(policy.sys, "platform", "linux")
    policy.keep_freed_memory.cache_clear()
    monkeypatch.setenv("MOONXP_MALLOC_TUNING", "0")
    policy.keep_freed_memory()
    assert calls == []
    policy.keep_freed_memory.cache_clear()
    monkeypatch.delenv("MOONXP_MALLOC_TUNING")
    policy.keep_freed_memory()
    policy.keep_freed_memory()
    assert calls == [(policy.M_MMAP_THRESHOLD, 32 << 20), (policy.M_TRIM_THRESHOLD, 256 << 20)]
    policy.keep_freed_memory.cache_clear()


def test_malloc_is_tuned_by_the_command_line_not_by_library_calls(monkeypatch, tmp_path):
    import io
    from moonxp.app.cli import main
    calls = []
    monkeypatch.setattr(policy, "keep_freed_memory", lambda: calls.append("tuned"))
    X, T, params = moonxp.make_problem(0)
    moonxp.train(params, X, T, iters=3)
    moonxp.evaluate_grid(params, size=8)
    moonxp.sweep(hidden=(3,), samples=(10,), iters=(2,), seeds=range(2))
    assert calls == []
    assert main(["--iters", "2", "--no-plot", "--quiet", "--out", str(tmp_path)], stdout=io.StringIO()) == 0
    assert calls == ["tuned"]


# ---------------------------------------------------------------- a broken backend install

@pytest.fixture
def broken_cupy(monkeypatch):
    real = importlib.import_module

    def import_module(name, package=None):
        if name.split(".")[0] == "cupy":
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version\nmore")
        return real(name, package)
    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # "installed"


def test_broken_backend_install_is_one_line(broken_cupy, tmp_path):
    code, out, err = cli("--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "cupy is installed but cannot be imported (RuntimeError: CUDA driver version is insufficient" in err


def test_broken_backend_install_in_info(broken_cupy):
    text = moonxp.app.info.text(measure_limits=False)
    line = next(line for line in text.splitlines() if line.strip().startswith("cupy"))
    assert "not usable: " in line and "RuntimeError" in line
