"""Data-parallel training on a Dask cluster: the points in shards on the workers, one descent step at a time.

The points stay in shards on the workers (each shard drawn there, or scattered
once); each step maps the tiled gradient sums over the shards, adds them in a
fixed tree (`FAN_IN` at a time) and takes the descent step in one more task.
The steps chain as futures; the host reads the errors back every
`check_every` steps, as `train` does on a device. Without a client the same
tasks run here, in the same order: the results are bit-identical.
"""

from __future__ import annotations

import functools
from concurrent.futures import CancelledError
from typing import Any, Callable, Sequence

import numpy as np

from .. import validate
from ..arrays import device_context, to_host
from ..data import initial_params, moons
from ..defaults import CHECK_EVERY, HIDDEN, ITERS, LR, NOISE, SEED
from ..errors import DivergedError
from ..kernels import Params, descent, error_and_gradient_sums
from .cluster import completed, prepare
from .policy import policy as policy_for
from .tasks import Spec, task_backend
from .training import tiled_sums

FAN_IN = 16  # partial sums added per reduction task: a tree past FAN_IN shards
RETRIES = 3  # times the steps since the last read-back run again after workers died


def _submitter(client: Any) -> Callable:
    """submit(fn, *args): a future on the cluster, or the value computed here now."""
    return (lambda fn, *args: fn(*args)) if client is None else (lambda fn, *args: client.submit(fn, *args))


def draw_shard(index: int, *, seed: int, samples: int, shards: int, noise: float,
               spec: Spec) -> tuple[Any, Any]:
    """Shard `index` of `shards` of a sharded data set: its points X (n, 2) and labels T (n,) on the backend.

    Shard k holds samples * (k + 1) // shards - samples * k // shards points, drawn
    with its own generator from (seed, k): the shard is the same wherever it is drawn.
    """
    n = samples * (index + 1) // shards - samples * index // shards
    return _on_backend(moons(np.random.RandomState([seed, index]), n, noise), spec)


def _shard_sums(shard: tuple[Any, Any], state: tuple[Params, Any], spec: Spec) -> tuple:
    """(error sum, gradient sums) of one shard for the parameters in `state`, as host arrays.

    With the shard's device current: CuPy launches there (cuda:N, N >= 1), and the tiles are
    sized from that device's free memory."""
    backend = task_backend(spec)
    X, T = shard
    params = Params(*(backend.asarray(p) for p in state[0]))
    xp = backend.xp
    with device_context(xp, backend.device), np.errstate(over="ignore", invalid="ignore"):
        policy = policy_for(xp, backend.device, backend.dtype)
        e, sums = tiled_sums(functools.partial(error_and_gradient_sums, xp=xp), params, X, T, xp, policy)
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
                 check_every: int = CHECK_EVERY, spec: Spec = ("cpu", None, "float64"),
                 client: Any = None, progress: Callable[[int, int], None] | None = None,
                 reshard: Callable[[], Sequence] | None = None) -> tuple[Params, np.ndarray]:
    """Train on points held in `shards` (futures on the cluster, or (X, T) pairs here): (params, errors).

    Each step maps the gradient sums over the shards, adds them in a fixed tree and
    steps, so the result does not depend on where tasks ran. params: host arrays
    (leading batch dims allowed) in the dtype of `spec` = (device, backend, dtype);
    samples: the points in all shards. errors (..., iters + 1) as for `train`, read back
    every `check_every` steps. A worker that dies takes the futures it held: the steps
    since the last read-back run again from the parameters read back (the same bits),
    on the shards of `reshard()` where given (shards scattered from here are lost with
    their worker; drawn ones Dask draws again), at most `RETRIES` times per read-back.

    Raises
    ------
    DivergedError
        An error became non-finite.
    """
    lr = validate.learning_rate(lr)
    validate.count("iters", iters, 0)
    validate.count("check_every", check_every, 1)
    prepare(client)
    submit = _submitter(client)
    gather = (lambda values: values) if client is None else functools.partial(_gather, client)
    state: Any = (Params(*(np.asarray(p, dtype=spec[2]) for p in params)), None)  # the last one read back

    def steps(shards: Sequence, state: Any, count: int, last: bool) -> list:
        """The futures of `count` steps from `state` (and, `last`, of the error after them)."""
        def sums(state: Any) -> Any:
            return _reduce(submit, [submit(_shard_sums, shard, state, spec) for shard in shards])
        states = []
        for _ in range(count):
            state = submit(_descend, state, sums(state), lr, samples)
            states.append(state)
        return states + ([submit(_mean_error, sums(state), samples)] if last else [])
    chunks, done = [], 0
    while True:
        count = min(check_every, iters - done)
        last = done + count == iters
        for attempt in range(RETRIES + 1):
            try:
                values = gather(steps(shards, state, count, last))
                break
            except CancelledError:  # a worker died with a step's inputs: again from the state read back
                if client is None or attempt == RETRIES:
                    raise
                shards = shards if reshard is None else reshard()
        state = values[count - 1] if count else state
        chunks.append(np.stack([v[1] if k < count else v for k, v in enumerate(values)], axis=-1))
        if not np.isfinite(chunks[-1]).all():
            bad = ~np.isfinite(np.concatenate(chunks, axis=-1))
            raise DivergedError(int(np.argmax(bad.reshape(-1, bad.shape[-1]).any(axis=0))), lr)
        done += count
        if progress is not None:
            progress(done, iters)
        if last:
            return Params(*state[0]), np.concatenate(chunks, axis=-1)


