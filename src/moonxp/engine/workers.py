"""What every Dask worker process runs once when it starts: moonxp's per-process set-up, as a WorkerPlugin.

Imported only where a cluster is used (`cluster.prepare` registers it), since it imports Dask.
"""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from .policy import keep_freed_memory


class WorkerSetup(WorkerPlugin):
    """Applies moonxp's malloc tuning (`policy.keep_freed_memory`) in the worker's process."""

    name = "moonxp-setup"

    def setup(self, worker: Any) -> None:
        keep_freed_memory()
