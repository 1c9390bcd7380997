"""Backends: the only place that knows NumPy, CuPy, PyTorch, JAX and array-api-strict apart.

`resolve` turns ``--device``/``--backend``/``--dtype`` strings into a `Backend`
(namespace, device, dtype), importing optional libraries only when asked for.
The rest of this module moves data between host and device, synchronizes for
timing, and chooses how work on a namespace/device is executed (`Policy`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from array_api_compat import (array_namespace, device as device_of,
                              is_cupy_array, is_cupy_namespace, is_jax_array, is_jax_namespace,
                              is_lazy_array, is_numpy_array, is_numpy_namespace, is_torch_array, is_torch_namespace)

from .errors import BackendError, InvalidInputError, InvalidTypeError

BACKENDS = ("numpy", "cupy", "torch", "jax", "array-api-strict")
DTYPES = ("float64", "float32")
GPU_BACKENDS = ("cupy", "torch", "jax")
CPU_BACKENDS = ("numpy", "torch", "jax", "array-api-strict")
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
CUPY_HINT = 'install CuPy: pip install "moonxp[cuda12]" (CUDA 12) or "moonxp[cuda13]" (CUDA 13)'

# Elements that all live temporaries of one tile hold together. On a CPU, cache-sized
# tiles run many times faster than temporaries of hundreds of MB (see docs/design.md);
# 2**20 measured best for both training and grids on a 2-core EPYC (bench/RESULTS.md).
CPU_TILE_ELEMENTS = 1 << 20
GPU_MEMORY_SHARE = 0.5  # of free device memory, for one tile's temporaries
# XLA fuses part of the temporaries; larger tiles train faster, but each tile of each
# step is traced, so compile time grows as tiles shrink. 2**23 balanced both here.
JAX_TILE_ELEMENTS = 1 << 23
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@dataclass(frozen=True)
class Backend:
    """A resolved backend: namespace `xp`, `device` and `dtype` objects, and their names."""

    name: str
    xp: Any
    device: Any
    dtype: Any
    device_name: str
    dtype_name: str
    version: str

    def asarray(self, host: Any) -> Any:
        """Move a host array to this backend's device in its dtype (one transfer)."""
        with device_context(self.xp, self.device):
            try:
                x = self.xp.asarray(np.asarray(host, dtype=self.dtype_name), dtype=self.dtype, device=self.device)
            except (ValueError, TypeError) as exc:
                raise InvalidTypeError(f"{self.device_name} on {self.name} cannot hold {self.dtype_name} "
                                       f"({exc}); use --dtype float32") from None
        if x.dtype != self.dtype:
            raise InvalidTypeError(f"{self.name} turned {self.dtype_name} into {x.dtype} on "
                                   f"{self.device_name}; use --dtype float32")
        return x


@dataclass(frozen=True)
class Policy:
    """How work on one namespace/device runs: tile size, CPU threads, and a compiler if any."""

    tile_elements: int
    workers: int
    compiler: Callable[[Callable], Callable] | None = None
    compile_by_default: bool = False


def resolve(device: str = "cpu", backend: str | None = None, dtype: str = "float64") -> Backend:
    """Backend for device 'cpu' | 'cuda' | 'cuda:N', backend name (default: numpy on cpu, cupy on cuda), dtype."""
    match = _DEVICE.match(device) if isinstance(device, str) else None
    if match is None:
        raise InvalidInputError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu" and match.group(2) is not None:
        raise InvalidInputError(f"unknown device {device!r}: the CPU is just 'cpu'")
    if dtype not in DTYPES:
        raise InvalidInputError(f"unknown dtype {dtype!r}: use float64 or float32")
    name = backend or ("cupy" if kind == "cuda" else "numpy")
    if name not in BACKENDS:
        raise InvalidInputError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if kind == "cuda" and name not in GPU_BACKENDS:
        raise InvalidInputError(f"{name} runs on the CPU only: for --device {device} use "
                                f"--backend cupy, torch or jax")
    if kind == "cpu" and name not in CPU_BACKENDS:
        raise InvalidInputError(f"{name} runs on CUDA devices only: use --device cuda, "
                                f"or --backend numpy for the CPU")
    return _LOADERS[name](kind, index, dtype)


