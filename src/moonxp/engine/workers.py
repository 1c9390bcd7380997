"""What every Dask worker process runs once when it starts: moonxp's per-process set-up, as a WorkerPlugin,
and, in a local cluster's workers, Dask's preload hook `dask_setup`.

Imported only where a cluster is used (`cluster.prepare` registers it), since it imports Dask.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from distributed import WorkerPlugin

from ..environment import versions
from .handshake import compared, fingerprint
from .policy import keep_freed_memory

QUIET_LOGGERS = ("distributed", "tornado", "asyncio")


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


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run first in each worker process of a local cluster (`cluster.connect`): a Ctrl-C
    to the process group is for moonxp's own process, which then closes the cluster; the worker ignores it,
    and says nothing of the cluster's shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_logs()


def quiet_logs() -> None:
    """Silence Dask's own logging and asyncio's reports of its tasks, for good (the command line reports every
    failure in one line of its own; Dask logs tracebacks when a scheduler goes away or a cluster shuts down)."""
    names = [name for name in list(logging.root.manager.loggerDict)
             if name.split(".")[0] in QUIET_LOGGERS]  # Dask's configuration gives some their own level
    for name in {*QUIET_LOGGERS, *names}:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