def _gather(client: Any, futures: Any) -> Any:
    """The results of `futures` (a list, in order, or one future), never waiting forever (`cluster.completed`)."""
    listed = futures if isinstance(futures, list) else [futures]
    found = {future.key: result for future, result in completed(client, listed)}
    results = [found[future.key] for future in listed]
    return results if isinstance(futures, list) else results[0]


def _on_backend(shard: tuple, spec: Spec) -> tuple[Any, Any]:
    backend = task_backend(spec)
    return backend.asarray(shard[0]), backend.asarray(shard[1])


def scatter_shards(X: np.ndarray, T: np.ndarray, shards: int, spec: Spec,
                   client: Any = None) -> list:
    """Split host points X (N, 2), T (N,) into `shards` shards, sent once to the workers (or kept here)."""
    validate.count("shards", shards, 1, len(T))
    prepare(client)
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
    task_backend(spec)  # a bad device or backend fails here, before any task
    prepare(client)
    params = initial_params(np.random.RandomState(seed), hidden)
    draw = functools.partial(draw_shard, seed=seed, samples=samples, shards=shards, noise=noise, spec=spec)
    parts = [draw(k) for k in range(shards)] if client is None else client.map(draw, range(shards), pure=True)
    return train_shards(parts, params, samples, lr=lr, iters=iters, check_every=check_every, spec=spec,
                        client=client, progress=progress)


def trainer(client: Any, shards: int, spec: Spec) -> Callable:
    """A drop-in for `moonxp.train` (same call, same results to rounding) that trains data-parallel.

    The points of the first call are split into `shards` and sent once; later calls with
    the same arrays reuse them. Results come back on the points' backend.
    """
    sent: dict = {}

    def train(params: Params, X: Any, T: Any, *, lr: float = LR, iters: int = ITERS, compile: bool | None = None,
              check_every: int = CHECK_EVERY, progress: Callable[[int, int], None] | None = None):
        backend = task_backend(spec)

        def reshard() -> list:
            sent.update(arrays=(X, T), shards=scatter_shards(
                to_host(X), to_host(T), min(shards, X.shape[-2]), spec, client))
            return sent["shards"]
        known = sent.get("arrays", (None, None))
        if not (known[0] is X and known[1] is T):  # the arrays themselves are kept: an id can be reused
            reshard()
        params, errors = train_shards(sent["shards"], Params(*(to_host(p) for p in params)), X.shape[-2], lr=lr,
                                      iters=iters, check_every=check_every, spec=spec, client=client,
                                      progress=progress, reshard=reshard)
        return Params(*(backend.asarray(p) for p in params)), backend.asarray(errors)
    return train
