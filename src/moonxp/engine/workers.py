"""What every Dask worker process runs once when it starts: moonxp's per-process set-up, as a WorkerPlugin,
the memory check of a running sweep's tasks, another, and, in a local cluster's workers, Dask's preload hook
`dask_setup` (with `held_signals`, its counterpart in the process that starts the cluster).

Imported only where a cluster is used (`cluster.prepare` registers it), since it imports Dask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import uuid
from multiprocessing import resource_tracker
from typing import Any, Collection, Iterator

from distributed import WorkerPlugin

from ..environment import versions
from .handshake import compared, fingerprint
from .policy import keep_freed_memory

QUIET_LOGGERS = ("distributed", "tornado", "asyncio")
HELD_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)}


class WorkerSetup(WorkerPlugin):
    """Applies moonxp's malloc tuning (`policy.keep_freed_memory`) in the worker's process; a worker whose
    versions are not `expected` (`handshake.compared`: it joined after the client's check) closes instead,
    before it takes a task (plugins run before a joining worker handles the scheduler's messages)."""

    def __init__(self, expected: dict):
        self.expected = expected
        self.name = "moonxp-setup-" + fingerprint(expected)

    def setup(self, worker: Any) -> None:
        keep_freed_memory()
        if compared(versions(), None) != self.expected:
            asyncio.get_running_loop().create_task(worker.close(reason="moonxp-versions-differ"))


class TaskRoom(WorkerPlugin):
    """A worker not in `checked` whose memory limit (when it has one) less what its process uses cannot hold
    `task_bytes` per thread closes before it takes a task: a sweep's largest task, for workers that join while it
    runs (`cluster.task_room`). Each has its own name, so that sweeps on one cluster at once each keep theirs.

    Only while the sweep's client is there: that client holds a task of the plugin's name (its lease), which the
    scheduler forgets when the client goes, even killed or cut off without removing the plugin; a worker joining
    after that asks the scheduler, finds no lease, and stays.
    """

    def __init__(self, task_bytes: int, checked: Collection[str]):
        self.task_bytes, self.checked = task_bytes, frozenset(checked)
        self.name = f"moonxp-task-room-{uuid.uuid4().hex}"

    async def setup(self, worker: Any) -> None:
        limit = worker.memory_manager.memory_limit
        if worker.address in self.checked or not limit or \
                self.task_bytes * worker.state.nthreads <= limit - worker.monitor.get_process_memory():
            return
        lease = await worker.scheduler.get_task_status(keys=[self.name])  # None: the scheduler forgot it
        if lease.get(self.name) is not None:
            asyncio.get_running_loop().create_task(worker.close(reason="moonxp-task-too-large"))


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run first in each worker process of a local cluster (`cluster.connect`): a Ctrl-C
    to the process group is for moonxp's own process, which then closes the cluster; the worker ignores it,
    and says nothing of the cluster's shutdown. The worker was started with `HELD_SIGNALS` blocked
    (`held_signals`): a Ctrl-C that came while it started is discarded (ignored), SIGTERM and SIGHUP now stop it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
    quiet_logs()


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while a local cluster starts; on leaving, one that came meanwhile is
    delivered (moonxp's handler raises `Interrupted` there, and the started cluster is closed).

    Why: a Ctrl-C that stops Dask half-way through starting leaves a cluster its own exit handler cannot close
    (a traceback), and one that reaches a worker process before its preload (`dask_setup`) is a
    KeyboardInterrupt traceback from its imports. Two holds: the signal mask, blocked in this thread, is
    inherited by the threads created meanwhile (Dask's event loop, which starts the worker processes, now and
    when a nanny restarts one) and by the processes they start (Python does not unblock signals when it starts;
    `dask_setup` unblocks them in each worker). But the kernel gives a signal to any thread that does not block
    it (NumPy's BLAS threads, started before), and Python then runs the handler in the main thread all the same:
    so, in the main thread, the handlers are replaced meanwhile by one that only records the signal.
    """
    if not hasattr(signal, "pthread_sigmask"):  # no signal masks on this platform
        yield
        return
    came: list[int] = []
    handlers: dict[int, Any] = {}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the mask as it is, changed inside the try only
    try:
        if threading.current_thread() is threading.main_thread():
            for signum in HELD_SIGNALS:
                if signal.getsignal(signum) is not None:  # None: a handler not set from Python, left alone
                    handlers[signum] = signal.signal(signum, lambda signum, frame: came.append(signum))
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        # Multiprocessing's resource tracker (the worker processes need it) is started here, before Dask's
        # event loop would: CPython's `ensure_running` unblocks SIGINT and SIGTERM in the thread that starts
        # it, whatever its mask was, so they are blocked again after it. The tracker keeps SIGHUP blocked
        # (it ignores the other two), so a hang-up does not kill it; it lives until moonxp's process exits.
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # one pending in this thread is recorded now
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)


def quiet_logs() -> None:
    """Silence Dask's own logging and asyncio's reports of its tasks, for good (the command line reports every
    failure in one line of its own; Dask logs tracebacks when a scheduler goes away or a cluster shuts down)."""
    names = [name for name in list(logging.root.manager.loggerDict)
             if name.split(".")[0] in QUIET_LOGGERS]  # Dask's configuration gives some their own level
    for name in {*QUIET_LOGGERS, *names}:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
