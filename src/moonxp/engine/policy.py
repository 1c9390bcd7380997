"""Execution policy: how work on one namespace/device runs (tile size, CPU threads, compiler, kernel forms).

Compiling is chosen per call, where it pays (`CompileCost`, measured figures in
docs/gpu.md): JAX always (eager JAX compiles every op anyway, so one small jitted
program costs less), torch.compile on CUDA only for work large enough to win back
its compile time, on the CPU only when asked. Compiled programs use the kernels'
fusion-friendly forms (`kernels`, ``fused=True``) on GPUs; CuPy arrays reach a
compiler through DLPack (`Bridge`), zero-copy, when PyTorch with CUDA (else JAX
with a GPU) is installed; that library is imported only when a program compiles.
On the CPU the eager matmul forms stay: they measured faster there.

The policy is a pure function of (namespace, device, dtype), except for the
process-wide state below, which lives here and only here (and is read outside
compiled programs only):

- ``_gpu_tiles``: a GPU's tile size, fixed from its free memory at first use, so
  that compiled programs (traced per tile shape) stay cached;
- ``_fitted``: a smaller tile size learned when a device ran out of memory, kept
  so the next call does not run out again;
- ``_limit``: a cap on every tile, on every device, set by `limit_tiles` (to bound
  memory, or to make tests tile small problems);
- glibc's malloc thresholds (`keep_freed_memory`), which only the command line,
  the benchmark and moonxp's Dask workers set, because freed tile temporaries are
  then reused instead of being faulted in afresh; a library user calls it
  explicitly (it changes the whole process; ``MOONXP_MALLOC_TUNING=0`` opts out).

`reset()` forgets the two tile caches (malloc settings stay: they change speed only).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import inspect
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from array_api_compat import is_cupy_namespace, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from ..arrays import device_context
from ..environment import cores
from ..errors import BackendError

# Elements that all live temporaries of one tile hold together. On a CPU, cache-sized
# tiles run many times faster than temporaries of hundreds of MB (see docs/design.md);
# 2**20 measured best for both training and grids on a 2-core EPYC (bench/RESULTS.md).
CPU_TILE_ELEMENTS = 1 << 20
GPU_MEMORY_SHARE = 0.5  # of free device memory, for one tile's temporaries
# Past 2**31 elements one array needs 64-bit indexing (CuPy, Triton): cap a GPU tile's temporaries there,
# well above what a GPU needs to be saturated, so only work that does not fit the device is split.
GPU_TILE_CAP = 1 << 31
# JAX on the CPU (compiled per tile, the tiles' sums added and applied by one more program): 2**21 measured
# fastest at N = 20 000 and N = 200 000 alike (1.2-1.35x 2**22; 2**23 and larger slower still; bench/RESULTS.md).
JAX_TILE_ELEMENTS = 1 << 21
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@dataclass(frozen=True)
class CompileCost:
    """When compiling pays on one device: once the eager time it saves,
    ``steps * (step_s + units * unit_s)``, reaches its cost `compile_s` (with empty caches).

    A unit is one (network, point, hidden unit) of one step, or one (network, grid point,
    hidden unit) of a grid. The figures and how they were found are in docs/gpu.md.
    """

    compile_s: float  # seconds to compile a call's programs, caches empty
    step_s: float     # eager seconds saved per step (kernel launches, Python dispatch)
    unit_s: float     # eager seconds saved per unit (memory passes that compiled programs fuse away)

    def pays(self, steps: int, units: int) -> bool:
        return steps * (self.step_s + units * self.unit_s) >= self.compile_s


# Eager JAX compiles every distinct op itself, so one jitted step program always costs less (docs/gpu.md).
ALWAYS = CompileCost(0.0, 0.0, 0.0)
# torch.compile (Dynamo, Inductor, Triton) on CUDA: estimates for an H200, not yet measured on one (docs/gpu.md).
TORCH_CUDA = CompileCost(compile_s=10.0, step_s=200e-6, unit_s=1e-11)
# jax.jit of CuPy arrays through DLPack: XLA compiles a step in about a second; eager CuPy compiles nothing.
JAX_BRIDGE = CompileCost(compile_s=1.0, step_s=200e-6, unit_s=1e-11)


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

    `cost`: when compiling pays by default (None: only when asked). `fused`: compiled
    programs use the kernels' fusion-friendly forms. `bridge`: the compiler belongs to
    another library, reached through DLPack; called when a program compiles, it
    imports that library and returns the `Bridge`. `writes_tiles`: tiles write their
    results into one preallocated array (NumPy) instead of being concatenated.
    `eager_compiles`: every distinct eager op compiles (JAX), so a compiled call's setup
    (the ones column) is a compiled program too. `processes`: training's tile workers may be
    processes instead of threads (NumPy, `processes`).
    """

    tile_elements: int
    workers: int
    compiler: Callable[[Callable, tuple[str, ...]], Callable] | None = None  # (fn, its static keyword names)
    compiled_as: str = ""
    cost: CompileCost | None = None
    fused: bool = False
    bridge: Callable[[], Bridge] | None = None
    writes_tiles: bool = False
    eager_compiles: bool = False
    processes: bool = False


