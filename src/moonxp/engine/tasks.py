"""Mapping pure tasks over items, on a Dask cluster's workers or here, and the backend a task computes on.

Futures, not ``dask.array``: a task is a pure function of small arguments (a
configuration, a shard's seed, a row band), keyed by them, so a worker that
dies has its tasks rerun elsewhere with the same result. Without a client the
same tasks run in this process, through the same code, so in-process and
cluster results are bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from .backend import Backend, resolve
from .cluster import completed, prepare

Spec = tuple[str, "str | None", str]  # (device, backend, dtype) as `resolve` takes them


@functools.lru_cache(maxsize=8)
def task_backend(spec: Spec) -> Backend:
    """`resolve(*spec)`, once per process: the backend of the tasks that name `spec`."""
    return resolve(*spec)


def map_tasks(client: Any, fn: Callable, items: Sequence, progress: Callable[[int, int], None] | None = None,
              on_result: Callable[[int, Any], None] | None = None, **kwargs: Any) -> list:
    """[fn(item, **kwargs) for item in items], on the cluster's workers when `client` is given.

    Tasks are pure and keyed by their arguments, so Dask reruns the tasks of a worker that dies; only workers
    that run this moonxp take them, and a run never waits forever (`cluster.prepare`, `cluster.completed`).
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
    prepare(client)
    futures = client.map(fn, items, pure=True, **kwargs)
    index = {future.key: k for k, future in enumerate(futures)}
    results: list = [None] * total
    try:
        for done, (future, result) in enumerate(completed(client, futures), 1):
            results[index[future.key]] = result
            if on_result is not None:
                on_result(index[future.key], result)
            if progress is not None:
                progress(done, total)
    finally:
        client.cancel(futures)  # on Ctrl-C or a failed task: nothing left running for this call
    return results
