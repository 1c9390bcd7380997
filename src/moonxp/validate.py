"""Checks at the public entries: one-line errors that name the problem and the fix.

Shape and dtype checks are free. Value checks (finite, labels +-1) read one
boolean back from the device per argument (params, X, T), once per call, never
inside the training loop, and are skipped while arrays are being traced (``jax.jit``,
``vmap``, ``grad``, ``torch.func``) or have no values (torch ``meta``).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from array_api_compat import is_array_api_obj

from .arrays import all_true, common_device, namespace_of, values_readable
from .defaults import MAX_SEED
from .errors import InvalidInputError, InvalidTypeError
from .kernels import Params




def arrays(params: Params, *others: Any, name: str = "params") -> tuple[Any, Any]:
    """Namespace and device shared by the parameters and `others`; checks the parameters' shapes."""
    if not isinstance(params, tuple) or len(params) != 3:
        raise InvalidTypeError(f"{name} must be moonxp.Params(W, b, v), not {type(params).__name__}")
    params = Params(*params)
    for label, a in [(f"{name}.{f}", p) for f, p in zip("Wbv", params)] + [("an input", a) for a in others]:
        _array(label, a)
    xp = namespace_of(*params, *others)
    device = common_device(*params, *others)
    dtype = params.W.dtype
    for field, a in zip("Wbv", params):
        _floating(xp, f"{name}.{field}", a)
        if a.dtype != dtype:
            raise InvalidTypeError(f"{name}.{field} is {a.dtype} but {name}.W is {dtype}: give all "
                                   f"parameters one dtype (xp.astype)")
    W, b, v = params
    if W.ndim < 2 or W.shape[-2] < 1 or W.shape[-1] < 1:
        raise InvalidInputError(f"{name}.W has shape {tuple(W.shape)}: expected (..., D, H) with D, H >= 1")
    if 0 in tuple(W.shape[:-2]):
        raise InvalidInputError(f"{name}.W has shape {tuple(W.shape)}: a batch dim of size 0 holds no networks")
    expected = tuple(W.shape[:-2]) + (W.shape[-1],)
    for field, a in (("b", b), ("v", v)):
        if tuple(a.shape) != expected:
            raise InvalidInputError(f"{name}.{field} has shape {tuple(a.shape)} but {name}.W {tuple(W.shape)} "
                                    f"needs {expected}: (..., H) with W's batch dims and H")
    _finite(xp, [f"{name}.{field}" for field in "Wbv"], params)
    return xp, device


def points(xp: Any, X: Any, params: Params, *, into_batch: bool) -> None:
    """X is (N, D) or (..., N, D) with the params' D inputs, float like the params, finite, N >= 1.

    `into_batch`: X's batch dims must broadcast into the params' (training: one gradient per network).
    """
    _floating(xp, "X", X)
    if X.dtype != params.W.dtype:
        raise InvalidTypeError(f"X is {X.dtype} but the params are {params.W.dtype}: convert one "
                               f"(xp.astype) so both have the same dtype")
    inputs = params.W.shape[-2]
    if X.ndim < 2 or X.shape[-1] != inputs:
        raise InvalidInputError(f"X has shape {tuple(X.shape)}: expected points (N, {inputs}) or (..., N, {inputs}) "
                                f"for params.W of shape {tuple(params.W.shape)} (D = {inputs} inputs)")
    if X.shape[-2] < 1:
        raise InvalidInputError("X holds no points (N = 0): give at least one point")
    batch, pbatch = tuple(X.shape[:-2]), tuple(params.W.shape[:-2])
    try:
        joint = _broadcast_shapes(batch, pbatch)
    except ValueError as exc:
        raise InvalidInputError(f"X's batch dims {batch} do not broadcast with the params' {pbatch}") from exc
    if into_batch and joint != pbatch:
        raise InvalidInputError(f"X's batch dims {batch} exceed the params' {pbatch}: each network "
                                f"needs its own parameters; stack params to batch {joint}")
    _finite(xp, ["X"], [X])


def labels(xp: Any, T: Any, X: Any, params: Params) -> None:
    """T (..., N) for the outputs of `params` on points X (..., N, D), in X's dtype, every value -1 or +1."""
    batch = _broadcast_shapes(tuple(X.shape[:-2]), tuple(params.W.shape[:-2]))
    _labels(xp, T, batch + (X.shape[-2],), X.dtype, "X")


def outputs_and_labels(Y: Any, T: Any) -> tuple[Any, Any]:
    """Namespace and device of network outputs Y (..., N) and labels T (..., N) of +-1."""
    _array("Y", Y)
    _array("T", T)
    xp, device = namespace_of(Y, T), common_device(Y, T)
    _floating(xp, "Y", Y)
    if Y.ndim < 1 or Y.shape[-1] < 1:
        raise InvalidInputError(f"Y has shape {tuple(Y.shape)}: expected outputs (..., N) with N >= 1")
    _labels(xp, T, tuple(Y.shape), Y.dtype, "Y")
    _finite(xp, ["Y"], [Y])
    return xp, device


