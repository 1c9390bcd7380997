"""Exceptions for problems a user can fix; the CLI turns each into one line and exit 2 (diverged: 3).

They subclass the built-in a library user would catch (ValueError, TypeError,
RuntimeError, OSError) and `MoonxpError`, which the CLI catches.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" if it has none): what a one-line report quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    return f"{type(exc).__name__}: {first_line(exc)}"


def install_hint(extra: str) -> str:
    """How to install one of moonxp's extras (pyproject.toml), from the moonxp checkout."""
    return f'pip install -e ".[{extra}]" in the moonxp checkout'


class MoonxpError(Exception):
    """Base of every error whose message names the problem and the fix."""


class InvalidInputError(MoonxpError, ValueError):
    """A value, shape or argument is out of range."""


class InvalidTypeError(MoonxpError, TypeError):
    """A dtype, an array type, or a mix of namespaces or devices is unsupported."""


class BackendError(MoonxpError, RuntimeError):
    """A backend or device was asked for that is unknown or unusable here."""


class DeviceMemoryError(MoonxpError, MemoryError):
    """The device ran out of memory even for the smallest useful tiles."""


class OutputError(MoonxpError, OSError):
    """An output file cannot be written; nothing half-written is left."""


class CompileError(MoonxpError, RuntimeError):
    """Compiling was asked for (compile=True, --compile) and the compiler (named `compiler`) failed: `reason`."""

    def __init__(self, compiler: str, reason: str):
        super().__init__(f"{reason}: without compile=True (--compile), moonxp falls back to eager")
        self.compiler, self.reason = compiler, reason

    def __reduce__(self) -> tuple:  # pickled with its own arguments (a worker process, a Dask task)
        return type(self), (self.compiler, self.reason)


class CompileWarning(UserWarning):
    """The compiler failed where compiling was moonxp's own choice: the work runs eager instead."""


class DivergedError(MoonxpError, FloatingPointError):
    """Training produced a non-finite error or parameter, first seen at `iteration`."""

    def __init__(self, iteration: int, lr: float, networks: str = ""):
        super().__init__(f"training diverged at iteration {iteration}{networks}: the error or the parameters "
                         f"are no longer finite; use a smaller learning rate than {lr:g}")
        self.iteration, self.lr, self.networks = iteration, lr, networks

    def __reduce__(self) -> tuple:  # pickled with its own arguments (a worker process, a Dask task)
        return type(self), (self.iteration, self.lr, self.networks)

    def after(self, done: int) -> DivergedError:
        """The same error for a run resumed after `done` iterations: the iteration counts from its start."""
        return DivergedError(self.iteration + done, self.lr, self.networks)
