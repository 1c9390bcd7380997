"""Work past one process on a Dask cluster: connecting, mapping tasks, data-parallel training.

Futures, not ``dask.array``: a task is a pure function of small arguments
(a configuration, a shard's seed, a row band), keyed by them, so a worker that
dies has its tasks rerun elsewhere with the same result. Every function here
also runs without a client, in this process, through the same code path, so
in-process and cluster results are bit-identical.

Data-parallel training keeps the points in shards on the workers (each shard
drawn there, or scattered once) and, each step, maps the tiled gradient sums
over the shards, adds them in a fixed tree (`FAN_IN` at a time) and takes the
descent step in one more task. The steps chain as futures; the host reads the
errors back every `check_every` steps, as `train` does on a device.

Dask is optional (``pip install "moonxp[cluster]"``); it is imported only here
and only when a cluster is asked for. Worker processes apply moonxp's malloc
tuning (`policy.keep_freed_memory`) at the start of every task.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .. import validate
from ..arrays import to_host
from ..data import initial_params, moons
from ..defaults import CHECK_EVERY, HIDDEN, ITERS, LR, NOISE, SEED
from ..errors import BackendError, DivergedError, InvalidInputError
from ..kernels import Params, descent, error_and_gradient_sums
from .backend import resolve
from .policy import keep_freed_memory, policy as policy_for
from .training import _tiled

EXTRA_HINT = 'install the cluster extra: pip install "moonxp[cluster]"'
CONNECT_TIMEOUT_S = 2.0  # an address that does not answer within this is reported, not waited on
CLOSE_TIMEOUT_S = 10.0   # a local cluster's shutdown; then its processes are killed
FAN_IN = 16              # partial sums added per reduction task: a tree past FAN_IN shards
_SCHEDULER = re.compile(r"^(?:local(?::(\d+))?|(tcp|tls)://\S+:\d+)$")
LOCAL_HOST = "127.0.0.1"  # a local cluster listens on loopback only (scheduler, workers, dashboard)


def import_distributed() -> Any:
    """The `distributed` module, or a BackendError naming the extra that brings it."""
    try:
        import distributed
    except ImportError:
        raise BackendError(f"--scheduler needs Dask distributed, which is not installed: {EXTRA_HINT}") from None
    return distributed


def parse_scheduler(text: str) -> tuple[str, int | None]:
    """'local' | 'local:N' -> ('local', N or None = one worker per core); 'tcp://H:P' | 'tls://H:P' -> (text, None)."""
    match = _SCHEDULER.match(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidInputError(f"unknown scheduler {text!r}: use local, local:N, tcp://HOST:PORT or tls://HOST:PORT")
    if match.group(2):
        return text, None
    workers = int(match.group(1)) if match.group(1) else None
    if workers is not None and workers < 1:
        raise InvalidInputError(f"scheduler {text!r} asks for no workers: use local:N with N >= 1")
    return "local", workers


def check_scheduler(scheduler: str | None) -> None:
    """Fail early (InvalidInputError, BackendError) on a malformed scheduler or a missing Dask; None is fine."""
    if scheduler is not None:
        parse_scheduler(scheduler)
        import_distributed()


@contextlib.contextmanager
def connect(scheduler: str | None, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A `distributed.Client` for `scheduler` (None: in-process, yields None), closed on leaving.

    'local[:N]' starts a LocalCluster of N worker processes on 127.0.0.1 (dashboard
    included) and shuts it down on leaving, Ctrl-C included. 'tls://' uses Dask's
    `Security` from the Dask configuration (``distributed.comm.tls.*``).

    Raises
    ------
    BackendError
        Dask is not installed, or no scheduler answers at the address within `timeout` seconds.
    InvalidInputError
        The scheduler string is malformed.
    """
    if scheduler is None:
        yield None
        return
    kind, workers = parse_scheduler(scheduler)
    distributed = import_distributed()
    with contextlib.ExitStack() as stack:
        if kind == "local":
            import psutil  # a dependency of distributed
            before = {p.pid for p in psutil.Process().children()}
            stack.callback(_stop_children, before)
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host=LOCAL_HOST,
                dashboard_address=f"{LOCAL_HOST}:0", silence_logs=logging.ERROR)
            stack.callback(_close, cluster)
            client = distributed.Client(cluster)
            stack.callback(_close, client)
        else:
            client = stack.enter_context(_remote(distributed, kind, timeout))
        yield client


