"""``--animate``: the decision boundary over training as ``boundaries.gif``.

Frames are the states before updates 0, k, 2k, ... and after the last one
(k = 1 up to `MAX_FRAMES` frames). Their parameters, kept on the device during
training, are stacked (F, P, 2, H) and evaluated as ONE batched grid; an
ensemble shows its first `defaults.ENSEMBLE_PANELS` networks side by side. The GIF is written
by Pillow through matplotlib, atomically. What it needs (the grids on the
device and the host, the RGBA frames Pillow keeps) is estimated before any
training, and a run that would not fit in memory is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..defaults import ENSEMBLE_PANELS, GRID_HI, GRID_LO
from ..errors import InvalidInputError
from ..outputs import write_animation

if TYPE_CHECKING:
    from ..engine.backend import Backend
    from .job import Config, Run

MAX_FRAMES = 200        # frames of an automatic animation: a long run shows every k-th iteration
FPS = 12
DPI = 80                # 3-inch panels of 240 pixels
MEMORY_SHARE = 0.5      # of the available host memory an animation may take


def frame_iterations(iters: int, every: int) -> list[int]:
    """Iterations shown: 0, k, 2k, ... and `iters` (the trained state); every = 0 picks k for <= MAX_FRAMES."""
    every = every or max(1, math.ceil(iters / (MAX_FRAMES - 1)))
    return sorted(set(range(0, iters + 1, every)) | {iters})


def required_bytes(config: Config, itemsize: int) -> int:
    """Memory an animation of `config` holds at once: grids on the device and the host, and the RGBA frames."""
    from ..plot import PANEL_INCHES
    frames = len(frame_iterations(config.iters, config.animate))
    panels = min(ENSEMBLE_PANELS, config.ensemble)
    pixels = round(PANEL_INCHES * DPI) ** 2 * panels
    return frames * (panels * config.grid**2 * 2 * itemsize + pixels * 4)


def check_memory(config: Config, backend: Backend) -> None:
    """Refuse an animation that would not fit in memory, before any training.

    Raises
    ------
    InvalidInputError
        Naming the need, what is available and the options that shrink it.
    """
    from .budget import host_memory  # budget imports this module

    frames = len(frame_iterations(config.iters, config.animate))
    need, free = required_bytes(config, np.dtype(backend.dtype_name).itemsize), host_memory()
    if free is not None and need > MEMORY_SHARE * free:
        raise InvalidInputError(f"--animate needs about {need / 2**30:.1f} GiB for {frames} frames of a "
                                f"{config.grid}x{config.grid} grid, but {free / 2**30:.1f} GiB is available: "
                                f"use --animate K with a larger K (a frame every K iterations) or a smaller --grid")


def write(path: Path, run: Run) -> None:
    """Draw `run.frames` into the GIF `path`: one batched grid over all frames, then one frame at a time."""
    from .. import plot
    from ..arrays import namespace_of
    from ..kernels import Params

    config, first = run.config, run.frames[0][1]
    xp = namespace_of(*first)
    stacked = Params(*(xp.stack([p[k] for _, p in run.frames], axis=0) for k in range(3)))  # (F, [P,] 2, H)
    axis, images = plot.grids(stacked, config.grid, GRID_LO, GRID_HI, compile=config.compile)
    images = images.reshape(len(run.frames), -1, config.grid, config.grid)  # (F, P, G, G)
    panels = images.shape[1]
    figure = plot.MoonxpFigure(figsize=(plot.PANEL_INCHES * panels, plot.PANEL_INCHES), layout="constrained")
    axes = [figure.add_subplot(1, panels, k + 1) for k in range(panels)]

    def draw(frame: int) -> None:
        iteration = run.frames[frame][0]
        for k, ax in enumerate(axes):
            ax.clear()
            title = "It: %d, Error: %.3f" % (iteration, run.errors[k, iteration])
            plot.panel(ax, axis, images[frame, k], run.X, run.T, title if panels == 1 else f"net {k}, {title}")
    write_animation(path, figure, draw, len(run.frames), FPS, DPI)
