"""A Dask cluster's lifetime and the connection to it: ``--scheduler`` parsed, a client opened and closed.

Dask is optional (the ``cluster`` extra); it is imported only here
(and in `workers`), and only when a cluster is asked for. Every worker of a
cluster moonxp connects to runs `workers.WorkerSetup` once, when it starts.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
import weakref
from concurrent.futures import CancelledError
from typing import Any, Callable, Collection, Iterator, Sequence

from ..environment import host_memory
from ..errors import BackendError, InvalidInputError, install_hint

EXTRA_HINT = f"install the cluster extra: {install_hint('cluster')}"
CONNECT_TIMEOUT_S = 2.0  # an address that does not answer within this is reported, not waited on
LOCAL_HOST = "127.0.0.1"  # a local cluster listens on loopback only (scheduler, workers, dashboard)
WORKER_WAIT_S = 120.0  # how long a run waits for a worker able to take its tasks, unless set in:
WORKER_WAIT_ENV = "MOONXP_WORKER_WAIT_S"
POLL_S = 0.2  # how often a run waiting on its tasks looks at the scheduler and its workers
LOCAL_PRELOAD = "moonxp.engine.workers"  # its `dask_setup` runs first in each local worker process
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
def connect(scheduler: str | None, *, timeout: float = CONNECT_TIMEOUT_S, quiet: bool = False) -> Iterator[Any]:
    """A `distributed.Client` for `scheduler` (None: in-process, yields None), closed on leaving.

    'local[:N]' starts a LocalCluster of N worker processes on 127.0.0.1 (dashboard
    included) and closes it on leaving, Ctrl-C included; a signal while it starts takes effect once it is up
    (`workers.held_signals`). 'tls://' uses Dask's
    `Security` from the Dask configuration (``distributed.comm.tls.*``). `quiet`: `workers.quiet_logs` first. The
    cluster is made ready for moonxp (versions checked) by `prepare`, before the first task.

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
    from .workers import held_signals, quiet_logs
    if quiet:
        quiet_logs()
    with contextlib.ExitStack() as stack:
        if kind == "local":
            with held_signals():  # a signal meanwhile stops the run once the cluster is up, and closes it
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, host=LOCAL_HOST,
                    dashboard_address=f"{LOCAL_HOST}:0", silence_logs=logging.CRITICAL, preload=[LOCAL_PRELOAD]))
                client = stack.enter_context(distributed.Client(cluster))
        else:
            client = stack.enter_context(_remote(distributed, kind, timeout))
        yield client


def _remote(distributed: Any, address: str, timeout: float) -> Any:
    try:
        return distributed.Client(address, timeout=timeout)
    except Exception as exc:  # refused, timed out, or something that is not a Dask scheduler answered
        reason = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        if address.startswith("tls://") and (isinstance(exc, (TypeError, OSError)) and "ssl" in str(exc).lower()
                                             or isinstance(exc, FileNotFoundError)):
            raise BackendError(f"cannot open a TLS connection to {address} ({reason}): give Dask the certificates "
                               f"(distributed.comm.tls.ca-file, .client.cert and .client.key in its "
                               f"configuration)") from None
        raise BackendError(f"no Dask scheduler answers at {address} within {timeout:g} s ({reason}); start one "
                           f"(dask scheduler) or check the address") from None


_prepared: weakref.WeakSet = weakref.WeakSet()  # clients whose cluster runs `WorkerSetup`
_checked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # client -> {backend: versions found}


def worker_wait_s() -> float:
    """How long a run waits for a worker that can take its tasks: $MOONXP_WORKER_WAIT_S, else WORKER_WAIT_S."""
    text = os.environ.get(WORKER_WAIT_ENV, "")
    try:
        wait = float(text) if text.strip() else WORKER_WAIT_S
    except ValueError:
        wait = float("nan")
    if not (wait > 0 and math.isfinite(wait)):
        raise InvalidInputError(f"{WORKER_WAIT_ENV}={text!r} is not a number of seconds > 0")
    return wait


