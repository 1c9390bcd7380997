"""moonxp: a two-moons ReLU network with hand-written backprop, written once for every Array API backend."""

__version__ = "0.1.0"

from .api import backprop, descent, forward, loss
from .arrays import synchronize, to_host
from .data import make_ensemble, make_problem, signed_labels, snapshot_iterations
from .engine.backend import Backend, resolve
from .engine.grid import evaluate_grid
from .engine.sweep import sweep
from .engine.training import evaluate, train
from .errors import (BackendError, DeviceMemoryError, DivergedError, InvalidInputError, InvalidTypeError,
                     MoonxpError, OutputError)
from .kernels import Params
from .saved import load_metadata, load_params, save_params

__all__ = ["Backend", "BackendError", "DeviceMemoryError", "DivergedError", "InvalidInputError", "InvalidTypeError",
           "MoonxpError", "OutputError", "Params", "backprop", "descent", "evaluate", "evaluate_grid",
           "forward", "load_metadata", "load_params", "loss", "make_ensemble", "make_problem", "resolve",
           "save_params", "signed_labels", "snapshot_iterations", "sweep", "synchronize", "to_host", "train"]