def _import(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{module} is not installed ({exc}): {hint}") from None


def _check_index(index: int, count: int, what: str) -> None:
    if count == 0:
        raise BackendError(f"no CUDA device found for {what}: check the NVIDIA driver (nvidia-smi), "
                           f"or use --device cpu")
    if index >= count:
        raise BackendError(f"cuda:{index} does not exist: {what} sees {count} CUDA device(s), "
                           f"cuda:0 to cuda:{count - 1}")


def _numpy(kind: str, index: int, dtype: str) -> Backend:
    import array_api_compat.numpy as xp
    return Backend("numpy", xp, "cpu", getattr(xp, dtype), "cpu", dtype, np.__version__)


def _strict(kind: str, index: int, dtype: str) -> Backend:
    xp = _import("array_api_strict", "pip install array-api-strict")
    device = xp.__array_namespace_info__().default_device()
    return Backend("array-api-strict", xp, device, getattr(xp, dtype), "cpu", dtype, xp.__version__)


def _cupy(kind: str, index: int, dtype: str) -> Backend:
    cupy = _import("cupy", CUPY_HINT)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendError(f"no CUDA device is usable by CuPy ({exc}): check the NVIDIA driver "
                           f"(nvidia-smi), or use --device cpu") from None
    _check_index(index, count, "CuPy")
    import array_api_compat.cupy as xp
    return Backend("cupy", xp, cupy.cuda.Device(index), getattr(xp, dtype), f"cuda:{index}", dtype,
                   cupy.__version__)


def _torch(kind: str, index: int, dtype: str) -> Backend:
    torch = _import("torch", "pip install torch")
    if kind == "cuda":
        _check_index(index, torch.cuda.device_count() if torch.cuda.is_available() else 0, "PyTorch")
    name = "cpu" if kind == "cpu" else f"cuda:{index}"
    import array_api_compat.torch as xp
    return Backend("torch", xp, torch.device(name), getattr(xp, dtype), name, dtype, torch.__version__)


def _jax(kind: str, index: int, dtype: str) -> Backend:
    jax = _import("jax", 'pip install jax (CPU) or "jax[cuda12]" (GPU)')
    if dtype == "float64":
        # Without x64, JAX silently computes float64 requests in float32.
        jax.config.update("jax_enable_x64", True)
    try:
        devices = jax.devices("cpu" if kind == "cpu" else "gpu")
    except RuntimeError:
        devices = []
    _check_index(index, len(devices), "JAX")
    name = "cpu" if kind == "cpu" else f"cuda:{index}"
    return Backend("jax", jax.numpy, devices[index], getattr(jax.numpy, dtype), name, dtype, jax.__version__)


_LOADERS = {"numpy": _numpy, "array-api-strict": _strict, "cupy": _cupy, "torch": _torch, "jax": _jax}


def device_context(xp: Any, device: Any) -> contextlib.AbstractContextManager:
    """Context in which work on `device` runs: CuPy launches on the current device, so enter it."""
    return device if is_cupy_namespace(xp) else contextlib.nullcontext()


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of an array from any backend."""
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_jax_array(x) or is_numpy_array(x):  # NumPy arrays and scalars
        return np.asarray(x)
    return np.from_dlpack(x)  # array-api-strict, on any of its devices


def synchronize(*results: Any) -> None:
    """Wait until the work producing `results` (arrays, or tuples of them) has finished, before a timer is read."""
    for x in results:
        if isinstance(x, (tuple, list)):
            synchronize(*x)
        elif is_jax_array(x):
            x.block_until_ready()
        elif is_cupy_array(x):
            x.device.synchronize()
        elif is_torch_array(x) and x.device.type == "cuda":
            import torch
            torch.cuda.synchronize(x.device)


def values_readable(x: Any) -> bool:
    """False while `x` is traced or lazy, when reading its values (for validation) is impossible."""
    if is_jax_array(x):
        import jax
        return not isinstance(x, jax.core.Tracer)
    if is_torch_array(x):
        import torch
        return not torch.compiler.is_compiling()
    return not is_lazy_array(x)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device running out of memory (CuPy, PyTorch, JAX/XLA)."""
    return "OutOfMemory" in type(exc).__name__ or "RESOURCE_EXHAUSTED" in str(exc)


def policy(xp: Any, device: Any, dtype: Any) -> Policy:
    """Execution policy for arrays of namespace `xp` on `device` in floating `dtype`.

    `tile_elements` bounds the elements of all temporaries a tile holds at once.
    """
    if is_jax_namespace(xp):
        return _jax_policy()
    compiler = _torch_compile if is_torch_namespace(xp) else None  # torch.compile only when asked
    if is_cupy_namespace(xp) or (is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda"):
        return Policy(_gpu_tile_elements(xp, device, xp.finfo(dtype).bits // 8), 1, compiler)
    if is_numpy_namespace(xp):
        # NumPy releases the GIL in its loops, so tiles run on all cores.
        _keep_freed_memory()
        return Policy(CPU_TILE_ELEMENTS, _cores())
    return Policy(CPU_TILE_ELEMENTS, 1, compiler)  # torch threads each op itself


def _cores() -> int:
    """Cores this process may run on (affinity and container limits included, where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed tile temporaries instead of returning them to the OS.

    By default, blocks over 128 KiB come from fresh mmap pages and freed heap tops are
    trimmed, so every tile temporary pays a page fault per 4 KiB on first touch: that
    halved the speed of tiled training here. Heap blocks up to 32 MiB and up to 256 MiB
    of retained free memory avoid it. Set MOONXP_MALLOC_TUNING=0 to leave malloc alone.
    """
    if os.environ.get("MOONXP_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


@functools.lru_cache(maxsize=1)
def _jax_policy() -> Policy:
    import jax
    return Policy(JAX_TILE_ELEMENTS, 1, jax.jit, compile_by_default=True)  # eager JAX dispatches op by op


def _torch_compile(fn: Callable) -> Callable:
    import torch
    return torch.compile(fn, dynamic=False)


def _gpu_tile_elements(xp: Any, device: Any, itemsize: int) -> int:
    """Tile size from the device's free memory at first use (a fixed policy keeps compiled code cached)."""
    key = (xp.__name__, str(device), itemsize)  # CuPy's Device objects are not hashable
    if key not in _GPU_TILES:
        _GPU_TILES[key] = max(1 << 16, int(_free_gpu_memory(xp, device) * GPU_MEMORY_SHARE) // itemsize)
    return _GPU_TILES[key]


_GPU_TILES: dict = {}


def _free_gpu_memory(xp: Any, device: Any) -> int:
    if is_cupy_namespace(xp):
        import cupy
        with device:
            free, _ = cupy.cuda.runtime.memGetInfo()
        return free + cupy.get_default_memory_pool().free_bytes()
    import torch
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def namespace_of(*arrays: Any) -> Any:
    """The one namespace of `arrays`; a clear error when they mix libraries."""
    try:
        return array_namespace(*arrays)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrays})
        raise InvalidTypeError(f"arrays from different libraries ({', '.join(kinds)}): move them to one "
                               f"namespace first") from None


def common_device(*arrays: Any) -> Any:
    """The one device of `arrays`; a clear error when they sit on different devices."""
    devices = [device_of(a) for a in arrays]
    if any(d != devices[0] for d in devices[1:]):
        raise InvalidTypeError(f"arrays on different devices ({', '.join(sorted({str(d) for d in devices}))}): "
                               f"move them to one device first")
    return devices[0]
