"""Where moonxp runs: the machine and the versions of Python, moonxp and its packages."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from . import __version__

PACKAGES = ("numpy", "array-api-compat", "scikit-learn", "matplotlib")
BACKEND_PACKAGES = {"cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy"), "torch": ("torch",), "jax": ("jax", "jaxlib"),
                    "array-api-strict": ("array-api-strict",), "numpy": ()}


def versions(backend: str | None = None) -> dict:
    """Python, moonxp's dependencies and (if given) the backend's packages, by installed version."""
    found = {"python": platform.python_version(), "moonxp": __version__}
    for name in PACKAGES + BACKEND_PACKAGES.get(backend or "numpy", ()):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found



def machine() -> dict:
    """Where this runs: CPU model, cores, system, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "python": platform.python_version()}
