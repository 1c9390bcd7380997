"""The benchmark's cases, listed once: `moonxp bench` and the pytest-benchmark suite in bench/ both draw from here.

A case is one workload at one size and dtype, by one implementation (moonxp on a
backend, eager or compiled, or a peer) on one device. `suite` lists every case
for bench/; `for_run` picks those of one `moonxp bench` run. `usable` is the one
test of whether a backend runs on a device here.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

from ..defaults import DTYPES
from ..engine.backend import MODULES, device_kind, resolve
from ..errors import MoonxpError
from .peers import PEERS
from .workloads import WORKLOADS, Workload

MODES = ("smoke", "quick", "full")  # CI smoke test (each case once), `--quick`, full runs


@dataclass(frozen=True)
class Implementation:
    """Who does the work: moonxp (eager or compiled) or a peer, on a backend, on the CPU or a CUDA device."""

    key: str                   # short id, used in pytest ids
    implementation: str        # "moonxp" or a key of `peers.PEERS`
    backend: str
    kind: str                  # "cpu" | "cuda"
    compile: bool | None = None
    quick: bool = True         # part of `--quick` runs


IMPLEMENTATIONS = (
    Implementation("moonxp-numpy", "moonxp", "numpy", "cpu"),
    Implementation("moonxp-strict", "moonxp", "array-api-strict", "cpu"),
    Implementation("moonxp-torch-cpu", "moonxp", "torch", "cpu", False),
    Implementation("moonxp-torch-cpu-compile", "moonxp", "torch", "cpu", True),
    Implementation("moonxp-jax-cpu", "moonxp", "jax", "cpu", True),
    Implementation("moonxp-jax-cpu-eager", "moonxp", "jax", "cpu", False),
    *(Implementation(f"{name}-cpu" if peer.backend != "numpy" else name, name, peer.backend, "cpu")
      for name, peer in PEERS.items()),
    Implementation("moonxp-cupy", "moonxp", "cupy", "cuda", False),
    # torch.compile takes seconds to tens of seconds per program and shape: in full runs only
    Implementation("moonxp-cupy-compile", "moonxp", "cupy", "cuda", True, quick=False),  # via DLPack
    Implementation("moonxp-torch-cuda", "moonxp", "torch", "cuda", False),
    Implementation("moonxp-torch-cuda-compile", "moonxp", "torch", "cuda", True, quick=False),
    Implementation("moonxp-jax-gpu", "moonxp", "jax", "cuda", True),
    Implementation("moonxp-jax-gpu-eager", "moonxp", "jax", "cuda", False),
    *(Implementation(f"{name}-gpu", name, peer.backend, "cuda") for name, peer in PEERS.items()
      if peer.backend != "numpy"),
)


@dataclass(frozen=True)
class Case:
    """One measurement: a workload at a size and dtype, by one implementation on one device."""

    workload: Workload
    size: int
    dtype: str
    implementation: str        # "moonxp" or a peer's name
    backend: str
    device: str                # "cpu", "cuda" or "cuda:N"
    compile: bool | None = None
    key: str = ""              # the implementation's short id

    @property
    def label(self) -> str:
        """How the implementation prints: a peer's name, or moonxp with its mode and backend."""
        if self.implementation != "moonxp":
            return self.implementation
        return "moonxp" + {None: "", True: "+compile", False: " eager"}[self.compile] + f" ({self.backend})"

    @property
    def id(self) -> str:
        return f"{self.workload.name}-{self.size}-{self.dtype}-{self.key or self.label}"

    def record(self) -> dict:
        """The JSON-ready description of the case that every result starts from."""
        return {"workload": self.workload.name, "size": self.size,
                "size_label": self.workload.size_label.format(self.size), "dtype": self.dtype,
                "implementation": self.label, "backend": self.backend, "device": self.device,
                "compile": self.compile, "unit": self.workload.unit}

    def spec(self) -> dict:
        """What a worker process needs to rebuild the case (see `from_spec`)."""
        return {"workload": self.workload.name, "size": self.size, "dtype": self.dtype,
                "implementation": self.implementation, "backend": self.backend, "device": self.device,
                "compile": self.compile, "key": self.key}

    @classmethod
    def from_spec(cls, spec: dict) -> "Case":
        return cls(**{**spec, "workload": WORKLOADS[spec["workload"]]})


def dtypes(workload: Workload, mode: str) -> tuple[str, ...]:
    """The dtypes a workload runs in: its own if it has any (the homework: float64); `--quick`: float32 only."""
    single_first = tuple(reversed(DTYPES))  # ("float32", "float64")
    return workload.dtypes or (single_first[:1] if mode == "quick" else single_first)


def _expand(impl: Implementation, device: str, mode: str, sizes_of: str | None = None) -> list[Case]:
    return [Case(workload, size, dtype, impl.implementation, impl.backend, device, impl.compile, impl.key)
            for workload in WORKLOADS.values() for size in workload.sizes[sizes_of or impl.kind][mode]
            for dtype in dtypes(workload, mode)]


def suite(mode: str) -> list[Case]:
    """Every case of the pytest-benchmark suite, usable here or not (see `usable`)."""
    return [case for impl in IMPLEMENTATIONS for case in _expand(impl, impl.kind, mode)]


def for_run(device: str, backend: str | None, mode: str) -> list[Case]:
    """The cases of one `moonxp bench` run on `device`.

    moonxp on the chosen backend (eager and compiled where it has a compiler), the
    peers on the same kind of device, and on a GPU the NumPy baseline at the smallest
    GPU size of each workload. Peers are listed whether or not they are usable here.

    Parameters
    ----------
    device : "cpu", "cuda" or "cuda:N".
    backend : moonxp's backend (None: the device's default).
    mode : one of `MODES`.

    Returns
    -------
    cases : in the order they run.

    Raises
    ------
    MoonxpError
        When the chosen backend cannot run on `device`.
    """
    kind = device_kind(device)
    chosen = resolve(device, backend, "float32").name
    mine = [impl for impl in IMPLEMENTATIONS if impl.implementation == "moonxp" and impl.kind == kind
            and impl.backend == chosen and (impl.quick or mode != "quick")] or [
        Implementation(f"moonxp-{chosen}", "moonxp", chosen, kind)]
    peers = [impl for impl in IMPLEMENTATIONS if impl.implementation != "moonxp" and impl.kind == kind]
    out = [case for impl in mine + peers for case in _expand(impl, device, mode)]
    if kind == "cuda":  # the CPU baseline in the same run, at the smallest GPU size
        baseline = next(impl for impl in IMPLEMENTATIONS if impl.key == "moonxp-numpy")
        out += [case for case in _expand(baseline, "cpu", mode, sizes_of="cuda")
                if case.size == case.workload.sizes["cuda"][mode][0]]
    return out


@functools.lru_cache(maxsize=None)
def usable(device: str, backend: str) -> bool:
    """Whether `backend` is installed and runs on `device` here (imports it)."""
    if importlib.util.find_spec(MODULES[backend]) is None:
        return False
    try:
        resolve(device, backend, "float32")
        return True
    except MoonxpError:
        return False
