"""Scale: huge grids in bounded memory, measured in a fresh process (peak RSS)."""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, sys
import numpy as np
import moonxp
size = int(sys.argv[1])
_, _, params = moonxp.make_problem(0)
params = moonxp.Params(*(a.astype(np.float32) for a in params))
Yg = moonxp.evaluate_grid(params, size)
rows = np.array([0, size // 3, size - 1])
l = np.linspace(-4.0, 4.0, size).astype(np.float32)
X = np.stack(np.broadcast_arrays(l[None, :], l[rows, None]), axis=-1).reshape(-1, 2)
expected = moonxp.forward(params, X).reshape(3, size)
print(json.dumps({"shape": list(Yg.shape), "dtype": str(Yg.dtype),
                  "error": float(np.abs(Yg[rows] - expected).max()), "scale": float(np.abs(expected).max()),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def _grid_in_fresh_process(size: int) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(size)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_8192_squared_grid_in_float32_stays_under_2_5_gb():
    result = _grid_in_fresh_process(8192)
    assert result["shape"] == [8192, 8192] and result["dtype"] == "float32"
    assert result["error"] <= 1e-4 * max(result["scale"], 1.0)
    assert result["peak_rss_gb"] < 2.5  # the output alone is 0.25 GB


@pytest.mark.slow
def test_16384_squared_grid_works():
    result = _grid_in_fresh_process(16384)
    assert result["shape"] == [16384, 16384]
    assert result["error"] <= 1e-4 * max(result["scale"], 1.0)
    assert result["peak_rss_gb"] < 6  # the output is 1 GB: tiles add a bounded amount
