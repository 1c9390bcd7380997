"""Large work as a map over tiles of (networks x points), then a reduction.

A tile is a slice of the first batch axis (whole networks) and a slice of the
points, sized so that one (networks, points, H) temporary holds about
`Policy.tile_elements` elements: cache-sized on a CPU, a share of free memory
on a GPU. Gradients and errors are sums over points, so tiles of points add
up; tiles of networks concatenate. Tiles run on `Policy.workers` threads
(NumPy releases the GIL inside its loops). A device that runs out of memory
gets the same work again in tiles half the size.
"""

from __future__ import annotations

import functools
import operator
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ..arrays import is_out_of_memory, kernel_namespace
from ..errors import (BackendError, CompileError, CompileWarning, DeviceMemoryError, InvalidTypeError, MoonxpError,
                      first_line, one_line)
from .policy import Policy, one_blas_thread, remember_fitted, tile_elements as fitted_tile_elements

Tile = tuple[slice, slice]  # (first batch axis, points)
ALL = slice(None)
ALL_TILE = (ALL, ALL)
MIN_TILE_ELEMENTS = 1 << 10  # below this, out-of-memory is not a tiling problem
_failed: dict = {}  # compiler name ("torch.compile", ...) -> why it failed in this process; eager since


def plan(networks: int, per_network: int, points: int, per_point: int, tile_elements: int) -> list[Tile]:
    """Tiles over `networks` entries of the first batch axis (each `per_network` networks) and `points`.

    A tile's temporaries hold per_network * per_point elements per point and network entry.
    """
    if networks * per_network * points * per_point <= tile_elements:
        return [ALL_TILE]
    step_points = max(1, min(points, tile_elements // (per_network * per_point)))
    step_networks = max(1, min(networks, tile_elements // (per_network * points * per_point)))
    return [(_part(i, step_networks, networks), _part(j, step_points, points))
            for i in range(0, networks, step_networks) for j in range(0, points, step_points)]


def _part(start: int, step: int, total: int) -> slice:
    """slice(start, start + step), or ALL when one step covers everything (nothing to slice)."""
    return ALL if step >= total else slice(start, min(start + step, total))


def compiles(policy: Policy, compile: bool | None, steps: int, units: int) -> bool:
    """Whether a call runs compiled: as `compile` says, or (None) where the policy's cost model says it pays
    for `steps` steps of `units` (network, point, hidden unit) each (see `policy.CompileCost`).

    Raises
    ------
    InvalidTypeError
        compile=True where the namespace has no compiler.
    """
    if compile and policy.compiler is None:
        raise InvalidTypeError("these arrays' namespace has no compiler: compile=True needs JAX or PyTorch arrays "
                               "(or CuPy arrays with PyTorch or JAX installed for CUDA)")
    if compile is not None:
        return compile
    return policy.compiler is not None and policy.cost is not None and policy.cost.pays(steps, units)


def execution(policy: Policy, compile: bool | None, steps: int, units: int) -> str:
    """How such a call runs, and why, in words: "jax.jit", "torch.compile via DLPack", "eager (too small to
    compile)", "eager (compiling off)", "torch.compile failed: eager", ..."""
    if policy.compiler is None:
        return "eager (no compiler)"
    if policy.compiled_as in _failed:
        return f"{policy.compiled_as} failed: eager"
    if compiles(policy, compile, steps, units):
        return policy.compiled_as
    if compile is False:
        return "eager (compiling off)"
    return "eager (too small to compile)" if policy.cost is not None else "eager (compiles only when asked)"


def program(fn: Callable, policy: Policy, compile: bool | None, compiled: bool, /, *, tiles: bool = False,
            **bound: Any) -> Callable:
    """`fn` with keyword arguments bound, compiled by the policy's compiler if `compiled` (see `compiles`).

    `fn` takes ``fused``: compiled, it gets the policy's choice of kernel forms; eager, the
    matmul forms, and for NumPy ``xp`` rebound to `arrays.kernel_namespace` (`tiles`: the program
    computes tiles, which the policy's workers run side by side). Under a `Bridge`
    the program computes in the bridge's namespace (``xp`` rebound) on the same memory, through
    DLPack. Cached, so a compiled function is traced once per input shape, not once per call.
    `fn` must read no state of moonxp's modules (a compiled program would keep what it read
    while tracing).

    A compiler that fails (a graph break, a missing C compiler or Triton, an XLA error)
    raises CompileError where `compile` is True; otherwise the program runs eager from then
    on, after one `CompileWarning`, and `execution` says so.
    """
    return _program(fn, policy, compiled, compile is True, tiles and policy.workers > 1, **bound)


def fall_back(compiler: str, reason: str) -> None:
    """Run eager from now on where `compiler` would have compiled by moonxp's own choice; warn once."""
    if compiler not in _failed:
        _failed[compiler] = reason
        warnings.warn(f"{reason}; running eager", CompileWarning, stacklevel=3)


@functools.lru_cache(maxsize=32)
def _program(fn: Callable, policy: Policy, compiled: bool, asked: bool, threads: bool, /, **bound: Any) -> Callable:
    lean = {"xp": kernel_namespace(bound["xp"], threads)} if "xp" in bound else {}
    eager = functools.partial(fn, fused=False, **(bound | lean))
    if not compiled:
        return eager
    built: list = []  # the compiled program, built at the first call

    def call(*args: Any) -> Any:
        if policy.compiled_as in _failed and not asked:
            return eager(*args)
        try:
            if not built:
                built.append(_compile(fn, policy, bound))
            return built[0](*args)
        except Exception as exc:
            if is_out_of_memory(exc) or isinstance(exc, MoonxpError) and not isinstance(exc, BackendError):
                raise  # tiles halve (`fit`); moonxp's own errors are the input's (a bridge's is the compiler's)
            reason = f"{policy.compiled_as} failed ({one_line(exc) if first_line(exc) else type(exc).__name__})"
            if asked:
                raise CompileError(policy.compiled_as, reason) from exc
            fall_back(policy.compiled_as, reason)
            return eager(*args)
    return call


def _compile(fn: Callable, policy: Policy, bound: dict) -> Callable:
    """`fn` compiled by the policy's compiler, in the bridge's namespace if there is one.

    The compiler gets `fn` itself, its keyword arguments static: a program's code is its own,
    so compilers count its versions per program (torch.compile would count the versions of every
    `functools.partial` it compiles together, against one recompile limit).
    """
    bridge = None if policy.bridge is None else policy.bridge()
    static = {"fused": policy.fused, **bound, **({} if bridge is None else {"xp": bridge.xp})}
    compiled = policy.compiler(fn, tuple(static))
    if bridge is None:
        return lambda *args: compiled(*args, **static)

    def bridged(*args: Any) -> Any:
        into = _tree(lambda x: bridge.into(x) if hasattr(x, "__dlpack__") else x, args)
        return _tree(bridge.back, compiled(*into, **static))
    return bridged


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="moonxp")


def shares(items: Sequence, workers: int) -> list:
    """`items` cut in contiguous shares of sizes differing by one at most, one per worker (fewer items than
    workers: one item each)."""
    workers = min(workers, len(items))
    return [items[len(items) * k // workers:len(items) * (k + 1) // workers] for k in range(workers)]


def run(work: Callable[[Tile], Any], tiles: Sequence[Tile], workers: int) -> list:
    """[work(tile) for tile in tiles], with contiguous blocks of tiles on `workers` threads.

    Worker threads handle floating-point errors as the calling thread does (np.errstate), and
    BLAS runs one thread per call while they work (`policy.one_blas_thread`).
    """
    blocks = shares(tiles, workers)
    if len(blocks) <= 1:
        return [work(t) for t in tiles]
    errors = np.geterr()

    def block(part: Sequence[Tile]) -> list:
        with np.errstate(**errors):
            return [work(t) for t in part]
    with one_blas_thread():
        others = [_pool(len(blocks)).submit(block, b) for b in blocks[1:]]
        first = block(blocks[0])  # the calling thread takes a block too
        return first + [r for f in others for r in f.result()]


def fit(work: Callable[[list], Any], planner: Callable[[int], list], total: int, policy: Policy) -> tuple[list, Any]:
    """`work(tiles)` with tiles = `planner(tile_elements)`, for work holding `total` elements in all.

    Out of device memory (at run time, compiled programs included), the tiles halve until
    they fit (the size that fitted is kept for later calls with this policy, see
    `policy.reset`) or become too small to help. Returns (tiles, work's result).
    """
    tile_elements = fitted_tile_elements(policy)
    while True:
        tiles = planner(tile_elements)
        try:
            return tiles, work(tiles)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if tile_elements <= MIN_TILE_ELEMENTS:
                raise DeviceMemoryError(
                    f"out of device memory even in tiles of {tile_elements} elements "
                    f"({first_line(exc)}); free device memory (other processes?), use float32, "
                    f"or use fewer networks or points") from exc
            tile_elements = min(tile_elements, total) // 2
            remember_fitted(policy, tile_elements)


def map_tiles(work: Callable[[Tile], Any], planner: Callable[[int], list], total: int,
              policy: Policy) -> tuple[list, list]:
    """Run `work` on each tile of `planner(tile_elements)` (see `fit`). Returns (tiles, results)."""
    return fit(lambda tiles: [work(tiles[0])] if len(tiles) == 1 else run(work, tiles, policy.workers),
               planner, total, policy)


def _groups(tiles: Sequence[tuple], results: list) -> list[tuple[list, list]]:
    """Consecutive (tiles, results) that share their tiles' first slice, without that slice."""
    groups: dict[tuple, tuple[list, list]] = {}
    for tile, result in zip(tiles, results):
        rest, parts = groups.setdefault((tile[0].start, tile[0].stop), ([], []))  # ALL is (None, None)
        rest.append(tile[1:])
        parts.append(result)
    return list(groups.values())


def _tree(fn: Callable, *trees: Any) -> Any:
    """fn applied leaf by leaf to matching (named) tuples of arrays."""
    first = trees[0]
    if isinstance(first, tuple):
        leaves = [_tree(fn, *parts) for parts in zip(*trees)]
        return first._make(leaves) if hasattr(first, "_make") else tuple(leaves)
    return fn(*trees)


def sum_over_points(tiles: Sequence[Tile], results: list, xp: Any) -> Any:
    """Reduce per-tile results (arrays or nested tuples of them): add point tiles, concatenate network tiles."""
    if len(results) == 1:
        return results[0]
    sums = [functools.reduce(lambda a, b: _tree(operator.add, a, b), parts) for _, parts in _groups(tiles, results)]
    return sums[0] if len(sums) == 1 else _tree(lambda *parts: xp.concat(parts, axis=0), *sums)


def concat_tiles(tiles: Sequence[tuple], results: list, xp: Any, axes: tuple[int, ...]) -> Any:
    """Reassemble per-tile arrays: the slices in position k of the tiles concatenate along axes[k]."""
    if not axes:
        return results[0]
    parts = [concat_tiles(rest, group, xp, axes[1:]) for rest, group in _groups(tiles, results)]
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=axes[0])
