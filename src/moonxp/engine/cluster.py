"""A Dask cluster's lifetime and the connection to it: ``--scheduler`` parsed, a client opened and closed.

Dask is optional (the ``cluster`` extra); it is imported only here
(and in `workers`), and only when a cluster is asked for. Every worker of a
cluster moonxp connects to runs `workers.WorkerSetup` once, when it starts.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from typing import Any, Iterator

from ..environment import host_memory
from ..errors import BackendError, InvalidInputError, install_hint

EXTRA_HINT = f"install the cluster extra: {install_hint('cluster')}"
CONNECT_TIMEOUT_S = 2.0  # an address that does not answer within this is reported, not waited on
LOCAL_HOST = "127.0.0.1"  # a local cluster listens on loopback only (scheduler, workers, dashboard)
LOCAL_WORKER_BYTES = 256 << 20  # a local worker process: Python, NumPy, Dask and moonxp (~75 MB) and its tasks
_SCHEDULER = re.compile(r"^(?:local(?::(\d+))?|(tcp|tls)://\S+:\d+)$")


def import_distributed() -> Any:
    """The `distributed` module, or a BackendError naming the extra that brings it."""
    try:
        import distributed
    except ImportError as exc:
        raise BackendError(f"--scheduler needs Dask distributed, which is not installed: {EXTRA_HINT}") from exc
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
    """Fail early (InvalidInputError, BackendError) on a malformed scheduler, a local cluster of more worker
    processes than this host's free memory holds (`LOCAL_WORKER_BYTES` each) or a missing Dask; None is fine."""
    if scheduler is not None:
        kind, workers = parse_scheduler(scheduler)
        free = host_memory()
        if kind == "local" and workers is not None and workers * LOCAL_WORKER_BYTES > free:
            raise InvalidInputError(f"{scheduler} would start {workers} worker processes, about "
                                    f"{workers * LOCAL_WORKER_BYTES / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB "
                                    f"is free; use local:{max(1, free // LOCAL_WORKER_BYTES)} or less")
        import_distributed()


@contextlib.contextmanager
def connect(scheduler: str | None, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A `distributed.Client` for `scheduler` (None: in-process, yields None), closed on leaving.

    'local[:N]' starts a LocalCluster of N worker processes on 127.0.0.1 (dashboard
    included) and closes it on leaving, Ctrl-C included. 'tls://' uses Dask's
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
            cluster = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host=LOCAL_HOST,
                dashboard_address=f"{LOCAL_HOST}:0", silence_logs=logging.ERROR))
            client = stack.enter_context(distributed.Client(cluster))
        else:
            client = stack.enter_context(_remote(distributed, kind, timeout))
        prepare(client)
        yield client


def _remote(distributed: Any, address: str, timeout: float) -> Any:
    try:
        return distributed.Client(address, timeout=timeout)
    except Exception as exc:  # refused, timed out, or something that is not a Dask scheduler answered
        raise BackendError(f"no Dask scheduler answers at {address} within {timeout:g} s "
                           f"({type(exc).__name__}); start one (dask scheduler) or check the address") from exc


_prepared: weakref.WeakSet = weakref.WeakSet()  # clients whose cluster runs `WorkerSetup`


def prepare(client: Any) -> None:
    """Have every worker of `client`'s cluster, present and future, run moonxp's set-up once (a WorkerPlugin);
    None (in-process) needs nothing."""
    if client is not None and client not in _prepared:
        from .workers import WorkerSetup
        client.register_plugin(WorkerSetup(), name=WorkerSetup.name)
        _prepared.add(client)


def describe(client: Any) -> str:
    """One line: the scheduler's address, its workers and threads, and the dashboard where there is one."""
    threads = client.nthreads()
    dashboard = f", dashboard {client.dashboard_link}" if client.dashboard_link else ""
    return f"cluster {client.scheduler.address}: {len(threads)} workers, {sum(threads.values())} threads{dashboard}"