def _close(closable: Any) -> None:
    """Close a local cluster or its client within CLOSE_TIMEOUT_S; workers still running are then killed."""
    with contextlib.suppress(Exception):  # timed out: `_stop_children` ends the processes
        closable.close(timeout=CLOSE_TIMEOUT_S)


def _stop_children(before: set) -> None:
    """Kill the worker processes this process started since `before` (pids) that are still alive."""
    import psutil
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid in before or "resource_tracker" in " ".join(child.cmdline()):
                continue  # multiprocessing's tracker leaves by itself when this process does
            child.kill()


def _remote(distributed: Any, address: str, timeout: float) -> Any:
    quiet = logging.getLogger("distributed")
    level, quiet.level = quiet.level, logging.CRITICAL  # a failed connect logs each retry otherwise
    try:
        return distributed.Client(address, timeout=timeout)
    except Exception as exc:  # refused, timed out, or something that is not a Dask scheduler answered
        raise BackendError(f"no Dask scheduler answers at {address} within {timeout:g} s "
                           f"({type(exc).__name__}); start one (dask scheduler) or check the address") from None
    finally:
        quiet.level = level


def describe(client: Any) -> str:
    """One line: the scheduler's address, its workers and threads, and the dashboard where there is one."""
    threads = client.nthreads()
    dashboard = f", dashboard {client.dashboard_link}" if client.dashboard_link else ""
    return f"cluster {client.scheduler.address}: {len(threads)} workers, {sum(threads.values())} threads{dashboard}"


def prepare_worker() -> None:
    """Per-process setup a task needs first on a worker (and harmlessly in-process): malloc tuning."""
    keep_freed_memory()


def map_tasks(client: Any, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None = None,
              on_result: Callable[[int, Any], None] | None = None, **kwargs: Any) -> list:
    """[fn(item, **kwargs) for item in items], on the cluster's workers when `client` is given.

    Tasks are pure and keyed by their arguments, so Dask reruns the tasks of a worker that dies.
    As each task finishes, `on_result(index, result)` and `progress(done, total)` are called.
    Results come back in the order of `items`.
    """
    total = len(items)
    if client is None:
        results = []
        for item in items:
            results.append(fn(item, **kwargs))
            if on_result is not None:
                on_result(len(results) - 1, results[-1])
            if progress is not None:
                progress(len(results), total)
        return results
    distributed = import_distributed()
    futures = client.map(fn, items, pure=True, **kwargs)
    index = {future.key: k for k, future in enumerate(futures)}
    results: list = [None] * total
    try:
        for done, (future, result) in enumerate(distributed.as_completed(futures, with_results=True), 1):
            results[index[future.key]] = result
            if on_result is not None:
                on_result(index[future.key], result)
            if progress is not None:
                progress(done, total)
    finally:
        client.cancel(futures)  # on Ctrl-C or a failed task: nothing left running for this call
    return results


# -- data-parallel training --------------------------------------------------------------------------

def _submitter(client: Any) -> Callable:
    """submit(fn, *args): a future on the cluster, or the value computed here now."""
    return (lambda fn, *args: fn(*args)) if client is None else (lambda fn, *args: client.submit(fn, *args))


@functools.lru_cache(maxsize=8)
def _backend(spec: tuple[str, str | None, str]):
    return resolve(*spec)