def _labels(xp: Any, T: Any, shape: tuple, dtype: Any, other: str) -> None:
    _floating(xp, "T", T)
    if T.dtype != dtype:
        raise InvalidTypeError(f"T is {T.dtype} but {other} is {dtype}: convert T (xp.astype) to {other}'s dtype")
    if T.ndim < 1 or T.shape[-1] != shape[-1] or not _broadcasts_into(tuple(T.shape), shape):
        raise InvalidInputError(f"T has shape {tuple(T.shape)} but {other} needs {shape}: one label per point, "
                                f"(..., N)")
    if values_readable(T) and not all_true(xp, [T], lambda xp, t: (t == 1.0) | (t == -1.0)):
        raise InvalidInputError("labels T must be -1 or +1; convert {0, 1} labels with moonxp.signed_labels")


def learning_rate(lr: Any, name: str = "learning rate") -> float:
    """lr is a finite number > 0."""
    if not _finite_number(lr) or lr <= 0:
        raise InvalidInputError(f"{name} must be a finite number > 0, not {lr!r}")
    return float(lr)


def count(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """value is an integer in [minimum, maximum]."""
    if (isinstance(value, bool) or not isinstance(value, Integral) or value < minimum
            or (maximum is not None and value > maximum)):
        limits = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InvalidInputError(f"{name} must be an integer {limits}, not {value!r}")
    return int(value)


def compile_flag(compile: Any) -> None:
    """compile is None (the namespace's default), True or False."""
    if compile is not None and not isinstance(compile, bool):
        raise InvalidTypeError(f"compile must be None, True or False, not {compile!r}")


def callback(name: str, fn: Any) -> None:
    """fn is None or callable."""
    if fn is not None and not callable(fn):
        raise InvalidTypeError(f"{name} must be a function or None, not {type(fn).__name__}")


def problem(seed: Any, n_samples: Any, noise: Any, hidden: Any, networks: Any = 1, *,
            names: dict[str, str] | None = None) -> None:
    """Arguments of `make_problem` / `make_ensemble`: seeds seed..seed+networks-1 all valid for NumPy.

    `names` renames arguments in messages (the CLI names its options: {"n_samples": "--samples"}).
    """
    name = {key: key for key in ("seed", "n_samples", "noise", "hidden", "networks")} | (names or {})
    count(name["networks"], networks, 1, MAX_SEED + 1)  # NumPy has 2**32 seeds
    try:
        count(name["seed"], seed, 0, MAX_SEED - networks + 1)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc} (NumPy seeds stay below 2**32, and {networks} networks use seeds "
                                f"seed to seed + {networks - 1})" if networks > 1 else str(exc)) from exc
    count(name["n_samples"], n_samples, 1)
    count(name["hidden"], hidden, 1)
    if not _finite_number(noise) or noise < 0:
        raise InvalidInputError(f"{name['noise']} must be a finite number >= 0, not {noise!r}")


def planar(params: Params) -> None:
    """The grid is a plane: the params take D = 2 inputs."""
    if params.W.shape[-2] != 2:
        raise InvalidInputError(f"the grid spans the (x1, x2) plane, but params.W has shape {tuple(params.W.shape)} "
                                f"(D = {params.W.shape[-2]} inputs): grids need D = 2; use moonxp.forward on "
                                f"your own points for other D")


def interval(lo: Any, hi: Any) -> tuple[float, float]:
    """lo < hi, both finite."""
    if not (_finite_number(lo) and _finite_number(hi)) or not lo < hi:
        raise InvalidInputError(f"grid bounds must be finite with lo < hi, not lo={lo!r}, hi={hi!r}")
    return float(lo), float(hi)


def _finite_number(x: Any) -> bool:
    """A real number (not bool) that is finite as a float (10**400 is not)."""
    try:
        return not isinstance(x, bool) and isinstance(x, Real) and math.isfinite(float(x))
    except OverflowError:
        return False


def _array(name: str, a: Any) -> None:
    if isinstance(a, np.ma.MaskedArray):
        raise InvalidTypeError(f"{name} is a NumPy masked array: pass a.filled(value) or a plain array")
    if not is_array_api_obj(a):
        raise InvalidTypeError(f"{name} is a {type(a).__name__}, not an array: convert it with xp.asarray "
                               f"of NumPy, CuPy, PyTorch, JAX or array-api-strict")


def _floating(xp: Any, name: str, a: Any) -> None:
    if not xp.isdtype(a.dtype, "real floating"):
        raise InvalidTypeError(f"{name} has dtype {a.dtype}: moonxp computes in floating point; "
                               f"convert it with xp.astype({name}, xp.float64) or xp.float32")


def _finite(xp: Any, names: list[str], arrays: list) -> None:
    """One read-back for all `arrays`; the names of the bad ones only on failure."""
    if not all(values_readable(a) for a in arrays) or all_true(xp, arrays, _isfinite):
        return
    bad = [name for name, a in zip(names, arrays) if not all_true(xp, [a], _isfinite)]
    raise InvalidInputError(f"{' and '.join(bad)} hold{'s' if len(bad) == 1 else ''} NaN or infinity: "
                            f"give finite values")


def _isfinite(xp: Any, a: Any) -> Any:
    return xp.isfinite(a)


def _broadcast_shapes(a: tuple, b: tuple) -> tuple:
    """``np.broadcast_shapes(a, b)``; equal shapes, the common case, answered without its microseconds."""
    return a if a == b else np.broadcast_shapes(a, b)


def _broadcasts_into(shape: tuple, target: tuple) -> bool:
    try:
        return _broadcast_shapes(shape, target) == target
    except ValueError:
        return False
