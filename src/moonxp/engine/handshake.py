"""The version handshake with a Dask cluster: one moonxp, one NumPy, one backend library everywhere.

Before any task, the scheduler and every worker report the versions of the
packages that change results (`RESULT_PACKAGES` and the backend's), read by
importing moonxp where they run, and they must equal this process's. A worker
that cannot import moonxp reports the import error. Dask's own check
(`Client.get_versions`) compares Dask, its dependencies and Python from the
installed metadata, which does not tell whether moonxp imports.

Workers that join later are checked as they join: `workers.WorkerSetup`, a
WorkerPlugin, compares the worker's versions with this process's in the worker
itself, and a worker whose versions differ closes before it takes a task. A
worker without moonxp cannot even load the plugin, and Dask stops it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..environment import versions
from ..errors import BackendError

RESULT_PACKAGES = ("moonxp", "numpy", "array-api-compat")  # + the backend's (environment)
_PROBE = "__import__('moonxp.environment', fromlist=['versions']).versions({backend!r})"


def compared(found: dict, backend: str | None) -> dict:
    """The versions of `found` (as `environment.versions` gives them) that change results."""
    names = RESULT_PACKAGES + tuple(name for name in versions(backend) if name not in versions())
    return {name: found.get(name) for name in names}


def fingerprint(expected: dict) -> str:
    """A short name for the `expected` versions."""
    return "moonxp-" + hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:16]


def _describe(found: Any) -> str:
    if isinstance(found, BaseException):
        return f"cannot import moonxp ({type(found).__name__}: {found})"
    return ", ".join(f"{name} {version}" for name, version in found.items())


def check(client: Any, backend: str | None) -> dict:
    """The versions of this process, the scheduler and every worker of `client`, once they all match.

    Returns
    -------
    {"client": versions, "scheduler": versions, "workers": {address: versions}}, as `environment.versions`.

    Raises
    ------
    BackendError
        One line naming each worker (or the scheduler) whose versions differ, with them.
    """
    probe = _PROBE.format(backend=backend)
    here = versions(backend)
    try:
        scheduler: Any = client.run_on_scheduler(eval, probe)
    except Exception as exc:  # the scheduler's own import error
        scheduler = exc
    workers = client.run(eval, probe, on_error="return")
    expected = compared(here, backend)
    wrong = {where: found for where, found in [("the scheduler", scheduler), *sorted(workers.items())]
             if isinstance(found, BaseException) or compared(found, backend) != expected}
    if wrong:
        shown = "; ".join(f"{where}: {_describe(found if isinstance(found, BaseException) else compared(found, backend))}"
                          for where, found in list(wrong.items())[:4])
        more = f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else ""
        raise BackendError(f"the cluster runs other versions than this moonxp ({_describe(expected)}): {shown}{more}; "
                           f"install the same moonxp and packages on the scheduler and every worker")
    return {"client": here, "scheduler": scheduler, "workers": dict(workers)}

