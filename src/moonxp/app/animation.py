"""``--animate``: draws the decision boundary over training as ``boundaries.gif``.

Frames are the states at `model.frame_iterations` (before updates 0, k, 2k, ...
and after the last one). Their parameters, kept on the device during training,
are stacked (F, P, 2, H) and evaluated as ONE batched grid; an ensemble shows
its first `defaults.ENSEMBLE_PANELS` networks side by side. The GIF is written
by Pillow through matplotlib, atomically. The memory the frames need is part
of the run's estimate (`budget`), checked before any training.
"""

from __future__ import annotations

from pathlib import Path

from ..arrays import namespace_of
from ..defaults import ANIMATION_DPI, GRID_HI, GRID_LO
from ..kernels import Params
from ..outputs import write_animation
from .model import Run

FPS = 12


def write(path: Path, run: Run) -> None:
    """Draw `run.frames` into the GIF `path`: one batched grid over all frames, then one frame at a time."""
    from .. import plot  # matplotlib: only when a GIF is drawn

    config, first = run.config, run.frames[0][1]
    xp = namespace_of(*first)
    stacked = Params(*(xp.stack([p[k] for _, p in run.frames], axis=0) for k in range(3)))  # (F, [P,] 2, H)
    axis, images = plot.grids(stacked, config.grid, GRID_LO, GRID_HI, compile=config.compile)
    images = images.reshape(len(run.frames), -1, config.grid, config.grid)  # (F, P, G, G)
    panels = images.shape[1]
    figure = plot.panel_figure(1, panels)
    axes = [figure.add_subplot(1, panels, k + 1) for k in range(panels)]

    def draw(frame: int) -> None:
        iteration = run.frames[frame][0]
        for k, ax in enumerate(axes):
            ax.clear()
            title = "It: %d, Error: %.3f" % (iteration, run.errors[k, iteration])
            plot.panel(ax, axis, images[frame, k], run.X, run.T, title if panels == 1 else f"net {k}, {title}")
    write_animation(path, figure, draw, len(run.frames), FPS, ANIMATION_DPI)
