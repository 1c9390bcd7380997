"""`python -m moonxp info`: versions, the backends found (and how each runs: eager or compiled), the devices,
and their measured limits."""

from __future__ import annotations

import importlib
import importlib.util

from .. import __version__
from ..arrays import device_context
from ..benchmark.limits import measure
from ..defaults import DTYPES, HIDDEN, ITERS, SAMPLES
from ..engine.backend import BACKENDS, MODULES, resolve
from ..engine import processes
from ..engine.executor import execution
from ..engine.policy import policy
from ..environment import machine, versions
from ..errors import MoonxpError, one_line



def backends() -> list[dict]:
    """For each backend: installed version, on which devices it is usable (or why not), and how the homework
    runs there by default (`execution`: "eager (no compiler)", "jax.jit", "eager (too small to compile)", ...)."""
    found = []
    for name in BACKENDS:
        if importlib.util.find_spec(MODULES[name]) is None:
            found.append({"name": name, "version": None, "usable": [], "not_usable": {"all": "not installed"},
                          "execution": {}})
            continue
        usable, problems, runs = [], {}, {}
        for device in ("cpu", "cuda"):
            try:
                backend = resolve(device, name, "float32")
            except MoonxpError as exc:
                if not str(exc).startswith(name):  # "<name> runs on ... only" is no news
                    problems[device] = str(exc)
                continue
            usable.append(backend.device_name)
            with device_context(backend.xp, backend.device):
                runs[backend.device_name] = execution(policy(backend.xp, backend.device, backend.dtype), None,
                                                      ITERS, SAMPLES * HIDDEN)
        try:
            version = getattr(importlib.import_module(MODULES[name]), "__version__", None)
        except Exception as exc:  # a broken install: resolve has said why, as "not usable: <reason>"
            version = None
            problems = {"all": one_line(exc)}
        found.append({"name": name, "version": version, "usable": usable, "not_usable": problems, "execution": runs})
    return found


def gpus() -> list[dict]:
    """CUDA devices as CuPy (else PyTorch) sees them: name, memory, compute capability, versions."""
    try:
        import cupy
        runtime = cupy.cuda.runtime
        out = []
        for index in range(runtime.getDeviceCount()):
            props = runtime.getDeviceProperties(index)
            out.append({"device": f"cuda:{index}", "name": props["name"].decode(),
                        "memory_gib": props["totalGlobalMem"] / 2**30,
                        "compute_capability": f"{props['major']}.{props['minor']}",
                        "driver": runtime.driverGetVersion(), "cuda_runtime": runtime.runtimeGetVersion()})
        return out
    except Exception:  # no CuPy, or no driver: try PyTorch
        pass
    try:
        import torch
        return [{"device": f"cuda:{i}", "name": torch.cuda.get_device_name(i),
                 "memory_gib": torch.cuda.get_device_properties(i).total_memory / 2**30,
                 "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(i)),
                 "cuda_runtime": torch.version.cuda} for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def _parallel_training(cores: int) -> str:
    """How NumPy training uses the cores, in words."""
    if cores < 2:
        return "NumPy training on one thread"
    if not processes.enabled():
        return f"NumPy training on {cores} threads (worker processes off: MOONXP_WORKER_PROCESSES=0, or not POSIX)"
    return (f"NumPy training large enough to share: this process and {cores - 1} worker "
            f"process{'es' if cores > 2 else ''}, once such work has added up to about half a second")


def text(measure_limits: bool = True) -> str:
    """The `info` text."""
    m = machine()
    lines = [f"moonxp {__version__} | Python {m['python']} | {m['system']}",
             "packages: " + ", ".join(f"{k} {v}" for k, v in versions().items() if k not in ("python", "moonxp")),
             "", "backends:"]
    for b in backends():
        why_not = dict(b["not_usable"])
        state = ("usable on " + "; ".join(f"{d}: {b['execution'][d]}" for d in b["usable"]) if b["usable"] else
                 "not usable" + (f": {why_not.pop('all')}" if "all" in why_not else ""))
        lines.append(f"  {b['name']:17} {b['version'] or '-':12} {state}")
        lines += [f"  {'':17} {'':12} {device}: {why}" for device, why in why_not.items()]
    lines += ["", "devices:", f"  cpu: {m['cpu']}, {m['cores']} cores; {_parallel_training(m['cores'])}"]
    found = gpus()  # each call initialises the CUDA libraries: once
    for g in found:
        lines.append(f"  {g['device']}: {g['name']}, {g['memory_gib']:.1f} GiB, compute capability "
                     f"{g['compute_capability']}, driver {g.get('driver', '?')}, CUDA runtime {g['cuda_runtime']}")
    if measure_limits:
        lines += ["", "measured limits (peak matmul, copy bandwidth):"]
        for device in ["cpu"] + [g["device"] for g in found]:
            for dtype in reversed(DTYPES):  # float32 first
                try:
                    lim = measure(resolve(device, None, dtype), "quick")
                except MoonxpError as exc:
                    lines.append(f"  {device} {dtype}: not measured ({exc})")
                    continue
                lines.append(f"  {device} {dtype}: {lim['matmul_flops'] / 1e9:.1f} GFLOP/s, "
                             f"{lim['copy_bandwidth'] / 1e9:.1f} GB/s")
    return "\n".join(lines) + "\n"
