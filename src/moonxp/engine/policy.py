"""Execution policy: how work on one namespace/device runs (tile size, CPU threads, compiler, kernel forms).

On CUDA, compiling is the default (torch.compile, jax.jit), with the kernels'
fusion-friendly forms (`kernels`, ``fused=True``); CuPy arrays reach a compiler
through DLPack (`Bridge`), zero-copy, when PyTorch with CUDA (else JAX with a GPU)
is installed. On the CPU the eager matmul forms stay: they measured faster there.

The policy is a pure function of (namespace, device, dtype), except for the
process-wide state below, which lives here and only here:

- ``_gpu_tiles``: a GPU's tile size, fixed from its free memory at first use, so
  that compiled programs (traced per tile shape) stay cached;
- ``_fitted``: a smaller tile size learned when a device ran out of memory, kept
  so the next call does not run out again;
- ``_limit``: a cap on every tile, on every device, set by `limit_tiles` (to bound
  memory, or to make tests tile small problems);
- glibc's malloc thresholds (`keep_freed_memory`), set once for the process at the
  first NumPy policy, because freed tile temporaries are then reused instead of
  being faulted in afresh (twice as fast here; ``MOONXP_MALLOC_TUNING=0`` opts out).

`reset()` forgets the two tile caches (malloc settings stay: they change speed only).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from array_api_compat import is_cupy_namespace, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from ..arrays import device_context
from ..environment import cores

# Elements that all live temporaries of one tile hold together. On a CPU, cache-sized
# tiles run many times faster than temporaries of hundreds of MB (see docs/design.md);
# 2**20 measured best for both training and grids on a 2-core EPYC (bench/RESULTS.md).
CPU_TILE_ELEMENTS = 1 << 20
GPU_MEMORY_SHARE = 0.5  # of free device memory, for one tile's temporaries
# Past 2**31 elements CuPy indexes in 64 bits, and a GPU is saturated long before: cap GPU tiles.
GPU_TILE_CAP = 1 << 28
# XLA fuses part of the temporaries; larger tiles train faster, but each tile of each
# step is traced, so compile time grows as tiles shrink. 2**23 balanced both here.
JAX_TILE_ELEMENTS = 1 << 23
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@dataclass(frozen=True)
class Bridge:
    """Run compiled programs of another library on these arrays, zero-copy through DLPack.

    `xp` is the namespace the program computes in; `into` takes an array there,
    `back` brings a result back to the arrays' own namespace.
    """

    xp: Any
    into: Callable[[Any], Any]
    back: Callable[[Any], Any]


@dataclass(frozen=True)
class Policy:
    """How work on one namespace/device runs: tile size, CPU threads, a compiler if any, and its name.

    `fused`: compiled programs use the kernels' fusion-friendly forms. `bridge`: the
    compiler belongs to another library, reached through DLPack.
    """

    tile_elements: int
    workers: int
    compiler: Callable[[Callable], Callable] | None = None
    compile_by_default: bool = False
    fused: bool = False
    bridge: Bridge | None = None
    compiled_as: str = ""


def policy(xp: Any, device: Any, dtype: Any) -> Policy:
    """Execution policy for arrays of namespace `xp` on `device` in floating `dtype`.

    `tile_elements` bounds the elements of all temporaries a tile holds at once.
    Query it with the device current (`arrays.device_context`): a GPU's free memory is read here.
    """
    itemsize = xp.finfo(dtype).bits // 8
    if is_jax_namespace(xp):
        if getattr(device, "platform", "cpu") == "gpu":
            return Policy(_gpu_tile_elements(xp, device, itemsize), 1, _jax_jit, True, fused=True,
                          compiled_as="jax.jit")
        return Policy(JAX_TILE_ELEMENTS, 1, _jax_jit, True, compiled_as="jax.jit")  # eager JAX: op by op
    if is_cupy_namespace(xp):
        tiles = _gpu_tile_elements(xp, device, itemsize)
        bridged = _cupy_bridge(xp, itemsize)
        if bridged is None:
            return Policy(tiles, 1)  # eager CuPy only
        bridge, compiler, name = bridged
        return Policy(tiles, 1, compiler, True, fused=True, bridge=bridge, compiled_as=name)
    if is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda":
        return Policy(_gpu_tile_elements(xp, device, itemsize), 1, _torch_compile, True, fused=True,
                      compiled_as="torch.compile")
    if is_numpy_namespace(xp):
        # NumPy releases the GIL in its loops, so tiles run on all cores.
        keep_freed_memory()
        return Policy(CPU_TILE_ELEMENTS, cores())
    if is_torch_namespace(xp):  # torch threads each op itself; on the CPU torch.compile only when asked
        return Policy(CPU_TILE_ELEMENTS, 1, _torch_compile, compiled_as="torch.compile")
    return Policy(CPU_TILE_ELEMENTS, 1)


def tile_elements(policy: Policy) -> int:
    """The tile size to use now under `policy`: its own, a smaller one that fitted after running out of memory,
    or the `limit_tiles` cap, whichever is smallest."""
    return min(_fitted.get(policy, policy.tile_elements), _limit[0])


@contextlib.contextmanager
def limit_tiles(elements: int) -> Iterator[None]:
    """Within the block, no tile on any device holds more than `elements` elements of temporaries."""
    previous = _limit[0]
    _limit[0] = max(1, int(elements))
    try:
        yield
    finally:
        _limit[0] = previous


def remember_fitted(policy: Policy, elements: int) -> None:
    """Use tiles of `elements` from now on under `policy` (after running out of memory with larger ones)."""
    _fitted[policy] = elements


def reset() -> None:
    """Forget the GPU tile sizes and the tile sizes learned from out-of-memory errors."""
    _gpu_tiles.clear()
    _fitted.clear()


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> None:
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


def _jax_jit(fn: Callable) -> Callable:
    import jax
    return jax.jit(fn)


def _torch_compile(fn: Callable) -> Callable:
    import torch
    return torch.compile(fn, dynamic=False)


@functools.lru_cache(maxsize=4)
def _cupy_bridge(xp: Any, itemsize: int) -> tuple[Bridge, Callable, str] | None:
    """PyTorch with CUDA, else JAX with a GPU, as the compiler of CuPy arrays (None: neither is usable)."""
    if importlib.util.find_spec("torch") is not None:
        import torch
        if torch.cuda.is_available():
            import array_api_compat.torch as torch_xp
            return Bridge(torch_xp, torch.from_dlpack, xp.from_dlpack), _torch_compile, "torch.compile via DLPack"
    if importlib.util.find_spec("jax") is not None:
        import jax
        try:
            jax.devices("gpu")
        except RuntimeError:
            return None
        if itemsize == 8:
            jax.config.update("jax_enable_x64", True)  # else JAX computes float64 in float32
        return Bridge(jax.numpy, jax.numpy.from_dlpack, xp.from_dlpack), _jax_jit, "jax.jit via DLPack"
    return None


def _gpu_tile_elements(xp: Any, device: Any, itemsize: int) -> int:
    """Tile size from the device's free memory at first use (a fixed policy keeps compiled code cached),
    at most `GPU_TILE_CAP`."""
    key = (xp.__name__, str(device), itemsize)  # CuPy's Device objects are not hashable
    if key not in _gpu_tiles:
        free = _free_gpu_memory(xp, device)
        share = GPU_TILE_CAP if free is None else int(free * GPU_MEMORY_SHARE) // itemsize
        _gpu_tiles[key] = max(1 << 16, min(GPU_TILE_CAP, share))
    return _gpu_tiles[key]


def free_device_memory(xp: Any, device: Any) -> int | None:
    """Free bytes for new arrays on a GPU of CuPy, PyTorch or JAX (its library's pool included).

    Returns
    -------
    int or None
        None for the CPU (host memory is the caller's to measure) or where the library does not tell.
    """
    gpu = (is_cupy_namespace(xp) or (is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda")
           or (is_jax_namespace(xp) and getattr(device, "platform", "cpu") == "gpu"))
    if not gpu:
        return None
    with device_context(xp, device):
        return _free_gpu_memory(xp, device)


def _free_gpu_memory(xp: Any, device: Any) -> int | None:
    """Bytes free on `device` for new arrays, its library's pool included (None: not told);
    CuPy: `device` must be current."""
    if is_cupy_namespace(xp):
        import cupy
        free, _ = cupy.cuda.runtime.memGetInfo()
        return free + cupy.get_default_memory_pool().free_bytes()
    if is_jax_namespace(xp):  # XLA's allocator holds its share of the device (75% unless told otherwise)
        stats = device.memory_stats() or {}
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
    import torch
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


_gpu_tiles: dict = {}  # (namespace, device, itemsize) -> tile elements, fixed at first use
_fitted: dict = {}     # Policy -> tile elements that fitted after running out of memory
_limit = [1 << 62]     # cap on every tile (`limit_tiles`); a list so the context manager can set it
