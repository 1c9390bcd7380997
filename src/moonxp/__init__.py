"""moonxp: a two-moons ReLU network with hand-written backprop, written once for every Array API backend."""

__version__ = "0.1.0"

from .api import backprop, descent, forward, loss
from .backend import Backend, resolve, synchronize, to_host
from .data import make_ensemble, make_problem, signed_labels, snapshot_iterations
from .errors import (BackendError, DeviceMemoryError, DivergedError, InvalidInputError, InvalidTypeError,
                     MoonxpError, OutputError)
from .grid import evaluate_grid
from .kernels import Params
from .training import evaluate, train

__all__ = ["Backend", "BackendError", "DeviceMemoryError", "DivergedError", "InvalidInputError", "InvalidTypeError",
           "MoonxpError", "OutputError", "Params", "backprop", "descent", "evaluate", "evaluate_grid",
           "forward", "loss", "make_ensemble", "make_problem", "resolve", "signed_labels",
           "snapshot_iterations", "synchronize", "to_host", "train"]
