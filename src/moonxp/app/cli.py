"""Command line: ``python -m moonxp [train|bench|info] ...``; `main` returns the exit code.

Exit codes: 0 done, 2 bad input or an unusable backend/device/output (one line,
no traceback), 3 training diverged, 128 + the signal when interrupted (130 Ctrl-C,
143 SIGTERM, 129 SIGHUP), 141 when the reader of stdout closed it (see `process`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from typing import Callable, Sequence, TextIO

from .. import __version__
from ..arrays import is_out_of_memory
from ..errors import DivergedError, MoonxpError
from ..outputs import output_directory
from ..validate import MAX_SEED
from . import job, process, report

PROGRESS_DELAY_S = 1.0  # runs shorter than this never show a progress bar

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130
COMMANDS = ("train", "bench", "info")
MAX_PLOT_GRID = 4096  # a bigger grid is for moonxp.evaluate_grid or `moonxp bench`, not a PNG


class _Parser(argparse.ArgumentParser):
    """argparse that reports an error in one line (no usage block)."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: Callable, minimum: float | None = None, positive: bool = False,
            maximum: float | None = None) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be <= {maximum}")
        return value
    return parse


def _name(text: str) -> str:
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError(f"{text!r} is not a name")
    return text


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--backend", type=_name, default=None,
                        help="numpy, cupy, torch, jax or array-api-strict (default: numpy on cpu, cupy on cuda)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moonxp", description="Train the two-moons ReLU network with hand-written backprop "
                     "on any Array API backend, and benchmark hardware with it.",
                     epilog="train is the default command: `python -m moonxp --lr 0.05` is `python -m moonxp "
                     "train --lr 0.05`. Its options: python -m moonxp train --help")
    parser.add_argument("--version", action="version", version=f"moonxp {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    train = commands.add_parser("train", help="train and plot (the default command)")
    _device_options(train)
    train.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    train.add_argument("--hidden", type=_number(int, 1), default=50, help="hidden units H (default 50)")
    train.add_argument("--lr", type=_number(float, positive=True), default=0.1, help="learning rate (default 0.1)")
    train.add_argument("--iters", type=_number(int, 0), default=128, help="gradient steps (default 128)")
    train.add_argument("--samples", type=_number(int, 1), default=100, help="moons N (default 100)")
    train.add_argument("--noise", type=_number(float, 0), default=0.0, help="moons noise (default 0)")
    train.add_argument("--seed", type=_number(int, 0, maximum=MAX_SEED), default=0, help="seed (default 0)")
    train.add_argument("--ensemble", type=_number(int, 1, maximum=MAX_SEED + 1), default=1, metavar="B",
                       help="train B networks from seeds seed..seed+B-1 at once (default 1)")
    train.add_argument("--grid", type=_number(int, 2, maximum=MAX_PLOT_GRID), default=100,
                       help="grid points per side for the boundary plots (default 100)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the training steps and the grid (jax.jit / torch.compile) from the same "
                            "source; default: on for JAX, off for torch; NumPy and CuPy have no compiler")
    train.add_argument("--out", type=_name, default="moonxp-out", help="output directory (default moonxp-out)")
    train.add_argument("--no-plot", action="store_true", help="write metrics.json only, no PNGs")
    train.add_argument("--json", action="store_true", help="print the metrics as JSON instead of text")
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")

    bench = commands.add_parser("bench", help="time the workloads against this machine's limits")
    _device_options(bench)
    bench.add_argument("--quick", action="store_true", help="one size per workload: about a minute on 2 cores")
    bench.add_argument("--json", type=_name, metavar="FILE", help="also write the results as JSON to FILE")

    commands.add_parser("info", help="versions, backends and devices found here")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); return the exit code."""
    stdout = process.GuardedStdout(sys.stdout if stdout is None else stdout)  # a closed or full stdout: one line
    stderr = stderr or sys.stderr
    try:
        return _main(argv, stdout, stderr)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP, or stdout closed by its reader
        stderr.write(process.message(exc))
        return process.exit_code(exc)
    except MoonxpError as exc:  # stdout unwritable while printing --help
        stderr.write(f"moonxp: error: {exc}\n")
        return EXIT_USAGE


def _main(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"))):
        argv.insert(0, "train")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):  # argparse prints to sys.*
            parser = build_parser()
            args = parser.parse_args(argv)
            lists = [name for name, value in vars(args).items() if isinstance(value, list)]
            if lists:  # argparse turns '--lr=--' into [] without calling `type` (CPython 3.11)
                parser.error(f"argument --{lists[0].replace('_', '-')}: expected one argument")
    except SystemExit as exit:  # --help, --version, or a usage error already printed
        return int(exit.code or 0)
    try:
        if args.command == "info":
            from . import info
            stdout.write(info.text())
            return EXIT_OK
        if args.command == "bench":
            from ..benchmark import runner
            return runner.main(args, stdout, stderr)
        return _train(args, stdout, stderr)
    except MoonxpError as exc:
        stderr.write(f"moonxp: error: {exc}\n")
        return EXIT_USAGE
    except MemoryError:
        fix = "use --quick" if args.command == "bench" else "use a smaller --samples, --hidden, --ensemble or --grid"
        stderr.write(f"moonxp: error: out of host memory: {fix}\n")
        return EXIT_USAGE
    except Exception as exc:
        if not is_out_of_memory(exc):  # a compiled program (jax.jit) ran out of device memory
            raise
        stderr.write(f"moonxp: error: out of device memory ({str(exc).splitlines()[0]}): free device memory, "
                     f"use --dtype float32, or a smaller problem\n")
        return EXIT_USAGE


def _train(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    config = job.Config(hidden=args.hidden, lr=args.lr, iters=args.iters, samples=args.samples,
                        noise=args.noise, seed=args.seed, ensemble=args.ensemble, grid=args.grid,
                        device=args.device, backend=args.backend, dtype=args.dtype, compile=args.compile)
    run = job.start(config, plots=not args.no_plot)  # bad input, sizes, backend or device fail here, before --out
    directory = output_directory(args.out)
    from tqdm.auto import tqdm  # a bar only where stderr is a terminal (disable=None) and a run is long (delay)
    bar = tqdm(total=config.iters, file=stderr, disable=True if args.quiet else None, delay=PROGRESS_DELAY_S,
               unit="it", leave=False, dynamic_ncols=True)

    def say(line: str) -> None:
        if not (args.json or args.quiet):
            with bar.external_write_mode(file=stdout):  # the bar shares the terminal: lift it while printing
                stdout.write(line + "\n")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)
    diverged = None
    try:  # from here on, whatever stops the run leaves metrics.json of this run saying why
        say(report.header(run))
        try:
            job.execute(run, lambda snapshot: say(report.snapshot_line(snapshot)), progress)
        except DivergedError as exc:
            diverged = exc
        finally:
            bar.close()
        metrics = report.metrics(run, "diverged", str(diverged)) if diverged else report.metrics(run)
        written = report.write(run, directory, not args.no_plot and not diverged, metrics)
    except KeyboardInterrupt:
        _abandon(run, directory, "interrupted", None, stderr)
        raise
    except Exception as exc:
        if diverged is not None and isinstance(exc, MoonxpError):  # its metrics could not be written
            stderr.write(f"moonxp: {diverged}\nmoonxp: error: {exc}\n")
            return EXIT_DIVERGED
        _abandon(run, directory, "diverged" if diverged else "failed", str(diverged or exc) or repr(exc), None)
        raise
    if diverged:
        stderr.write(f"moonxp: {diverged}\n")
        return EXIT_DIVERGED
    if args.json and not args.quiet:
        stdout.write(json.dumps(metrics, indent=2) + "\n")
    say(report.summary(run, written))
    return EXIT_OK


def _abandon(run: job.Run, directory, status: str, message: str | None, stderr: TextIO | None) -> None:
    """Mark this run's metrics.json with `status`, best effort: the error that stopped the run is the news."""
    try:
        report.abandon(run, directory, status, message)
    except MoonxpError as exc:
        if stderr is not None:
            stderr.write(f"moonxp: error: {exc}\n")


def main_exit() -> None:
    """Console-script entry point (see `process.main_exit`, which installs the signal handlers first)."""
    process.main_exit()
