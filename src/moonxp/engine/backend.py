"""Backends: the only place that knows NumPy, CuPy, PyTorch, JAX and array-api-strict apart.

`resolve` turns ``--device``/``--backend``/``--dtype`` strings into a `Backend`
(namespace, device, dtype), importing optional libraries only when asked for.
`Backend.asarray` moves host data to the backend's device; everything else
about arrays is in `moonxp.arrays`, and how work runs is in `policy`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import device_context
from ..defaults import DTYPES
from ..errors import BackendError, InvalidInputError, InvalidTypeError, install_hint, one_line
from .policy import jax_cache, quiet_xla, require_x64

MODULES = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "jax": "jax",  # backend name -> its module
           "array-api-strict": "array_api_strict"}
BACKENDS = tuple(MODULES)
GPU_BACKENDS = ("cupy", "torch", "jax")
CPU_BACKENDS = ("numpy", "torch", "jax", "array-api-strict")
_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")
CUPY_HINT = f'install CuPy: {install_hint("cuda12")} (CUDA 12; ".[cuda13]" for CUDA 13)'


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

    @property
    def kind(self) -> str:
        """"cpu" or "cuda"."""
        return device_kind(self.device_name)

    def asarray(self, host: Any) -> Any:
        """Move a host array to this backend's device in its dtype (one transfer).

        Raises
        ------
        InvalidTypeError
            The device cannot hold the dtype (e.g. float64 on a device without it).
        """
        with device_context(self.xp, self.device):
            try:
                x = self.xp.asarray(np.asarray(host, dtype=self.dtype_name), dtype=self.dtype, device=self.device)
            except (ValueError, TypeError) as exc:
                raise InvalidTypeError(f"{self.device_name} on {self.name} cannot hold {self.dtype_name} "
                                       f"({exc}); use --dtype float32") from exc
        if x.dtype != self.dtype:
            raise InvalidTypeError(f"{self.name} turned {self.dtype_name} into {x.dtype} on "
                                   f"{self.device_name}; use --dtype float32")
        return x


def resolve(device: str = "cpu", backend: str | None = None, dtype: str = DTYPES[0]) -> Backend:
    """The namespace, device and dtype that a device, backend and dtype name stand for.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    backend : str, optional
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"jax"`` or ``"array-api-strict"``; by default NumPy on
        the CPU and CuPy on CUDA. Optional libraries are imported only here, when asked for.
    dtype : str
        ``"float64"`` or ``"float32"``.

    Returns
    -------
    Backend
        ``xp`` (the Array API namespace), ``device``, ``dtype``, their names and the library version;
        ``asarray(host)`` moves host data there.

    Raises
    ------
    InvalidInputError
        An unknown name, or a combination that does not exist (NumPy on CUDA, CuPy on the CPU).
    BackendError
        The library is not installed, or the device is missing or unusable.
    """
    match = _DEVICE.match(device) if isinstance(device, str) else None
    if match is None:
        raise InvalidInputError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "cpu" and match.group(2) is not None:
        raise InvalidInputError(f"unknown device {device!r}: the CPU is just 'cpu'")
    check_dtype(dtype)
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


def device_kind(device: str) -> str:
    """"cpu" or "cuda" for a device name such as "cuda:1"."""
    return "cuda" if device.startswith("cuda") else "cpu"


def check_dtype(dtype: Any, option: str = "dtype") -> str:
    """`dtype` if it is one moonxp computes in (`defaults.DTYPES`), else an InvalidInputError naming `option`."""
    if dtype not in DTYPES:
        raise InvalidInputError(f"unknown {option} {dtype!r}: use {' or '.join(DTYPES)}")
    return dtype


def _import(module: str, hint: str) -> Any:
    """Import an optional backend; any failure (a missing package, or a broken install whose import
    raises, e.g. a CUDA library mismatch) is a one-line BackendError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{module} is not installed ({exc}): {hint}") from exc
    except Exception as exc:
        raise BackendError(f"{module} is installed but cannot be imported ({one_line(exc)}): "
                           f"reinstall it, or {hint}") from exc


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
    xp = _import("array_api_strict", install_hint("array-api-strict"))
    device = xp.__array_namespace_info__().default_device()
    return Backend("array-api-strict", xp, device, getattr(xp, dtype), "cpu", dtype, xp.__version__)


def _cupy(kind: str, index: int, dtype: str) -> Backend:
    cupy = _import("cupy", CUPY_HINT)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendError(f"no CUDA device is usable by CuPy ({exc}): check the NVIDIA driver "
                           f"(nvidia-smi), or use --device cpu") from exc
    _check_index(index, count, "CuPy")
    import array_api_compat.cupy as xp
    return Backend("cupy", xp, cupy.cuda.Device(index), getattr(xp, dtype), f"cuda:{index}", dtype,
                   cupy.__version__)


def _torch(kind: str, index: int, dtype: str) -> Backend:
    torch = _import("torch", install_hint("torch"))
    if kind == "cuda":
        _check_index(index, torch.cuda.device_count() if torch.cuda.is_available() else 0, "PyTorch")
    name = "cpu" if kind == "cpu" else f"cuda:{index}"
    import array_api_compat.torch as xp
    return Backend("torch", xp, torch.device(name), getattr(xp, dtype), name, dtype, torch.__version__)


def _jax(kind: str, index: int, dtype: str) -> Backend:
    quiet_xla()  # before JAX starts its backends, a GPU's included (even when asked for the CPU)
    jax = _import("jax", f'{install_hint("jax")} (CPU; pip install "jax[cuda12]" for a GPU)')
    jax_cache()
    if dtype == "float64":
        require_x64(jax)
    try:
        devices = jax.devices("cpu" if kind == "cpu" else "gpu")
    except RuntimeError:
        devices = []
    _check_index(index, len(devices), "JAX")
    name = "cpu" if kind == "cpu" else f"cuda:{index}"
    return Backend("jax", jax.numpy, devices[index], getattr(jax.numpy, dtype), name, dtype, jax.__version__)


_LOADERS = {"numpy": _numpy, "array-api-strict": _strict, "cupy": _cupy, "torch": _torch, "jax": _jax}
