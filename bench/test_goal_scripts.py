"""Smoke tests of bench/cpu_goals.py and bench/scaling.py (CI: `pytest bench --benchmark-disable`): one quick row each,
run as a user runs them, prints one whole table row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), os.environ.get("PYTHONPATH", "")])}


def _table_row(script: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| homework |")]
    assert len(rows) == 1, done.stdout
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_cpu_goals_times_moonxp_and_its_peer_in_fresh_processes():
    row = _table_row("cpu_goals.py", "--rounds", "1", "--repeat", "1", "homework")
    assert row[1] == ">= 1.2x plain NumPy" and row[3].endswith("ms (numpy-homework)")
    assert re.fullmatch(r"[0-9.]+ ms", row[2]) and re.fullmatch(r"[0-9.]+x", row[4])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins processes to cores")
def test_scaling_times_one_worker_threads_worker_processes_and_one_process_per_core():
    row = _table_row("scaling.py", "--rounds", "1", "homework")
    assert all(re.fullmatch(r"[0-9.]+ ms", cell) for cell in row[1:5]) and re.fullmatch(r"[0-9.]+", row[5])
    assert row[6].endswith("x")
