"""The homework's facts, spelled once: every default of the library, the CLI and the benchmark comes from here."""

from __future__ import annotations

HIDDEN = 50             # hidden units H
LR = 0.1                # learning rate eta
ITERS = 128             # gradient-descent steps
SAMPLES = 100           # make_moons points N
NOISE = 0.0             # make_moons noise
SEED = 0                # NumPy legacy seed of the homework
GRID = 100              # grid points per side of the boundary plots
GRID_LO, GRID_HI = -4.0, 4.0  # grid bounds on both axes
DTYPES = ("float64", "float32")  # floating dtypes moonxp computes in; the first is the default
MAX_SEED = 2**32 - 1    # NumPy's legacy generator takes seeds below 2**32
SWEEP_BLOCK = 250       # networks per sweep task: amortizes a task (~2 ms), small enough to spread over workers
CHECK_EVERY = 16        # training steps between divergence read-backs
ENSEMBLE_PANELS = 4     # networks of an ensemble whose boundaries the figures and the animation show
PANEL_INCHES = 3.0      # side of one boundary panel in the figures and the animation
ANIMATION_DPI = 80      # --animate: 3-inch panels of 240 pixels
