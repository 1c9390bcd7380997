"""`python -m moonxp info`: versions, backends (usable or why not), devices, limits."""

import io

import pytest

from moonxp.app import info
from moonxp.app.cli import main


def test_info_lists_backends_devices_and_limits(monkeypatch):
    monkeypatch.setattr(info, "measure", lambda backend, quick: {"matmul_flops": 5e10, "copy_bandwidth": 2e10})
    out = io.StringIO()
    assert main(["info"], stdout=out) == 0
    text = out.getvalue()
    assert text.startswith("moonxp ") and "numpy" in text and "array-api-compat" in text
    for name in ("numpy", "cupy", "torch", "jax", "array-api-strict"):
        assert f"  {name} " in text
    assert "numpy             " in text and "usable on cpu" in text
    assert "cpu: " in text and "cores" in text
    assert "cpu float32: 50.0 GFLOP/s, 20.0 GB/s" in text


@pytest.mark.parametrize("cores, setting, says", [
    (4, "1", "4 cores; NumPy training large enough to share: this process and 3 worker processes, once"),
    (2, "1", "2 cores; NumPy training large enough to share: this process and 1 worker process, once"),
    (4, "0", "4 cores; NumPy training on 4 threads (worker processes off"),
    (1, "1", "1 cores; NumPy training on one thread")])
def test_info_says_how_numpy_training_uses_the_cores(monkeypatch, cores, setting, says):
    monkeypatch.setattr(info, "machine", lambda: {"cpu": "Some CPU", "cores": cores, "system": "Linux", "python": "3"})
    monkeypatch.setenv("MOONXP_WORKER_PROCESSES", setting)
    assert f"  cpu: Some CPU, {says}" in info.text(measure_limits=False)


def test_backends_say_why_one_is_not_usable(monkeypatch):
    pytest.importorskip("cupy")
    monkeypatch.setattr(info, "gpus", lambda: [])
    cupy = next(b for b in info.backends() if b["name"] == "cupy")
    if cupy["usable"]:
        pytest.skip("a CUDA device is usable here")
    assert cupy["version"] and "cuda" in cupy["not_usable"]
    assert "CUDA" in cupy["not_usable"]["cuda"]


def test_a_missing_backend_is_reported_as_not_installed(monkeypatch):
    real = info.importlib.util.find_spec
    monkeypatch.setattr(info.importlib.util, "find_spec", lambda name: None if name == "jax" else real(name))
    jax = next(b for b in info.backends() if b["name"] == "jax")
    assert jax == {"name": "jax", "version": None, "usable": [], "not_usable": {"all": "not installed"},
                   "execution": {}}


def test_info_says_how_each_backend_runs(monkeypatch):
    """Which path runs by default: NumPy eager, JAX jit; the text shows it next to each device."""
    monkeypatch.setattr(info, "measure", lambda backend, quick: {"matmul_flops": 5e10, "copy_bandwidth": 2e10})
    found = {b["name"]: b for b in info.backends()}
    assert found["numpy"]["execution"] == {"cpu": "eager (no compiler)"}
    if found["jax"]["usable"]:
        assert found["jax"]["execution"]["cpu"] == "jax.jit"
    if found["torch"]["usable"]:
        assert found["torch"]["execution"]["cpu"] == "eager (compiles only when asked)"
    assert "usable on cpu: eager (no compiler)" in info.text()
