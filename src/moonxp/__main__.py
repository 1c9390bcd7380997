"""The process entry point: ``python -m moonxp`` and the ``moonxp`` console script (`main_exit`).

Nothing imports this module. It installs the signal handlers (`app.process`,
standard library only) before it imports the command line (`app.cli`), so a
Ctrl-C during start-up is an interruption like any other.
"""

from __future__ import annotations

import sys
import time

STARTED = time.perf_counter()  # the command's wall time counts from here: before moonxp's own imports

from .app import process  # noqa: E402  (after the clock starts)


def main_exit() -> None:
    """Install the signal handlers, import and run the command line, exit with its status.

    Once the outcome is known, signals are ignored: one that arrives while the interpreter
    shuts down would otherwise kill it (Python restores the default action then) and
    replace the run's exit status.
    """
    process.install()
    code = None
    try:
        from .app.cli import main
        code = main(started=STARTED)
    except KeyboardInterrupt as exc:
        if code is None:  # during the imports: nothing was started, nothing to write
            sys.stderr.write(process.message(exc))
            code = process.exit_code(exc)
    try:
        process.settle()
    except KeyboardInterrupt:  # a signal just before `settle` took effect: the run has ended all the same
        pass
    if code == process.SIGPIPE_EXIT:
        process.silence_stdout()
    sys.exit(code)


if __name__ == "__main__":
    main_exit()
