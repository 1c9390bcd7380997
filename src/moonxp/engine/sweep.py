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

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .. import validate
from ..arrays import to_host
from ..data import make_problem
from ..defaults import CHECK_EVERY, DTYPES, HIDDEN, ITERS, LR, NOISE, SAMPLES, SWEEP_BLOCK
from ..errors import DivergedError, InvalidInputError
from ..kernels import Params
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


def settings(lr: Sequence[float], hidden: Sequence[int], samples: Sequence[int], noise: Sequence[float],
             iters: Sequence[int], dtype: Sequence[str]) -> list[Setting]:
    """The Cartesian product, lr varying slowest and dtype fastest, each value checked."""
    for name, values in (("lr", lr), ("hidden", hidden), ("samples", samples), ("noise", noise),
                         ("iters", iters), ("dtype", dtype)):
        if len(values) == 0 or len(set(values)) != len(values):
            raise InvalidInputError(f"sweep {name} must list at least one value, each once, not {list(values)!r}")
    for value in dtype:
        if value not in DTYPES:
            raise InvalidInputError(f"unknown dtype {value!r}: use float64 or float32")
    product = [Setting(validate.learning_rate(a), *rest) for a, *rest in itertools.product(
        lr, hidden, samples, noise, iters, dtype)]
    for s in product:
        validate.problem(0, s.samples, s.noise, s.hidden)
        validate.count("iters", s.iters, 0)
    return product


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
    todo = plan(lr, hidden, samples, noise, iters, dtype, seeds, device=device, backend=backend, block=block)
    return run(todo, device=device, backend=backend, client=client, check_every=check_every, progress=progress,
               done=done)


def plan(lr: Sequence[float], hidden: Sequence[int], samples: Sequence[int], noise: Sequence[float],
         iters: Sequence[int], dtype: Sequence[str], seeds: range, *, device: str = "cpu", backend: str | None = None,
         block: int = SWEEP_BLOCK) -> list[Task]:
    """The tasks of a sweep (see `sweep`), every value checked and the backend resolved: quick, before any work."""
    product = settings(lr, hidden, samples, noise, iters, dtype)
    if not isinstance(seeds, range) or len(seeds) == 0 or seeds.step != 1:
        raise InvalidInputError(f"seeds must be a non-empty range of consecutive seeds, not {seeds!r}")
    validate.problem(seeds.start, 1, 0.0, 1, len(seeds))
    validate.count("block", block, 1)
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
