"""Arrays of any namespace: which namespace and device they share, host copies, synchronization.

The only module besides `engine.backend` that knows libraries apart, and only
through `array_api_compat`'s ``is_*`` tests: nothing here imports an optional
library unless an array of it is already at hand.
"""

from __future__ import annotations

import contextlib
import functools
import math
import types
from typing import Any, Callable

import numpy as np
from array_api_compat import (array_namespace, device as device_of, is_array_api_obj, is_cupy_array,
                              is_cupy_namespace, is_jax_array, is_jax_namespace, is_lazy_array, is_numpy_array,
                              is_numpy_namespace, is_torch_array)

from .errors import InvalidTypeError

Array = Any
Namespace = Any
Device = Any


def namespace_of(*arrays: Array) -> Namespace:
    """The one namespace of `arrays`.

    Raises
    ------
    InvalidTypeError
        When the arrays come from different libraries.
    """
    try:
        return array_namespace(*arrays)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrays})
        raise InvalidTypeError(f"arrays from different libraries ({', '.join(kinds)}): move them to one "
                               f"namespace first") from exc


def common_device(*arrays: Array) -> Device:
    """The one device of `arrays`.

    Raises
    ------
    InvalidTypeError
        When the arrays sit on different devices.
    """
    # A traced array (jax.jit, vmap, grad) has no device of its own yet: the tracer places it.
    devices = [device_of(a) for a in arrays if values_readable(a)] or [device_of(arrays[0])]
    if any(d != devices[0] for d in devices[1:]):
        raise InvalidTypeError(f"arrays on different devices ({', '.join(sorted({str(d) for d in devices}))}): "
                               f"move them to one device first")
    return devices[0]


def device_context(xp: Namespace, device: Device) -> contextlib.AbstractContextManager:
    """Context in which work on `device` runs: CuPy launches on the current device, so enter it; JAX
    computes float32 matmuls at full precision in it (on NVIDIA GPUs it would use TF32 by default)."""
    if is_cupy_namespace(xp):
        return device
    if is_jax_namespace(xp):
        import jax
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def to_host(x: Array) -> np.ndarray:
    """A NumPy copy (or view) of an array from any backend.

    Raises
    ------
    InvalidTypeError
        `x` is not an array, or its values cannot be read (traced, or a torch meta tensor).
    """
    if not is_array_api_obj(x):
        raise InvalidTypeError(f"to_host takes an array, not a {type(x).__name__}: for other values use "
                               f"numpy.asarray")
    if not values_readable(x):
        raise InvalidTypeError("to_host cannot read a traced array (jax.jit, vmap, grad, torch.func) or a torch "
                               "meta tensor: call it outside the transformation")
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_jax_array(x) or is_numpy_array(x):  # NumPy arrays and scalars
        return np.asarray(x)
    return np.from_dlpack(x)  # array-api-strict, on any of its devices


def kernel_namespace(xp: Namespace, threads: bool = False) -> Namespace:
    """The namespace eager kernels compute in: `xp`, except for NumPy array-api-compat's own with `astype`,
    `matrix_transpose` and `matmul` as the NumPy functions and methods they wrap, the same operations
    without their Python layers (about 2 us of a 27 us homework step). For programs whose tiles run on
    `threads`, `matmul` of two matrices is `np.dot`: the same BLAS call, but np.matmul holds the GIL for
    two matrices and np.dot does not, so the workers' contractions run side by side (docs/design.md)."""
    return _lean_numpy(threads) if is_numpy_namespace(xp) else xp


@functools.cache
def _lean_numpy(threads: bool) -> Namespace:
    import array_api_compat.numpy as compat
    lean = types.ModuleType(compat.__name__, compat.__doc__)
    vars(lean).update(vars(compat))
    lean.astype = _astype
    lean.matrix_transpose = _matrix_transpose
    lean.matmul = _matmul_releasing_the_gil if threads else np.matmul
    return lean


def _astype(x: np.ndarray, dtype: Any, /, *, copy: bool = True) -> np.ndarray:
    return x.astype(dtype, copy=copy)


