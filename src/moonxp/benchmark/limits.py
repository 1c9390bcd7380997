"""A device's own limits, measured on the spot: peak matmul FLOP/s and copy bandwidth; and the timer.

Benchmark results are reported as a share of a roofline built from these two
numbers, so figures from different machines compare like with like.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

from ..arrays import device_context, synchronize
from ..engine.backend import Backend

# (matrix side n, copy bytes) per mode and device kind; GPU sizes fill an H100/H200
SIZES = {"cpu": {"smoke": (256, 1 << 22), "quick": (1024, 1 << 26), "full": (2048, 1 << 28)},
         "cuda": {"smoke": (1024, 1 << 24), "quick": (8192, 1 << 30), "full": (16384, 1 << 31)}}
LAUNCHES = {"cpu": 1, "cuda": 10}  # launches per sync: one GPU copy of 1 GB takes well under a millisecond


def median_time(call: Callable[[], Any], min_repeats: int = 5, min_seconds: float = 0.5,
                max_repeats: int = 50, max_seconds: float = float("inf")) -> tuple[float, int]:
    """The benchmark's timer: (median seconds, repeats) of `call()` after one warm-up call.

    Each timed call ends with a device sync before the clock is read. Repeats until both
    `min_repeats` and `min_seconds` are reached (at most `max_repeats`), or once
    `max_seconds` have been spent timing (at least one timed call).

    Parameters
    ----------
    call : zero-argument function returning the arrays to synchronize on.
    min_repeats, min_seconds, max_repeats, max_seconds : when to stop, as above.

    Returns
    -------
    (seconds, repeats) : the median of the timed calls and how many there were.
    """
    synchronize(call())
    times: list[float] = []
    while not times or (sum(times) < max_seconds and len(times) < max_repeats
                        and (len(times) < min_repeats or sum(times) < min_seconds)):
        start = time.perf_counter()
        synchronize(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(times)


def _repeated(fn: Callable[[], Any], launches: int) -> Callable[[], Any]:
    def call():
        for _ in range(launches - 1):
            fn()
        return fn()  # one stream: when the last is done, all are
    return call


def measure(backend: Backend, mode: str = "quick") -> dict:
    """Peak matmul FLOP/s (n x n @ n x n) and copy bandwidth (bytes read + written per second).

    Both run on random data (clocks run higher on constant data) with several launches
    per device sync on a GPU, so launch and sync overheads do not count.

    Parameters
    ----------
    backend : where and in which dtype to measure.
    mode : "smoke", "quick" or "full": the problem sizes (see `SIZES`).

    Returns
    -------
    limits : {"matmul_flops", "copy_bandwidth", "matmul_n", "copy_bytes", "launches"}.
    """
    xp, kind = backend.xp, backend.kind
    n, copy_bytes = SIZES[kind][mode]
    launches = LAUNCHES[kind]
    rng = np.random.default_rng(0)
    itemsize = np.dtype(backend.dtype_name).itemsize
    a = backend.asarray(rng.random((n, n), dtype=backend.dtype_name))
    x = backend.asarray(rng.random(copy_bytes // itemsize, dtype=backend.dtype_name))
    with device_context(xp, backend.device):
        matmul_s, _ = median_time(_repeated(lambda: a @ a, launches), min_repeats=3, min_seconds=0.3)
        copy_s, _ = median_time(_repeated(lambda: x * 1.0, launches), min_repeats=3, min_seconds=0.3)
    return {"matmul_flops": launches * 2 * n**3 / matmul_s, "copy_bandwidth": launches * 2 * copy_bytes / copy_s,
            "matmul_n": n, "copy_bytes": copy_bytes, "launches": launches}


def roofline(limits: dict, flops: float, bytes_moved: float) -> float:
    """Work items per second the device could at best reach at `flops` and `bytes_moved` per item."""
    return min(limits["matmul_flops"] / flops, limits["copy_bandwidth"] / max(bytes_moved, 1e-30))