def prepare(client: Any, backend: str | None = None, say: Callable[[str], None] | None = None) -> dict:
    """Make `client`'s cluster ready for moonxp's tasks; None (in-process) needs nothing.

    Waits for a worker (saying so through `say`, up to `worker_wait_s()`), checks that the
    scheduler and every worker run this moonxp and the packages that change results (with
    `backend`'s library: `handshake.check`), then has every worker, present and future, run
    `WorkerSetup` once: moonxp's set-up, and a worker joining later with other versions closes.

    Returns
    -------
    The versions of this process, the scheduler and the workers (`handshake.check`), {} in-process.

    Raises
    ------
    BackendError
        No worker came within the wait, or versions differ (one line naming them).
    """
    if client is None:
        return {}
    from . import handshake
    if client not in _prepared:
        if not client.scheduler_info().get("workers"):
            wait = worker_wait_s()
            if say is not None:
                say(f"waiting up to {wait:g} s for a worker to join ({WORKER_WAIT_ENV} sets how long)")
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise BackendError(f"no worker joined the scheduler at {client.scheduler.address} within {wait:g} s; "
                                   f"start workers (dask worker {client.scheduler.address}) or set "
                                   f"{WORKER_WAIT_ENV}") from None
    checked = _checked.setdefault(client, {})
    if backend is None and checked:  # checked already; workers joining since check themselves (WorkerSetup)
        backend = next(iter(checked))
    if backend not in checked:
        checked[backend] = handshake.check(client, backend)
    if client not in _prepared:
        from .workers import WorkerSetup
        setup = WorkerSetup(handshake.compared(checked[backend]["client"], None))
        client.register_plugin(setup, name=setup.name)
        _prepared.add(client)
    return checked[backend]


def worker_memory(client: Any) -> dict[str, tuple[int, int, int] | None]:
    """{address: (bytes free below its memory limit, threads, memory limit)} of each worker of `client`.

    Free: the limit less the memory its process uses now. None for a worker without a limit (0 or None): Dask does
    not report its host's memory.
    """
    return {address: (info["memory_limit"] - info.get("metrics", {}).get("memory", 0), info["nthreads"],
                      info["memory_limit"]) if info.get("memory_limit") else None
            for address, info in sorted(client.scheduler_info()["workers"].items())}


@contextlib.contextmanager
def task_room(client: Any, task_bytes: int, checked: Collection[str]) -> Iterator[None]:
    """While inside, a worker of `client`'s cluster not in `checked` (the addresses the caller checked) closes
    before it takes a task unless its memory limit holds its threads' tasks of `task_bytes` at once
    (`workers.TaskRoom`): workers that join later are checked as they join. The plugin is removed on leaving;
    should this process be killed or cut off first, it stays registered but refuses no worker: its lease, a
    trivial task this client holds under the plugin's name, is forgotten by the scheduler with the client."""
    from .workers import TaskRoom
    room = TaskRoom(task_bytes, checked)
    lease = client.submit(bool, key=room.name)
    try:
        client.register_plugin(room, name=room.name)
        yield
    finally:
        if client.status == "running":  # a lost scheduler took the plugin and the lease with it
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(room.name)
            lease.release()


def completed(client: Any, futures: Sequence) -> Iterator[tuple[Any, Any]]:
    """(future, result) of each of `futures` as it finishes, never waiting forever; a task's error is raised.

    Raises
    ------
    BackendError
        The scheduler is lost (one line naming it), or no worker able to take moonxp's tasks
        has been there for `worker_wait_s()` seconds (all died).
    CancelledError
        A future was cancelled with the scheduler still there (its inputs were lost with a worker).
    """
    distributed = import_distributed()
    finished = distributed.as_completed(futures, with_results=True)  # results fetched as soon as each is done
    wait, idle_since = worker_wait_s(), None
    while not finished.is_empty():
        if finished.has_ready():
            future, result = finished.next()
            if isinstance(result, CancelledError):
                check_connection(client)
                raise result
            yield future, result
            continue
        check_connection(client)
        idle_since = None if client.scheduler_info().get("workers") else idle_since or time.monotonic()
        if idle_since is not None and time.monotonic() - idle_since > wait:
            raise BackendError(_no_worker(client, wait))
        with finished.thread_condition:
            finished.thread_condition.wait(timeout=POLL_S)


def check_connection(client: Any) -> None:
    """Nothing while `client` is connected to its scheduler; a BackendError naming the scheduler once it is lost."""
    if client.status not in ("running", "connecting") or client.scheduler_comm is None or \
            client.scheduler_comm.comm is None or client.scheduler_comm.comm.closed():
        raise BackendError(f"lost the connection to the Dask scheduler at {client.scheduler.address}: it stopped "
                           f"or the network failed; the finished work was kept, start the scheduler again")


def _no_worker(client: Any, wait: float) -> str:
    return (f"no worker has been connected to the scheduler at {client.scheduler.address} for {wait:g} s (all "
            f"left or died); start workers, or set {WORKER_WAIT_ENV} to wait longer")


def describe(client: Any) -> str:
    """One line: the scheduler's address, its workers and threads, and the dashboard where there is one."""
    threads = client.nthreads()
    dashboard = f", dashboard {client.dashboard_link}" if client.dashboard_link else ""
    return f"cluster {client.scheduler.address}: {len(threads)} workers, {sum(threads.values())} threads{dashboard}"
