"""The process around the command line: signals, a closed standard output, the exit status.

SIGINT, SIGTERM and SIGHUP all raise `Interrupted` (a KeyboardInterrupt) in the
main thread, so every one of them takes the path of Ctrl-C: the run's
metrics.json is marked "interrupted", no temporary file is left, and the exit
status is 128 + the signal's number (130, 143, 129). Only the first signal
interrupts: later ones are ignored while that interruption is written out, and
any signal is ignored once the exit status is decided. A
standard output closed by its reader (``| head``) stops the run the same way,
quietly, with 141 (128 + SIGPIPE), the status a shell reports for a writer
killed by SIGPIPE.

This module imports only the standard library: the entry point
(``moonxp/__main__.py``) installs the handlers before the command line's heavy
imports (NumPy), so a Ctrl-C during start-up is an interruption like any other.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TextIO

from ..errors import OutputError

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
SIGPIPE_EXIT = 128 + getattr(signal, "SIGPIPE", 13)


class Interrupted(KeyboardInterrupt):
    """The run was stopped from outside: by signal `signum`, or (`signum` None) by its reader closing stdout."""

    def __init__(self, signum: int | None):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return SIGPIPE_EXIT if self.signum is None else 128 + self.signum

    @property
    def line(self) -> str:
        """What stderr says: nothing for a closed pipe, else "moonxp: interrupted" (and the signal if not SIGINT)."""
        if self.signum is None:
            return ""
        name = signal.Signals(self.signum).name
        return "moonxp: interrupted\n" if name == "SIGINT" else f"moonxp: interrupted ({name})\n"


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The exit status for an interruption: a plain KeyboardInterrupt is Ctrl-C (130)."""
    return interrupt.exit_code if isinstance(interrupt, Interrupted) else 128 + signal.SIGINT


def message(interrupt: KeyboardInterrupt) -> str:
    """The stderr line for an interruption."""
    return interrupt.line if isinstance(interrupt, Interrupted) else "moonxp: interrupted\n"


_received: list[int] = []


def _interrupt(signum: int, frame) -> None:
    if _received:  # already stopping: let the first interruption finish writing its outputs
        return
    _received.append(signum)
    raise Interrupted(signum)


def install() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise `Interrupted` (main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, _interrupt)


class GuardedStdout:
    """A text stream that turns a reader closing the pipe into `Interrupted(None)` and any other
    failure to write (``> /dev/full``, ``>&-``) into `OutputError`; each line is flushed at once."""

    def __init__(self, stream: TextIO | None):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            if self.stream is None:  # Python sets sys.stdout to None when fd 1 is closed
                raise OSError(9, "Bad file descriptor")
            count = self.stream.write(text)
            self.stream.flush()
            return count
        except BrokenPipeError:
            raise Interrupted(None) from None
        except (OSError, ValueError) as exc:  # ValueError: a closed file object
            reason = getattr(exc, "strerror", None) or str(exc)
            raise OutputError(f"cannot write to standard output: {reason}; redirect it to a file or use "
                              f"--quiet") from None

    def flush(self) -> None:
        pass  # every write is flushed


def settle() -> None:
    """The outcome is decided: later signals change nothing, not even while Python shuts down (it would
    restore their default action, killing the process, before it exits)."""
    _received.append(0)  # `_interrupt` now returns without raising
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so flushing stdout at exit does not report the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass
