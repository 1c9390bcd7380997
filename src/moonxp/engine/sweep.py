"""Hyperparameter sweeps: every configuration of a Cartesian product, trained over a range of seeds.

A configuration's seeds train as batches of networks (leading batch axis), one
task per block of `defaults.SWEEP_BLOCK` seeds; network k of a batch is exactly the single
run of its seed (`make_problem(seed)`'s data and parameters), since batched
networks never mix. A batch in which some network diverges is split in halves
and each half trained again from the start, down to single networks, so every
network that does not diverge keeps its exact result and one that does is
marked with the iteration where it diverged. Tasks are pure and keyed by
(configuration, seeds): in-process and on any cluster the results are the same
bits.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import validate
from ..arrays import to_host
from ..data import make_problem
from ..defaults import CHECK_EVERY, DTYPES, HIDDEN, ITERS, LR, NOISE, SAMPLES, SWEEP_BLOCK
from ..environment import host_memory
from ..errors import DivergedError, InvalidInputError
from ..kernels import Params
from .backend import check_dtype
from .cluster import prepare, task_room, worker_memory
from .tasks import map_tasks, task_backend
from .training import evaluate, train

COLUMNS = ("lr", "hidden", "samples", "noise", "iters", "dtype", "seed", "final_error", "accuracy", "diverged",
           "diverged_at")


@dataclass(frozen=True)
class Setting:
    """One configuration of a sweep."""

    lr: float
    hidden: int
    samples: int
    noise: float
    iters: int
    dtype: str


Task = tuple[Setting, int, int]  # (configuration, first seed, stop seed): one batch of networks


ROW_BYTES = 600                 # host bytes per network: its results, the table's columns and their copies
TASK_BYTES = 2048               # host bytes per task: its description, future and result
TASK_BYTES_PER_POINT = 200      # a task's bytes per network and point: the drawn moons, stacked, on the backend
TASK_BYTES_PER_ITERATION = 16   # ... per network and iteration: its errors, on the backend and the host
TASK_BYTES_PER_UNIT = 100       # ... per network and hidden unit: the parameters, gradients and updates
Z_BOUND = 10.0  # a bound on the standard normals drawn (beyond 10 sigma: 1.5e-23 per draw)


def settings(lr: Sequence[float], hidden: Sequence[int], samples: Sequence[int], noise: Sequence[float],
             iters: Sequence[int], dtype: Sequence[str], *, option: str = "") -> list[Setting]:
    """The Cartesian product, lr varying slowest and dtype fastest, each value checked; messages name each
    list `option` + its name (the CLI gives "--")."""
    _check_lists(dict(lr=lr, hidden=hidden, samples=samples, noise=noise, iters=iters, dtype=dtype), option)
    for value in dtype:
        check_dtype(value, f"{option}dtype")
    names = {"n_samples": f"{option}samples", "noise": f"{option}noise", "hidden": f"{option}hidden"}
    for a in lr:
        validate.learning_rate(a, f"{option}lr")
    for n, x, h in itertools.product(samples, noise, hidden):
        validate.problem(0, n, x, h, names=names)
    for i in iters:
        validate.count(f"{option}iters", i, 0)
    for (n, x, h), name in itertools.product(itertools.product(samples, noise, hidden), dtype):
        _check_noise(n, x, h, name, option)
    return [Setting(float(a), *rest) for a, *rest in itertools.product(lr, hidden, samples, noise, iters, dtype)]


def _check_lists(lists: dict[str, Sequence], option: str) -> None:
    for name, values in lists.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
            raise InvalidInputError(f"sweep {option}{name} must be a list of values, not {values!r}")
        if len(values) == 0 or len(set(values)) != len(values):
            raise InvalidInputError(f"sweep {option}{name} must list at least one value, each once, not "
                                    f"{list(values)!r}")


def _check_sizes(lists: dict[str, Sequence], seeds: range, block: int, concurrent: int | None,
                 option: str) -> None:
    """Refuse a sweep whose table and tasks, or whose `concurrent` largest tasks at once (None: they run
    elsewhere), cannot fit in this host's free memory; before any list is expanded."""
    configurations = math.prod(len(values) for values in lists.values())
    networks, tasks = configurations * len(seeds), configurations * -(-len(seeds) // block)
    free = host_memory()
    need = networks * ROW_BYTES + tasks * TASK_BYTES
    if need > free:
        several = [option + name for name, values in lists.items() if len(values) > 1]
        raise InvalidInputError(
            f"this sweep trains {networks} networks ({configurations} configurations x {len(seeds)} seeds) in "
            f"{tasks} tasks: its table and tasks need about {need / 2**30:.1f} GiB of host memory but "
            f"{free / 2**30:.1f} GiB is free; use fewer {option}seeds" +
            (f" or fewer values of {', '.join(several)}" if several else ""))
    if concurrent is None:
        return
    networks, network = largest_task(lists, seeds, block)
    if networks * network * concurrent > free:
        at_once = f", {concurrent} tasks at once," if concurrent > 1 else ""
        raise InvalidInputError(
            f"{_task_size(lists, networks, network, option)} of host memory{at_once} but {free / 2**30:.1f} GiB is "
            f"free; {block_advice(network, [(free, concurrent)], option)}")


def largest_task(lists: dict[str, Sequence], seeds: range, block: int) -> tuple[int, int]:
    """(networks, bytes per network) of a sweep's largest task: `block` networks (at most the seeds) of the
    largest samples, iters and hidden, on the backend and the host."""
    network = (TASK_BYTES_PER_POINT * max(lists["samples"]) + TASK_BYTES_PER_ITERATION * (max(lists["iters"]) + 1)
               + TASK_BYTES_PER_UNIT * max(lists["hidden"]))
    return min(block, len(seeds)), network


def _task_size(lists: dict[str, Sequence], networks: int, network: int, option: str) -> str:
    """ "a task of N networks (--block) with S samples needs about X GiB": the largest task (`largest_task`)."""
    return (f"a task of {networks} networks ({option}block) with {max(lists['samples'])} samples needs about "
            f"{networks * network / 2**30:.2f} GiB")


def block_advice(network: int, rooms: Sequence[tuple[int, int]], option: str) -> str:
    """The option that shrinks a task of networks of `network` bytes until every (bytes free, tasks at once) of
    `rooms` holds its tasks: "use --block K or less", or a smaller network where even one does not fit."""
    largest = min(free // (network * at_once) for free, at_once in rooms)
    return f"use {option}block {largest} or less" if largest >= 1 else (
        f"use a smaller {option}samples, {option}iters or {option}hidden")


@contextlib.contextmanager
def workers_hold(client: Any, lists: dict[str, Sequence], seeds: range, block: int,
                 option: str = "") -> Iterator[None]:
    """While inside, every worker of `client` holds the sweep's largest task (`largest_task`) once per thread
    within its memory limit: the workers there are checked now, before any task, and one that joins later closes
    before it takes a task (`cluster.task_room`). None (in-process): nothing to check.

    Raises
    ------
    InvalidInputError
        Naming the workers whose memory limit is too small, and the `option`block that fits.
    """
    if client is None:
        yield
        return
    prepare(client)
    networks, network = largest_task(lists, seeds, block)
    found = worker_memory(client)
    short = {address: room for address, room in found.items() if room and networks * network * room[1] > room[0]}
    if short:
        named = ", ".join(f"{address} ({threads} threads, {max(free, 0) / 2**30:.2f} GiB free of "
                          f"{limit / 2**30:.2f} GiB)"  # free < 0: the worker is already over its limit
                          for address, (free, threads, limit) in list(short.items())[:4])
        more = f" and {len(short) - 4} more" if len(short) > 4 else ""
        raise InvalidInputError(
            f"{_task_size(lists, networks, network, option)} of memory, as many at once on a worker as it has "
            f"threads, more than {len(short)} worker(s) have free below their Dask memory limit: {named}{more}; "
            f"{block_advice(network, [(free, threads) for free, threads, _ in short.values()], option)}")
    with task_room(client, networks * network, found):
        yield


def _check_noise(samples: int, noise: float, hidden: int, dtype: str, option: str) -> None:
    """Refuse a noise that could put points where a first output overflows `dtype` for some seed.

    With every normal within `Z_BOUND`: |X| <= 5 + 2 noise Z (moons in [-1, 2] x [-0.5, 1], scaled
    X*2-1), |W| <= Z/sqrt(2), |b| <= Z, |v| <= Z/sqrt(H), so |y| <= sqrt(H) Z^2 (sqrt(2) max|X| + 1),
    and the error sums N of them (as `job` checks on the drawn points of one run).
    """
    with np.errstate(over="ignore"):
        reach = np.sqrt(hidden) * Z_BOUND**2 * (np.sqrt(2) * (5 + 2 * np.float64(noise) * Z_BOUND) + 1)
        fits = np.isfinite(reach * samples) and reach * samples < np.finfo(dtype).max
    if not fits:
        raise InvalidInputError(f"{option}noise {noise:g} puts points too far out for {dtype}: with {samples} "
                                f"samples and {hidden} hidden units the networks' outputs could overflow before "
                                f"training; use a smaller {option}noise")


def _train_each(params: Params, X: Any, T: Any, first: int, lr: float, iters: int, check_every: int,
                final: np.ndarray, accuracy: np.ndarray, diverged_at: np.ndarray) -> None:
    """Train the batch; on divergence train its halves again, down to single networks. Fills the outputs.

    `first` is the batch's first index into the outputs.
    """
    try:
        trained, errors = train(params, X, T, lr=lr, iters=iters, check_every=check_every)
    except DivergedError as exc:
        count = params.W.shape[0]
        if count == 1:
            diverged_at[first] = exc.iteration
            return
        half = count // 2
        for part in (slice(0, half), slice(half, count)):
            _train_each(Params(*(p[part, ...] for p in params)), X[part, ...], T[part, ...], first + part.start,
                        lr, iters, check_every, final, accuracy, diverged_at)
        return
    end = first + params.W.shape[0]
    final[first:end] = to_host(errors[..., -1])
    accuracy[first:end] = to_host(evaluate(trained, X, T)[1])


def train_block(task: Task, *, device: str = "cpu", backend: str | None = None,
                check_every: int = CHECK_EVERY) -> dict[str, np.ndarray]:
    """Train seeds start..stop-1 of one setting as one batch: {final_error, accuracy, diverged_at} (B,) each.

    A network that diverged has diverged_at >= 0 and NaN final error and accuracy.
    """
    setting, start, stop = task
    resolved = task_backend((device, backend, setting.dtype))
    problems = [make_problem(seed, setting.samples, setting.noise, setting.hidden) for seed in range(start, stop)]
    X, T = (resolved.asarray(np.stack([p[k] for p in problems])) for k in (0, 1))
    params = Params(*(resolved.asarray(np.stack([p[2][k] for p in problems])) for k in range(3)))
    count = stop - start
    final, accuracy = np.full(count, np.nan), np.full(count, np.nan)
    diverged_at = np.full(count, -1, dtype=np.int64)
    _train_each(params, X, T, 0, setting.lr, setting.iters, check_every, final, accuracy, diverged_at)
    return {"final_error": final, "accuracy": accuracy, "diverged_at": diverged_at}


def sweep(lr: Sequence[float] = (LR,), hidden: Sequence[int] = (HIDDEN,), samples: Sequence[int] = (SAMPLES,),
          noise: Sequence[float] = (NOISE,), iters: Sequence[int] = (ITERS,), dtype: Sequence[str] = (DTYPES[0],),
          seeds: range = range(10), *, device: str = "cpu", backend: str | None = None, client: Any = None,
          block: int = SWEEP_BLOCK, check_every: int = CHECK_EVERY,
          progress: Callable[[int, int], None] | None = None, done: list | None = None) -> dict[str, np.ndarray]:
    """Train every configuration of the product of the lists, once per seed: the results table as columns.

    One row per network, in the order of the configurations (lr slowest) and then of
    the seeds; columns `COLUMNS`. `client`: a `distributed.Client` to run the tasks on
    (None: in-process; the same results). `progress(done, total)` counts tasks. When
    `done` is a list, (task index, task, result) of each finished task is appended to it
    as it comes (partial results of an interrupted sweep: pass them to `table`).

    Raises
    ------
    InvalidInputError
        A list is empty or repeats a value, a value is out of range, or the seeds are not a range.
    """
    todo = plan(lr, hidden, samples, noise, iters, dtype, seeds, device=device, backend=backend, block=block,
                concurrent=1 if client is None else None)
    lists = dict(lr=lr, hidden=hidden, samples=samples, noise=noise, iters=iters, dtype=dtype)
    with workers_hold(client, lists, seeds, block):
        return run(todo, device=device, backend=backend, client=client, check_every=check_every, progress=progress,
                   done=done)


def plan(lr: Sequence[float], hidden: Sequence[int], samples: Sequence[int], noise: Sequence[float],
         iters: Sequence[int], dtype: Sequence[str], seeds: range, *, device: str = "cpu", backend: str | None = None,
         block: int = SWEEP_BLOCK, concurrent: int | None = 1, option: str = "") -> list[Task]:
    """The tasks of a sweep (see `sweep`), every value checked and the backend resolved: quick, before any work.

    The sizes come first: the table and tasks, and `concurrent` tasks at once on this host
    (None: on other machines), must fit in its free memory. Messages name each argument
    `option` + its name (the CLI gives "--").
    """
    lists = dict(lr=lr, hidden=hidden, samples=samples, noise=noise, iters=iters, dtype=dtype)
    _check_lists(lists, option)
    if not isinstance(seeds, range) or len(seeds) == 0 or seeds.step != 1:
        raise InvalidInputError(f"{option}seeds must be a non-empty range of consecutive seeds, not {seeds!r}")
    validate.problem(seeds.start, 1, 0.0, 1, len(seeds), names={"seed": f"{option}seeds start",
                                                                "networks": f"the number of {option}seeds"})
    validate.count(f"{option}block", block, 1)
    for name in ("samples", "hidden", "iters"):
        for value in lists[name]:
            validate.count(option + name, value, 0 if name == "iters" else 1)
    _check_sizes(lists, seeds, block, concurrent, option)
    product = settings(lr, hidden, samples, noise, iters, dtype, option=option)
    for name in {s.dtype for s in product}:
        task_backend((device, backend, name))  # a bad device or backend fails here, before any task
    return [(s, start, min(start + block, seeds.stop)) for s in product
            for start in range(seeds.start, seeds.stop, block)]


def run(tasks: list[Task], *, device: str = "cpu", backend: str | None = None, client: Any = None,
        check_every: int = CHECK_EVERY, progress: Callable[[int, int], None] | None = None,
        done: list | None = None) -> dict[str, np.ndarray]:
    """Train the `tasks` of `plan` (see `sweep`): the results table as columns."""
    finished = [] if done is None else done
    map_tasks(client, train_block, tasks, progress, lambda k, result: finished.append((k, tasks[k], _checked(
        result, tasks[k]))), device=device, backend=backend, check_every=check_every)
    return table(finished)


def _checked(result: Any, task: Task) -> dict[str, np.ndarray]:
    """A task's result as it must be (a worker's answer is input like any other), or InvalidInputError."""
    count = task[2] - task[1]
    try:
        checked = {name: np.asarray(result[name], dtype=kind) for name, kind in
                   (("final_error", np.float64), ("accuracy", np.float64), ("diverged_at", np.int64))}
    except (TypeError, KeyError, ValueError):
        checked = {}
    diverged = checked["diverged_at"] >= 0 if checked else None
    if not checked or any(v.shape != (count,) for v in checked.values()) or not (
            np.isfinite(checked["final_error"]) != diverged).all() or not (
            (checked["accuracy"][~diverged] >= 0) & (checked["accuracy"][~diverged] <= 1)).all():
        raise InvalidInputError(f"a worker returned a malformed result for {task[0]} seeds {task[1]}:{task[2]}; "
                                f"check that the workers run this moonxp version")
    return checked


def table(finished: list[tuple[int, Task, dict]]) -> dict[str, np.ndarray]:
    """The results table (columns) of finished (task index, task, result) triples, in task order."""
    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for _, (setting, start, stop), result in sorted(finished, key=lambda entry: entry[0]):
        for name, value in asdict(setting).items():
            columns[name].append(np.full(stop - start, value))
        columns["seed"].append(np.arange(start, stop, dtype=np.int64))
        for name in ("final_error", "accuracy", "diverged_at"):
            columns[name].append(result[name])
        columns["diverged"].append(result["diverged_at"] >= 0)
    return {name: np.concatenate(parts) if parts else np.array([]) for name, parts in columns.items()}
