"""moonxp: a two-moons ReLU network with hand-written backprop, written once for every Array API backend.

The public names load on first use (PEP 562), so ``python -m moonxp`` installs its
signal handlers before NumPy is imported (see `moonxp.app.process`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    ".api": ("backprop", "descent", "forward", "loss"),
    ".arrays": ("synchronize", "to_host"),
    ".data": ("make_ensemble", "make_problem", "signed_labels", "snapshot_iterations"),
    ".engine.backend": ("Backend", "resolve"),
    ".engine.grid": ("evaluate_grid",),
    ".engine.sweep": ("sweep",),
    ".engine.training": ("evaluate", "train"),
    ".errors": ("BackendError", "CompileError", "CompileWarning", "DeviceMemoryError", "DivergedError",
                "InvalidInputError", "InvalidTypeError", "MoonxpError", "OutputError"),
    ".kernels": ("Params",),
    ".saved": ("load_metadata", "load_params", "save_params"),
}
_MODULE = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE)


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module 'moonxp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