def draw_shard(index: int, *, seed: int, samples: int, shards: int, noise: float,
               spec: tuple[str, str | None, str]) -> tuple[Any, Any]:
    """Shard `index` of `shards` of a sharded data set: its points X (n, 2) and labels T (n,) on the backend.

    Shard k holds samples * (k + 1) // shards - samples * k // shards points, drawn
    with its own generator from (seed, k): the shard is the same wherever it is drawn.
    """
    n = samples * (index + 1) // shards - samples * index // shards
    return _on_backend(moons(np.random.RandomState([seed, index]), n, noise), spec)


def _shard_sums(shard: tuple[Any, Any], state: tuple[Params, Any], spec: tuple[str, str | None, str]) -> tuple:
    """(error sum, gradient sums) of one shard for the parameters in `state`, as host arrays."""
    prepare_worker()
    backend = _backend(spec)
    X, T = shard
    params = Params(*(backend.asarray(p) for p in state[0]))
    xp = backend.xp
    policy = policy_for(xp, backend.device, backend.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        e, sums = _tiled(functools.partial(error_and_gradient_sums, xp=xp), params, X, T, xp, policy)
    return (to_host(e), Params(*(to_host(g) for g in sums)))


def _add(*parts: tuple) -> tuple:
    """Add partial (error, gradient) sums, in the order given."""
    e, grads = parts[0]
    for e_k, grads_k in parts[1:]:
        e, grads = e + e_k, Params(*(g + h for g, h in zip(grads, grads_k)))
    return e, grads


def _descend(state: tuple[Params, Any], total: tuple, lr: float, n: int) -> tuple[Params, Any]:
    """(params after one step, error before it) from the summed gradients of all n points."""
    e, sums = total
    with np.errstate(over="ignore", invalid="ignore"):
        return descent(state[0], sums, lr / n), e / n


def _mean_error(total: tuple, n: int) -> Any:
    """The error E of all n points from their summed (error, gradients)."""
    return total[0] / n


def _reduce(submit: Callable, parts: list) -> Any:
    """The sum of `parts` as a fixed tree of `_add` tasks, FAN_IN at a time."""
    while len(parts) > 1:
        parts = [parts[k] if len(parts[k:k + FAN_IN]) == 1 else submit(_add, *parts[k:k + FAN_IN])
                 for k in range(0, len(parts), FAN_IN)]
    return parts[0]


def train_shards(shards: Sequence, params: Params, samples: int, *, lr: float = LR, iters: int = ITERS,
                 check_every: int = CHECK_EVERY, spec: tuple[str, str | None, str] = ("cpu", None, "float64"),
                 client: Any = None, progress: Callable[[int, int], None] | None = None) -> tuple[Params, np.ndarray]:
    """Train on points held in `shards` (futures on the cluster, or (X, T) pairs here): (params, errors).

    Each step maps the gradient sums over the shards, adds them in a fixed tree and
    steps, so the result does not depend on where tasks ran. params: host arrays
    (leading batch dims allowed) in the dtype of `spec` = (device, backend, dtype);
    samples: the points in all shards. errors (..., iters + 1) as for `train`, read back
    every `check_every` steps.

    Raises
    ------
    DivergedError
        An error became non-finite.
    """
    lr = validate.learning_rate(lr)
    validate.count("iters", iters, 0)
    validate.count("check_every", check_every, 1)
    submit = _submitter(client)
    gather = (lambda values: values) if client is None else client.gather
    state: Any = (Params(*(np.asarray(p, dtype=spec[2]) for p in params)), None)

    def sums(state: Any) -> Any:
        return _reduce(submit, [submit(_shard_sums, shard, state, spec) for shard in shards])
    chunks, done = [], 0
    while True:
        count = min(check_every, iters - done)
        states = []
        for _ in range(count):
            state = submit(_descend, state, sums(state), lr, samples)
            states.append(state)
        last = done + count == iters
        values = gather(states + ([submit(_mean_error, sums(state), samples)] if last else []))
        chunks.append(np.stack([v[1] if k < count else v for k, v in enumerate(values)], axis=-1))
        if not np.isfinite(chunks[-1]).all():
            bad = ~np.isfinite(np.concatenate(chunks, axis=-1))
            raise DivergedError(int(np.argmax(bad.reshape(-1, bad.shape[-1]).any(axis=0))), lr)
        done += count
        if progress is not None:
            progress(done, iters)
        if last:
            final = state if isinstance(state, tuple) else gather(state)
            return Params(*final[0]), np.concatenate(chunks, axis=-1)


def _on_backend(shard: tuple, spec: tuple[str, str | None, str]) -> tuple[Any, Any]:
    prepare_worker()
    backend = _backend(spec)
    return backend.asarray(shard[0]), backend.asarray(shard[1])


def scatter_shards(X: np.ndarray, T: np.ndarray, shards: int, spec: tuple[str, str | None, str],
                   client: Any = None) -> list:
    """Split host points X (N, 2), T (N,) into `shards` shards, sent once to the workers (or kept here)."""
    validate.count("shards", shards, 1, len(T))
    bounds = [len(T) * k // shards for k in range(shards + 1)]
    parts = [(X[bounds[k]:bounds[k + 1]], T[bounds[k]:bounds[k + 1]]) for k in range(shards)]
    if client is None:
        return [_on_backend(part, spec) for part in parts]
    return client.map(_on_backend, client.scatter(parts), spec=spec, pure=True)


def train_sharded(seed: int = SEED, samples: int = 1_000_000, shards: int = 8, *, noise: float = NOISE,
                  hidden: int = HIDDEN, lr: float = LR, iters: int = ITERS, check_every: int = CHECK_EVERY,
                  device: str = "cpu", backend: str | None = None, dtype: str = "float64", client: Any = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[Params, np.ndarray]:
    """Data-parallel training on `samples` moons points drawn in `shards` shards on the workers.

    No process holds all points: shard k is drawn where it is used (see `draw_shard`).
    The initial parameters are the first draws of RandomState(seed). With `client`
    None the same tasks run here, in the same order: the results are bit-identical.

    Returns
    -------
    (params, errors)
        Host arrays: the trained parameters and errors (iters + 1,) as for `train`.
    """
    validate.problem(seed, samples, noise, hidden)
    validate.count("shards", shards, 1, samples)
    spec = (device, backend, dtype)
    _backend(spec)  # a bad device or backend fails here, before any task
    params = initial_params(np.random.RandomState(seed), hidden)
    draw = functools.partial(draw_shard, seed=seed, samples=samples, shards=shards, noise=noise, spec=spec)
    parts = [draw(k) for k in range(shards)] if client is None else client.map(draw, range(shards), pure=True)
    return train_shards(parts, params, samples, lr=lr, iters=iters, check_every=check_every, spec=spec,
                        client=client, progress=progress)


def trainer(client: Any, shards: int, spec: tuple[str, str | None, str]) -> Callable:
    """A drop-in for `moonxp.train` (same call, same results to rounding) that trains data-parallel.

    The points of the first call are split into `shards` and sent once; later calls with
    the same arrays reuse them. Results come back on the points' backend.
    """
    sent: dict = {}

    def train(params: Params, X: Any, T: Any, *, lr: float = LR, iters: int = ITERS, compile: bool | None = None,
              check_every: int = CHECK_EVERY, progress: Callable[[int, int], None] | None = None):
        backend = _backend(spec)
        known = sent.get("arrays", (None, None))
        if not (known[0] is X and known[1] is T):  # the arrays themselves are kept: an id can be reused
            sent.update(arrays=(X, T), shards=scatter_shards(
                to_host(X), to_host(T), min(shards, X.shape[-2]), spec, client))
        params, errors = train_shards(sent["shards"], Params(*(to_host(p) for p in params)), X.shape[-2], lr=lr,
                                      iters=iters, check_every=check_every, spec=spec, client=client,
                                      progress=progress)
        return Params(*(backend.asarray(p) for p in params)), backend.asarray(errors)
    return train
