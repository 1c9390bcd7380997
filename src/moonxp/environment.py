"""Where moonxp runs: the machine and the versions of Python, moonxp and its packages."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

from . import __version__

BACKEND_PACKAGES = {"cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy"), "torch": ("torch",), "jax": ("jax", "jaxlib"),
                    "array-api-strict": ("array-api-strict",), "numpy": ()}


def versions(backend: str | None = None) -> dict:
    """Python, moonxp's dependencies and (if given) the backend's packages, by installed version."""
    found = {"python": platform.python_version(), "moonxp": __version__}
    for name in dependencies() + BACKEND_PACKAGES.get(backend or "numpy", ()):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def dependencies() -> tuple[str, ...]:
    """The packages moonxp requires, as pyproject.toml lists them (extras left out): from moonxp's installed
    metadata, or from the checkout's pyproject.toml when moonxp runs from a source tree never installed."""
    try:
        requires = metadata.requires("moonxp") or []
    except metadata.PackageNotFoundError:
        try:
            text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
        except OSError:
            return ()
        block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
        requires = re.findall(r'"([^"]+)"', block.group(1)) if block else []
    return tuple(re.split(r"[\s;<>=!~\[(]", line, maxsplit=1)[0] for line in requires if "extra ==" not in line)


def cores() -> int:
    """Cores this process may run on (affinity and container limits included, where the OS tells)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine() -> dict:
    """Where this runs: CPU model, the cores this process may use, system, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": cores(), "system": platform.platform(), "python": platform.python_version()}


def host_memory() -> int:
    """Bytes of host memory this process may still take: MemAvailable, or less under a cgroup limit."""
    available = []
    try:
        with open("/proc/meminfo") as f:
            available += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            available.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not available and hasattr(os, "sysconf"):
        try:
            available.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(available) if available else 1 << 62  # unknown: refuse nothing
