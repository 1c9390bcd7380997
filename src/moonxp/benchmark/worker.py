"""One benchmark process: times the cases of one backend and measures device limits.

`moonxp bench` runs each backend's cases in a fresh process of this module
(``python -m moonxp.benchmark.worker``), so that no library's cache makes
another's cases fail: JAX takes 75% of a GPU at its first use unless told
otherwise, and CuPy's and PyTorch's pools keep what they freed. Inside a
process, the pools are emptied between GPU cases too. Every library computes
float32 matmuls at the same precision (`MATMUL_PRECISION`: full FP32, no TF32).

Protocol: one JSON request on stdin, {"cases": [Case.spec()...], "timing":
{median_time's bounds}, "limits": [[device, dtype, mode]...]}; one JSON message
per line on stdout: {"usable": false} (then nothing else), {"limits": {...}} per
limit asked, {"index": i, "result": {...}} per case.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Iterator

from ..engine import processes
from ..engine.backend import device_kind, resolve
from ..engine.policy import keep_freed_memory, use_jax_x64
from ..environment import cores
from ..errors import one_line
from .cases import Case, usable
from .limits import measure, median_time
from .workloads import make_call

MATMUL_PRECISION = "highest"  # JAX's name; torch's too: float32 matmuls in FP32 (JAX's GPU default is TF32)
ENVIRONMENT = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX allocates as it goes, not 75% up front
               "CUPY_TF32": "0"}                          # CuPy's default, spelled out
TIMING = {"smoke": {"min_repeats": 1, "min_seconds": 0.0, "max_repeats": 1},
          "quick": {"min_repeats": 3, "min_seconds": 1.0, "max_seconds": 6.0},
          "full": {"min_repeats": 3, "min_seconds": 1.0, "max_seconds": 6.0}}  # a slow peer stops after 6 s


def fair_precision(backend: str) -> None:
    """Set `backend`'s float32 matmul precision to `MATMUL_PRECISION`, and JAX's x64 mode for the float64 cases
    (of JAX, and of CuPy compiled through JAX): process-wide, for the benchmark."""
    use_jax_x64()
    if backend == "jax":
        import jax
        jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION)
    elif backend == "torch":
        import torch
        torch.set_float32_matmul_precision(MATMUL_PRECISION)


def free_pools(backend: str) -> None:
    """Give a GPU library's cached blocks back to the device, so the next case starts with all of it."""
    gc.collect()
    if backend == "cupy":
        import cupy
        cupy.get_default_memory_pool().free_all_blocks()
    elif backend == "torch":
        import torch
        torch.cuda.empty_cache()


def time_case(case: Case, timing: dict) -> dict:
    """Time one case: its record with "median_s", "repeats" and "backend_version", or with "error"."""
    result = case.record()
    try:
        backend = resolve(case.device, case.backend, case.dtype)
        result["backend_version"] = backend.version
        call = make_call(case.workload, case.size, backend, case.implementation, case.compile)
        result["median_s"], result["repeats"] = median_time(call, **timing)
    except Exception as exc:  # a peer out of memory, say: report it, keep going
        result["error"] = one_line(exc)
    return result


def run(request: dict) -> Iterator[dict]:
    """The messages answering `request` (see the module's docstring), one case at a time."""
    specs = request["cases"]
    first = Case.from_spec(specs[0])
    if not usable(first.device, first.backend):
        yield {"usable": False}
        return
    fair_precision(first.backend)
    for device, dtype, mode in request.get("limits", ()):
        try:
            found = measure(resolve(device, first.backend, dtype), mode)
        except Exception as exc:
            found = {"error": one_line(exc)}
        yield {"limits": {"device": device, "dtype": dtype, **found}}
    if first.backend == "numpy" and device_kind(first.device) == "cpu":
        processes.start(cores() - 1)  # moonxp's worker processes up, as after its first half second of work
    for index, spec in enumerate(specs):
        case = Case.from_spec(spec)
        result = time_case(case, request["timing"])
        if device_kind(case.device) == "cuda":
            free_pools(case.backend)
        yield {"index": index, "result": result}


def main() -> None:
    os.environ.update(ENVIRONMENT)
    keep_freed_memory()  # moonxp is timed as the command line runs it
    for message in run(json.load(sys.stdin)):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
