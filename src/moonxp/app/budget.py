"""The memory a run needs, estimated before any work, against what the machine and the device have.

A run holds the drawn data and parameters on the host, their copies on the device
(and the gradients and updated parameters beside them), the errors of every network
at every iteration, the snapshot grids (evaluated in one batch on the device for the
figures, then moved to the host), and, for the PNGs, matplotlib's contour
data (about `PLOT_BYTES_PER_POINT` per grid point and panel, measured at G = 256
and 768). Work tiles are bounded by the execution policy and not counted, except
a CPU's own (tile elements x workers). ``--animate`` adds its frames' grids (on
the device and the host) and the RGBA images Pillow keeps, in the same total.
The estimate is rough on purpose: a run is refused only when it cannot fit,
with the option that is furthest over and the largest value of it that fits
(options the user set come first); a run that fits only without its animation
is told how to thin the frames.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ..data import snapshot_iterations
from ..defaults import ANIMATION_DPI, ENSEMBLE_PANELS, PANEL_INCHES
from ..engine.backend import Backend
from ..engine.policy import free_device_memory, policy
from ..environment import host_memory
from ..errors import InvalidInputError
from .model import Config, frame_count

HOST_ITEMSIZE = 8                 # data, parameters and errors are drawn and kept in float64 on the host
DRAW_BYTES_PER_POINT = 96         # make_moons: points, labels, indices, noise and their scaled copies
PARAM_COPIES_HOST = 2             # the drawn normals and the parameters made from them
PARAM_COPIES_DEVICE = 3           # parameters, gradients, updated parameters
ERROR_COPIES_HOST = 3             # the columns, their concatenation, the plot's percentiles
PLOT_BYTES_PER_POINT = 64         # matplotlib contourf + PNG rendering, per grid point and panel
OPTIONS = ("ensemble", "hidden", "samples", "grid", "iters")
MINIMUM = {"ensemble": 1, "hidden": 1, "samples": 1, "grid": 2, "iters": 0}


def needs(config: Config, backend: Backend, plots: bool) -> tuple[int, int]:
    """(host bytes, device bytes) that a run of `config` holds at its peak (its animation included), roughly."""
    B, H, N, G, iters = config.ensemble, config.hidden, config.samples, config.grid, config.iters
    itemsize = np.dtype(backend.dtype_name).itemsize
    snapshots = len(snapshot_iterations(iters))
    panels = snapshots + (min(ENSEMBLE_PANELS, B) if B > 1 else 0)
    errors = B * (iters + 1)
    host = (DRAW_BYTES_PER_POINT * N + HOST_ITEMSIZE * (PARAM_COPIES_HOST * B * 4 * H + ERROR_COPIES_HOST * errors
                                                        + panels * G * G))
    if plots:
        host += PLOT_BYTES_PER_POINT * (panels * G * G + iters + 1)
    device = itemsize * (PARAM_COPIES_DEVICE * B * 4 * H + 3 * N + 2 * errors + 2 * panels * G * G)
    if backend.kind == "cpu":  # a GPU's tiles are a share of its free memory by design; a CPU's are not
        rules = policy(backend.xp, backend.device, backend.dtype)
        device += itemsize * rules.tile_elements * rules.workers
    frames_host, frames_device = animation_needs(config, itemsize)
    return host + frames_host, device + frames_device


def animation_needs(config: Config, itemsize: int) -> tuple[int, int]:
    """(host bytes, device bytes) of ``--animate``'s frames: their grids, evaluated in one batch on the device
    and moved to the host, and the RGBA images Pillow keeps; (0, 0) without an animation."""
    if config.animate is None:
        return 0, 0
    frames = frame_count(config.iters, config.animate)
    panels = min(ENSEMBLE_PANELS, config.ensemble)
    grids = frames * panels * config.grid**2 * itemsize
    pixels = round(PANEL_INCHES * ANIMATION_DPI) ** 2 * panels
    return grids + frames * pixels * 4, grids


def check(config: Config, backend: Backend, plots: bool) -> None:
    """Refuse a run that cannot fit in memory, before any work.

    Raises
    ------
    InvalidInputError
        Naming the option furthest over budget and the largest value of it that fits.
    """
    on_cpu = backend.kind == "cpu"  # one memory for the host's and the device's share
    gpu = None if on_cpu else free_device_memory(backend.xp, backend.device)  # None: not known (JAX)
    host_free = host_memory()

    def fits(c: Config) -> tuple[bool, str, int, int]:
        host, device = needs(c, backend, plots)
        if on_cpu:
            return host + device <= host_free, "host", host + device, host_free
        if gpu is not None and device > gpu:
            return False, f"{backend.device_name} device", device, gpu
        return host <= host_free, "host", host, host_free

    ok, where, need, have = fits(config)
    if ok:
        return
    if config.animate is not None and fits(dataclasses.replace(config, animate=None))[0]:
        frames = frame_count(config.iters, config.animate)
        animation = sum(animation_needs(config, np.dtype(backend.dtype_name).itemsize))
        raise InvalidInputError(f"--animate needs about {_gib(animation)} for {frames} frames of a "
                                f"{config.grid}x{config.grid} grid: with it this run needs about {_gib(need)} of "
                                f"{where} memory but {_gib(have)} is free; use --animate K with a larger K (a frame "
                                f"every K iterations) or a smaller --grid")
    best = None
    given = [option for option in OPTIONS if getattr(config, option) != getattr(Config, option)]
    for option in given + [option for option in OPTIONS if option not in given]:
        if best is not None and option not in given and best[0] in given:
            break  # an option the user chose is named before one left at its default
        value = getattr(config, option)
        largest = _largest(lambda v: fits(dataclasses.replace(config, **{option: v}))[0],
                           MINIMUM[option], value)
        if largest is not None and (best is None or value / max(largest, 1) > best[1] / max(best[2], 1)):
            best = (option, value, largest)
    if best is None:
        raise InvalidInputError(f"this run needs about {_gib(need)} of {where} memory but {_gib(have)} is free: "
                                f"free memory, or use smaller --samples, --hidden, --ensemble, --grid or --iters")
    option, value, largest = best
    raise InvalidInputError(f"--{option} {value} is too large: this run needs about {_gib(need)} of {where} "
                            f"memory but {_gib(have)} is free; use --{option} {largest} or less")


def _largest(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest v in [low, high) with fits(v), for fits monotone (True then False); None if none."""
    if not fits(low):
        return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"