def _matrix_transpose(x: np.ndarray, /) -> np.ndarray:
    return x.swapaxes(-1, -2)


def _matmul_releasing_the_gil(a: np.ndarray, b: np.ndarray, /) -> np.ndarray:
    """np.matmul's values: np.dot makes the same BLAS call only for matrices BLAS takes as they are (C or F
    order; for other strides the two copy differently and can differ in the last bit), and a 1 x 1 product
    by 1 x 1 is a plain multiply in np.dot (0 times -1 is -0 there, +0 in np.matmul)."""
    if a.ndim == 2 and b.ndim == 2 and _blas_layout(a) and _blas_layout(b) and a.size * b.size > 1:
        return np.dot(a, b)
    return np.matmul(a, b)


def _blas_layout(a: np.ndarray) -> bool:
    return a.flags.c_contiguous or a.flags.f_contiguous


# Small JAX arrays are checked on the host: copies cost less than eager JAX ops, which JAX compiles once per shape.
HOST_CHECK_ELEMENTS = 1 << 16


def all_true(xp: Namespace, arrays: list, test: Callable[[Namespace, Array], Array]) -> bool:
    """Whether the elementwise `test(namespace, a)` holds everywhere in every array: one read-back on their
    device (NumPy arrays and small JAX arrays: array by array on the host, where reads cost nothing)."""
    if is_numpy_namespace(xp):
        return all(test(np, a).all() for a in arrays)
    if is_jax_namespace(xp) and sum(math.prod(a.shape) for a in arrays) <= HOST_CHECK_ELEMENTS:
        return all(bool(np.all(test(np, to_host(a)))) for a in arrays)
    with device_context(xp, device_of(arrays[0])):  # CuPy launches on the current device
        return bool(xp.all(xp.stack([xp.all(test(xp, a)) for a in arrays])))


def stack(xp: Namespace, arrays: list, axis: int = -1) -> Array:
    """``xp.stack(arrays, axis=axis)``; small JAX arrays are stacked on the host and moved back in one
    transfer (eagerly, JAX would compile one stack per count of arrays). NumPy arrays are gathered by
    ``np.asarray``, many times faster than ``np.stack`` for the NumPy scalars that 0-d results are."""
    if is_numpy_namespace(xp):
        stacked = np.asarray(arrays)
        return stacked if stacked.ndim == 1 else np.ascontiguousarray(np.moveaxis(stacked, 0, axis))
    if is_jax_namespace(xp) and sum(math.prod(a.shape) for a in arrays) <= HOST_CHECK_ELEMENTS:
        import jax
        return jax.device_put(np.stack([to_host(a) for a in arrays], axis=axis), device_of(arrays[0]))
    return xp.stack(arrays, axis=axis)


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


def values_readable(x: Array) -> bool:
    """False while `x` is traced or lazy, when reading its values (for validation) is impossible.

    Under ``jax.jit`` even work on a concrete array is staged, so for JAX a fresh
    constant tells whether a trace is running.
    """
    if isinstance(x, np.ndarray):  # the common case, answered before the other libraries' tests
        return True
    if is_jax_array(x):
        import jax
        return not (isinstance(x, jax.core.Tracer) or isinstance(jax.numpy.zeros(()), jax.core.Tracer))
    if is_torch_array(x):
        import torch
        from torch._C._functorch import is_functorch_wrapped_tensor  # torch.func's vmap/grad wrappers
        return not (torch.compiler.is_compiling() or x.is_meta or is_functorch_wrapped_tensor(x))
    return not is_lazy_array(x)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device running out of memory (CuPy, PyTorch, JAX/XLA), also where a compiler
    wrapped it (torch's BackendCompilerFailed)."""
    while exc is not None:
        if "OutOfMemory" in type(exc).__name__ or "RESOURCE_EXHAUSTED" in str(exc):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def detached(x: Any) -> Any:
    """`x` without autograd state: a torch tensor is detached from its graph; anything else is returned as it is."""
    return x.detach() if is_torch_array(x) else x