def policy(xp: Any, device: Any, dtype: Any) -> Policy:
    """Execution policy for arrays of namespace `xp` on `device` in floating `dtype`.

    `tile_elements` bounds the elements of all temporaries a tile holds at once.
    Query it with the device current (`arrays.device_context`): a GPU's free memory is read here.
    """
    itemsize = xp.finfo(dtype).bits // 8
    if is_jax_namespace(xp):
        if getattr(device, "platform", "cpu") == "gpu":
            return Policy(_gpu_tile_elements(xp, device, itemsize), 1, _jax_jit, "jax.jit", ALWAYS, fused=True,
                          eager_compiles=True)
        return Policy(JAX_TILE_ELEMENTS, 1, _jax_jit, "jax.jit", ALWAYS, eager_compiles=True)
    if is_cupy_namespace(xp):
        tiles = _gpu_tile_elements(xp, device, itemsize)
        for library, compiler, name, cost in (("torch", _torch_compile, "torch.compile", TORCH_CUDA),
                                              ("jax", _jax_jit, "jax.jit", JAX_BRIDGE)):
            if importlib.util.find_spec(library) is not None:  # imported only when a program compiles
                return Policy(tiles, 1, compiler, f"{name} via DLPack", cost, fused=True,
                              bridge=_bridge(library, itemsize))
        return Policy(tiles, 1)  # eager CuPy only
    if is_torch_namespace(xp) and getattr(device, "type", "cpu") == "cuda":
        return Policy(_gpu_tile_elements(xp, device, itemsize), 1, _torch_compile, "torch.compile", TORCH_CUDA,
                      fused=True)
    if is_numpy_namespace(xp):
        # NumPy releases the GIL in its loops, so tiles run on all cores.
        return Policy(CPU_TILE_ELEMENTS, cores(), writes_tiles=True, processes=True)
    if is_torch_namespace(xp):  # torch threads each op itself; on the CPU torch.compile only when asked
        return Policy(CPU_TILE_ELEMENTS, 1, _torch_compile, "torch.compile")
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


@functools.lru_cache(maxsize=1)
def _blas() -> Any:
    """The BLAS libraries loaded in this process (threadpoolctl, found once: a search costs about 1.5 ms)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController().select(user_api="blas")


def one_blas_thread() -> contextlib.AbstractContextManager:
    """A context in which BLAS calls run on the calling thread only, its previous threads restored after; in
    the main thread only, elsewhere BLAS is left as it is.

    moonxp's tile workers already take every core; a BLAS that threads a tile's
    contraction on top of them starts threads that spin for the same cores (see
    docs/design.md). OpenBLAS ignores a raise of its thread count asked from any other
    thread than the main one, so a limit set there could not be undone (calls from a
    user's threads or a Dask worker's run as before). Entering and leaving costs about 15 us.
    """
    if threading.current_thread() is not threading.main_thread():
        return contextlib.nullcontext()
    return _blas().limit(limits=1)


def cache_folder() -> Path:
    """moonxp's folder for compilation caches: $MOONXP_CACHE_DIR, else moonxp/ in the user's cache home.

    A compilation cache holds code that is loaded and run: never share it with users you do not trust.
    """
    if os.environ.get("MOONXP_CACHE_DIR"):
        return Path(os.environ["MOONXP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moonxp"


def _jax_jit(fn: Callable, static: tuple[str, ...]) -> Callable:
    """`fn` compiled by jax.jit (float32 matmuls at full precision), with moonxp's persistent compilation cache."""
    import jax
    jax_cache()
    jitted = jax.jit(fn, static_argnames=static)

    def run(*args: Any, **kwargs: Any) -> Any:
        with jax.default_matmul_precision("highest"):  # not TF32 on NVIDIA GPUs: the numbers of every backend
            return jitted(*args, **kwargs)
    return run


