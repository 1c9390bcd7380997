"""A device's own limits, measured on the spot: peak matmul FLOP/s and copy bandwidth.

Benchmark results are reported as a share of a roofline built from these two
numbers, so figures from different machines compare like with like.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from ..arrays import device_context, synchronize
from ..engine.backend import Backend


def median_time(call: Callable[[], Any], min_repeats: int = 5, min_seconds: float = 0.5,
                max_repeats: int = 50, max_seconds: float = float("inf")) -> tuple[float, int]:
    """(median seconds, repeats) of `call()` after one warm-up call; each time includes a device sync.

    Repeats until both `min_repeats` and `min_seconds` are reached (at most `max_repeats`),
    or once `max_seconds` have been spent timing.
    """
    synchronize(call())
    times: list[float] = []
    while not times or (sum(times) < max_seconds and len(times) < max_repeats
                        and (len(times) < min_repeats or sum(times) < min_seconds)):
        start = time.perf_counter()
        synchronize(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def measure(backend: Backend, quick: bool = False) -> dict:
    """Peak matmul FLOP/s (n x n @ n x n) and copy bandwidth (bytes read + written per second)."""
    xp, gpu = backend.xp, backend.device_name.startswith("cuda")
    n = (8192 if gpu else 2048) // (2 if quick else 1)
    copy_bytes = (1 << 30 if gpu else 1 << 28) // (4 if quick else 1)
    with device_context(xp, backend.device):
        a = xp.ones((n, n), dtype=backend.dtype, device=backend.device)
        matmul_s, _ = median_time(lambda: a @ a, min_repeats=3, min_seconds=0.3)
        itemsize = xp.finfo(backend.dtype).bits // 8
        x = xp.ones((copy_bytes // itemsize,), dtype=backend.dtype, device=backend.device)
        copy_s, _ = median_time(lambda: x + 0.0, min_repeats=3, min_seconds=0.3)
    return {"matmul_flops": 2 * n**3 / matmul_s, "copy_bandwidth": 2 * copy_bytes / copy_s,
            "matmul_n": n, "copy_bytes": copy_bytes}


def roofline(limits: dict, flops: float, bytes_moved: float) -> float:
    """Work items per second the device could at best reach at `flops` and `bytes_moved` per item."""
    return min(limits["matmul_flops"] / flops, limits["copy_bandwidth"] / max(bytes_moved, 1e-30))
