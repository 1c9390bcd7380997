"""bench/gpu-check.sh, the one-shot GPU check: its steps, their order and outputs, and its refusals (no GPU needed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu-check.sh"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a bash script")


def check(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": python})


def test_the_most_valuable_steps_come_first_and_everything_lands_in_the_results_folder(tmp_path):
    done = check("--dry-run", str(tmp_path))
    assert done.returncode == 0, done.stderr
    steps = re.findall(r"^=== ([\w-]+) \(limit (\d+) s\): (.*)$", done.stdout, re.M)
    assert [name for name, _, _ in steps] == ["nvidia-smi", "info", "homework", "ensemble", "bench", "cuda-tests"]
    commands = {name: command for name, _, command in steps}
    assert f"--out {tmp_path}" in commands["homework"] and "--no-plot" not in commands["homework"]
    assert f"--json {tmp_path}/bench.json --table {tmp_path}/bench.txt" in commands["bench"]
    assert "-v -rfE --tb=line" in commands["cuda-tests"] and "--continue-on-collection-errors" in commands["cuda-tests"]
    assert sum(int(limit) for _, limit, _ in steps) <= 420
    assert (tmp_path / "gpu-check.log").read_text() == done.stdout


def test_it_stops_in_one_line_without_array_api_compat(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "hidden" / "array_api_compat").mkdir(parents=True)
    (tmp_path / "hidden" / "array_api_compat" / "__init__.py").write_text("raise ImportError('not here')\n")
    python = tmp_path / "bin" / "python"  # the suite's Python, with array_api_compat hidden
    python.write_text(f"#!/bin/sh\nPYTHONPATH={tmp_path / 'hidden'}:$PYTHONPATH exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    done = check("--cpu", str(tmp_path / "out"), python=str(python))
    assert done.returncode == 2
    assert done.stdout.splitlines()[-1].startswith("=== gpu-check: stopped: array_api_compat cannot be imported")
    assert "=== info" not in done.stdout