def jax_cache() -> None:
    """Keep JAX's compiled programs in moonxp's cache folder, unless the user chose a cache.

    It takes effect only before JAX compiles anything (its first op included): `backend.resolve`
    calls it as it imports JAX; arrays brought from elsewhere may have compiled before.
    """
    import jax
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(cache_folder() / "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # moonxp's programs compile fast


def _torch_compile(fn: Callable, static: tuple[str, ...] = ()) -> Callable:
    """`fn` compiled by torch.compile as one whole graph per input shape, with moonxp's persistent caches
    (Dynamo specializes on the `static` keyword arguments by itself).

    For CPU code, Inductor takes the vector instruction sets the CPU reports (``cpp.vec_isa_ok``)
    instead of proving each with a trial C++ build and a subprocess: with empty caches those builds
    were more than half the homework's compile time (docs/gpu.md). A user's TORCHINDUCTOR_VEC_ISA_OK stays.
    """
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_folder() / "torchinductor"))
    import torch
    from torch._inductor import config as inductor
    # fullgraph: a graph break, or a recompile past the limit, raises instead of running part of it eager
    limit = {"recompile_limit": 64} if "recompile_limit" in inspect.signature(torch.compile).parameters else {}
    options = {"cpp.vec_isa_ok": True} if inductor.cpp.vec_isa_ok is None else {}
    return torch.compile(fn, dynamic=False, fullgraph=True, options=options, **limit)


@functools.lru_cache(maxsize=None)
def _bridge(library: str, itemsize: int) -> Callable[[], Bridge]:
    """The `Policy.bridge` of CuPy arrays into `library` (torch or jax) for `itemsize`-byte floats."""
    @functools.lru_cache(maxsize=1)
    def connect() -> Bridge:
        import cupy
        if library == "torch":
            import torch
            if not torch.cuda.is_available():
                raise BackendError("PyTorch cannot use CUDA here, so it cannot compile CuPy's work")
            import array_api_compat.torch as torch_xp
            return Bridge(torch_xp, torch.from_dlpack, cupy.from_dlpack)
        quiet_xla()
        import jax
        jax.devices("gpu")  # RuntimeError without a GPU
        if itemsize == 8:
            require_x64(jax)  # else JAX would compute float64 in float32
        return Bridge(jax.numpy, jax.numpy.from_dlpack, cupy.from_dlpack)
    return connect


def require_x64(jax: Any) -> None:
    """Refuse float64 on JAX outside its x64 mode (where JAX silently computes float64 in float32): the mode is
    process-wide, so it is the caller's to turn on; the command line does (`JAX_ENABLE_X64`)."""
    if not jax.config.jax_enable_x64:
        raise BackendError('JAX computes float64 only in its x64 mode, which is process-wide: call '
                           'jax.config.update("jax_enable_x64", True) first (python -m moonxp does), or use float32')


def use_jax_x64() -> None:
    """Turn JAX's x64 mode on for this process (see `require_x64`): the command line's and the benchmark's choice.
    JAX is not imported for it: before JAX loads, ``JAX_ENABLE_X64`` (which JAX reads then) says it."""
    jax = sys.modules.get("jax")
    if jax is None:
        os.environ.setdefault("JAX_ENABLE_X64", "true")
    else:
        jax.config.update("jax_enable_x64", True)


def quiet_xla() -> None:
    """Keep JAX from taking 75% of each GPU when it starts (unless the user set XLA_PYTHON_CLIENT_PREALLOCATE):
    it would leave CuPy and PyTorch, and moonxp's own tile sizing, without that memory."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


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
    if is_cupy_namespace(xp):  # compiled through torch, outputs live in torch's cache: count its free blocks too
        import cupy
        free, _ = cupy.cuda.runtime.memGetInfo()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            free += torch.cuda.memory_reserved(device.id) - torch.cuda.memory_allocated(device.id)
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
