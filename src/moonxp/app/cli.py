"""Command line: ``python -m moonxp [train|sweep|bench|info] ...``; `main` returns the exit code.

Exit codes: 0 done, 2 bad input or an unusable backend/device/output (one line,
no traceback), 3 training diverged, 128 + the signal when interrupted (130 Ctrl-C,
143 SIGTERM, 129 SIGHUP), 141 when the reader of stdout closed it (see `process`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence, TextIO

from .. import __version__
from ..defaults import DTYPES, GRID, HIDDEN, ITERS, LR, MAX_SEED, NOISE, SAMPLES, SEED, SWEEP_BLOCK
from ..errors import BackendError, CompileWarning, DivergedError, InvalidInputError, MoonxpError, OutputError, \
    first_line
from ..outputs import output_directory, writable
from . import process
from .model import MAX_PLOT_GRID, TABLE_FORMATS, BenchConfig, Config, SweepConfig, name, number, seeds, values

PROGRESS_DELAY_S = 1.0  # runs shorter than this never show a progress bar

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED = 0, 2, 3
COMMANDS = ("train", "sweep", "bench", "info")
SCHEDULER_HELP = ("run on a Dask cluster: local[:N] (N worker processes on 127.0.0.1, started and stopped here), "
                  "tcp://HOST:PORT or tls://HOST:PORT (an existing scheduler); default: in this process")


class _Parser(argparse.ArgumentParser):
    """argparse that reports an error in one line (no usage block)."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", type=name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--backend", type=name, default=None,
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
    train.add_argument("--dtype", default=DTYPES[0], choices=DTYPES)
    train.add_argument("--hidden", type=number(int), default=HIDDEN, help=f"hidden units H (default {HIDDEN})")
    train.add_argument("--lr", type=number(float), default=LR, help=f"learning rate (default {LR:g})")
    train.add_argument("--iters", type=number(int), default=ITERS, help=f"gradient steps (default {ITERS})")
    train.add_argument("--samples", type=number(int), default=SAMPLES, help=f"moons N (default {SAMPLES})")
    train.add_argument("--noise", type=number(float), default=NOISE, help=f"moons noise (default {NOISE:g})")
    train.add_argument("--seed", type=number(int), default=SEED, help=f"seed, 0 to {MAX_SEED} (default {SEED})")
    train.add_argument("--ensemble", type=number(int), default=1, metavar="B",
                       help="train B networks from seeds seed..seed+B-1 at once (default 1)")
    train.add_argument("--grid", type=number(int), default=GRID,
                       help=f"grid points per side for the boundary plots, 2 to {MAX_PLOT_GRID} (default {GRID})")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="compile the training steps and the grid (jax.jit / torch.compile) from the same "
                            "source; default: where it pays (always for JAX; torch and CuPy on CUDA for large "
                            "work, see docs/gpu.md); NumPy has no compiler")
    train.add_argument("--scheduler", metavar="ADDRESS", help=SCHEDULER_HELP + "; the points train "
                       "data-parallel in shards, one per worker")
    train.add_argument("--out", type=name, default="moonxp-out", help="output directory (default moonxp-out)")
    train.add_argument("--no-plot", action="store_true", help="write metrics.json only, no PNGs")
    train.add_argument("--json", action="store_true", help="print the metrics as JSON instead of text")
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    train.add_argument("--animate", nargs="?", const=0, type=number(int), default=None, metavar="K",
                       help="also write boundaries.gif: the boundary every K iterations (default or 0: every one, "
                            "at most 200 frames); an ensemble shows its first 4 networks")
    train.add_argument("--save", type=name, metavar="FILE", help="save the trained params to FILE (.npz, moonxp.load_params)")

    bench = commands.add_parser("bench", help="time the workloads against this machine's limits")
    _device_options(bench)
    bench.add_argument("--quick", action="store_true", help="the headline sizes (small and large per workload): a few minutes on 2 cores")
    bench.add_argument("--json", type=name, metavar="FILE", help="also write the results as JSON to FILE "
                       "(rewritten after every case: a run cut short keeps what it measured)")
    bench.add_argument("--table", type=name, metavar="FILE", help="also write the text table to FILE "
                       "(rewritten after every case)")
    bench.add_argument("--sizes", choices=("smoke", "quick", "full"),
                       help="smoke (each case once, tiny), quick (= --quick) or full (the default)")
    bench.add_argument("--plot", type=name, metavar="FILE.png", help="also draw throughput against size to FILE.png")
    bench.add_argument("--in-process", action="store_true", help="run every backend in this process "
                       "(default: a fresh process per backend)")
    saved = bench.add_subparsers(dest="bench_command", parser_class=_Parser)
    show = saved.add_parser("show", help="print (and --plot) a saved run: moonxp bench show RUN.json")
    show.add_argument("results", nargs=1, metavar="RUN.json")
    compare = saved.add_parser("compare", help="per-case ratios of runs to the first: bench compare A.json B.json")
    compare.add_argument("results", nargs="+", metavar="RUN.json", help="bench --json or pytest --benchmark-json "
                         "files; the first is the baseline")
    for saved_command in (show, compare):
        saved_command.add_argument("--plot", type=name, metavar="FILE.png", help="also draw it to FILE.png")

    bench.add_argument("--scheduler", metavar="ADDRESS", help="not supported: bench times this machine; run "
                       "`moonxp bench` on each worker machine instead")

    sweep = commands.add_parser("sweep", help="train every configuration of lists of settings over a range of "
                                "seeds: a results table and figures")
    real, integer = number(float), number(int)
    sweep.add_argument("--lr", type=values(real), default=(LR,), help="learning rates, e.g. 0.01,0.1,1")
    sweep.add_argument("--hidden", type=values(integer), default=(HIDDEN,), help="hidden units, e.g. 10,50")
    sweep.add_argument("--samples", type=values(integer), default=(SAMPLES,), help="moons N values")
    sweep.add_argument("--noise", type=values(real), default=(NOISE,), help="noise values")
    sweep.add_argument("--iters", type=values(integer), default=(ITERS,), help="iteration counts")
    sweep.add_argument("--dtype", type=values(str), default=(DTYPES[0],), help="float64 and/or float32")
    sweep.add_argument("--seeds", type=seeds, default=range(0, 10), help="seed range START:STOP (default 0:10)")
    sweep.add_argument("--block", type=integer, default=SWEEP_BLOCK,
                       help=f"networks per task (default {SWEEP_BLOCK})")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help=SCHEDULER_HELP)
    sweep.add_argument("--out", type=name, default="moonxp-sweep", help="output directory (default moonxp-sweep)")
    sweep.add_argument("--format", choices=TABLE_FORMATS, default=TABLE_FORMATS[0],
                       help="the results table: results.csv (default) or results.parquet (needs pyarrow)")
    sweep.add_argument("--no-plot", action="store_true", help="write the table and sweep.json only")
    sweep.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _device_options(sweep)

    commands.add_parser("info", help="versions, backends and devices found here")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None, *,
         started: float | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); return the exit code.

    `started`: the `time.perf_counter()` the command's wall time counts from (default: now).
    """
    started = time.perf_counter() if started is None else started
    stdout = process.GuardedStdout(sys.stdout if stdout is None else stdout)  # a closed or full stdout: one line
    stderr = stderr or sys.stderr
    try:
        with warnings.catch_warnings():
            shown = warnings.showwarning
            warnings.showwarning = lambda message, category, *where: (  # moonxp's warnings: one line each
                stderr.write(f"moonxp: warning: {message}\n") if issubclass(category, CompileWarning)
                else shown(message, category, *where))
            return _main(argv, stdout, stderr, started)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP, or stdout closed by its reader
        stderr.write(process.message(exc))
        return process.exit_code(exc)
    except MoonxpError as exc:  # stdout unwritable while printing --help
        stderr.write(f"moonxp: error: {exc}\n")
        return EXIT_USAGE


def _main(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO, started: float) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"))):
        argv.insert(0, "train")
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):  # argparse prints to sys.*
            parser = build_parser()
            args = parser.parse_args(argv)
            lists = [name for name, value in vars(args).items() if isinstance(value, list) and name != "results"]
            if lists:  # argparse turns '--lr=--' into [] without calling `type` (CPython 3.11)
                parser.error(f"argument --{lists[0].replace('_', '-')}: expected one argument")
    except SystemExit as exit:  # --help, --version, or a usage error already printed
        return int(exit.code or 0)
    try:
        if args.command == "info":
            from . import info
            stdout.write(info.text())
            return EXIT_OK
        from ..engine.policy import keep_freed_memory, use_jax_x64
        keep_freed_memory()  # malloc tuned for this process (docs/design.md); a library user opts in
        if "float64" in ([args.dtype] if args.command == "train" else args.dtype if args.command == "sweep" else []):
            use_jax_x64()  # float64 on JAX (or CuPy compiled through JAX) computes in float64
        if args.command == "sweep":
            from . import sweep
            return sweep.main(_sweep_config(args), stdout, functools.partial(_progress_bar, stderr, args.quiet),
                              started)
        if args.command == "bench":
            if args.scheduler is not None:
                raise BackendError("bench does not run on a cluster: it times this machine's own devices; "
                                   "run `moonxp bench` on each worker machine instead")
            from ..benchmark import runner
            return runner.main(_bench_config(args), stdout, stderr)
        return _train(args, stdout, stderr, started)
    except MoonxpError as exc:
        stderr.write(f"moonxp: error: {exc}\n")
        return EXIT_USAGE
    except Exception as exc:
        from ..arrays import is_out_of_memory
        # device first: CuPy's OutOfMemoryError is a MemoryError too
        if is_out_of_memory(exc):  # e.g. a compiled program (jax.jit) ran out of device memory
            stderr.write(f"moonxp: error: out of device memory ({first_line(exc)}): free device memory, "
                         f"use --dtype float32, or a smaller problem\n")
            return EXIT_USAGE
        if not isinstance(exc, MemoryError):
            raise
        fix = {"bench": "use --quick", "sweep": "use a smaller --block or --samples"}.get(
            args.command, "use a smaller --samples, --hidden, --ensemble or --grid")
        stderr.write(f"moonxp: error: out of host memory: {fix}\n")
        return EXIT_USAGE


def _sweep_config(args: argparse.Namespace) -> SweepConfig:
    return SweepConfig(lr=args.lr, hidden=args.hidden, samples=args.samples, noise=args.noise, iters=args.iters,
                       dtype=args.dtype, seeds=args.seeds, block=args.block, device=args.device,
                       backend=args.backend, scheduler=args.scheduler, out=args.out, format=args.format,
                       plots=not args.no_plot, quiet=args.quiet)


def _bench_config(args: argparse.Namespace) -> BenchConfig:
    command = getattr(args, "bench_command", None) or "run"
    if command != "run":
        return BenchConfig(command=command, plot=args.plot, results=tuple(args.results))
    return BenchConfig(device=args.device, backend=args.backend, sizes=args.sizes or ("quick" if args.quick else "full"),
                       json=args.json, table=args.table, plot=args.plot, in_process=args.in_process)


def _progress_bar(stderr: TextIO, quiet: bool, total: int, unit: str) -> Any:
    """A progress bar on stderr, only where it is a terminal (disable=None) and the work is long (delay)."""
    from tqdm import tqdm  # a terminal's bar (tqdm.auto would load asyncio for nothing here)
    return tqdm(total=total, file=stderr, disable=True if quiet else None, delay=PROGRESS_DELAY_S, unit=unit,
                leave=False, dynamic_ncols=True)


def _train(args: argparse.Namespace, stdout: TextIO, stderr: TextIO, started: float) -> int:
    from ..engine.cluster import check_scheduler, connect, describe
    from ..saved import save_params
    from . import job, report

    config = Config(hidden=args.hidden, lr=args.lr, iters=args.iters, samples=args.samples, noise=args.noise,
                    seed=args.seed, ensemble=args.ensemble, grid=args.grid, device=args.device,
                    backend=args.backend, dtype=args.dtype, compile=args.compile, animate=args.animate)
    run = job.start(config, plots=not args.no_plot)  # bad input, sizes, backend or device fail here, before --out
    check_scheduler(args.scheduler)
    if args.scheduler is not None:
        if args.compile:
            raise InvalidInputError("--compile does not apply with --scheduler: the shards train eager on the "
                                    "workers; leave --compile out")
        run.execution = "eager, data-parallel on the cluster's workers"
    if args.save and report.owns(Path(args.out), args.save):
        raise OutputError(f"--save {args.save!r} is a file the report writes in --out {args.out!r}; "
                          f"save the params under another name (e.g. params.npz)")
    directory = output_directory(args.out)
    if args.save:
        writable(args.save, "--save")
    bar = _progress_bar(stderr, args.quiet, config.iters, "it")

    def say(line: str) -> None:
        if not (args.json or args.quiet):
            with bar.external_write_mode(file=stdout):  # the bar shares the terminal: lift it while printing
                stdout.write(line + "\n")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    def abandon(status: str, message: str | None, errors: TextIO | None) -> None:
        """Mark this run's metrics.json with `status`, best effort: the error that stopped the run is the news."""
        try:
            report.abandon(run, directory, status, message)
        except MoonxpError as exc:
            if errors is not None:
                errors.write(f"moonxp: error: {exc}\n")
    diverged = None
    try:  # from here on, whatever stops the run leaves metrics.json of this run saying why
        say(report.header(run))
        try:
            with connect(args.scheduler, quiet=True) as client:
                trainer = None
                if client is not None:
                    from ..engine.cluster import prepare
                    from ..engine.sharded import trainer as data_parallel
                    say(describe(client))
                    found = prepare(client, run.backend.name, say)  # a worker there, running this moonxp
                    run.cluster = {"scheduler": found["scheduler"], "workers": found["workers"]}
                    trainer = data_parallel(client, sum(client.nthreads().values()),
                                            (config.device, config.backend, config.dtype))
                job.execute(run, lambda snapshot: say(report.snapshot_line(snapshot)), progress, trainer)
        except DivergedError as exc:
            diverged = exc
        finally:
            bar.close()
        metrics = report.metrics(run, "diverged", str(diverged)) if diverged else report.metrics(run)
        saved = []
        if args.save and not diverged:  # before the report: a failure here leaves no figures of an "ok" run
            save_params(args.save, run.params, metadata={"moonxp": __version__, "config": config.as_dict()})
            saved.append(Path(args.save))
        written = report.write(run, directory, not args.no_plot and not diverged, metrics) + saved
    except KeyboardInterrupt:
        abandon("interrupted", None, stderr)
        raise
    except Exception as exc:
        if diverged is not None and isinstance(exc, MoonxpError):  # its metrics could not be written
            stderr.write(f"moonxp: {diverged}\nmoonxp: error: {exc}\n")
            return EXIT_DIVERGED
        abandon("diverged" if diverged else "failed", str(diverged or exc) or repr(exc), None)
        raise
    if diverged:
        stderr.write(f"moonxp: {diverged}\n")
        return EXIT_DIVERGED
    if args.json and not args.quiet:
        stdout.write(json.dumps(metrics, indent=2) + "\n")
    say(report.summary(run, written, time.perf_counter() - started))
    return EXIT_OK
