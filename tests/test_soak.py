"""Load: 50 concurrent `python -m moonxp` runs into 5 shared output directories, a third of them
interrupted by a real SIGINT, SIGTERM or SIGHUP at a random moment after they start training.

Slow (about a minute on 2 quiet cores, mostly imports and figures), so a plain `pytest` leaves it out: run it with
`pytest -m slow tests/test_soak.py`. Whatever the interleaving, every run must end
with its own exit status and one stderr line at most, and every directory must hold
the whole metrics.json of one run beside exactly the figures that run lists, with no
temporary file.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import moonxp

from helpers import strict_json

SRC = os.path.dirname(os.path.dirname(moonxp.__file__))
RUNS, DIRECTORIES = 50, 5
SIGNALS = {"SIGINT": (130, "moonxp: interrupted\n"), "SIGTERM": (143, "moonxp: interrupted (SIGTERM)\n"),
           "SIGHUP": (129, "moonxp: interrupted (SIGHUP)\n")}


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_concurrent_runs_with_random_interruptions(tmp_path):
    rng = random.Random(9)
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    plans = []
    for k in range(RUNS):
        argv = ["--seed", str(k), "--iters", str(rng.choice([0, 20, 200, 1000])), "--samples", "200",
                "--grid", "8", "--out", str(tmp_path / f"out{k % DIRECTORIES}")]
        argv += rng.choice([[], ["--ensemble", "3"], ["--no-plot"], ["--no-plot"]])  # figures cost most
        interrupt = rng.choice(list(SIGNALS)) if k % 3 == 0 else None
        plans.append((argv, interrupt, rng.uniform(0.0, 1.5)))
    results: dict[int, tuple] = {}

    def drive(k: int) -> None:
        argv, interrupt, delay = plans[k]
        process = subprocess.Popen([sys.executable, "-m", "moonxp", *argv], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            header = process.stdout.readline()                     # training starts after this line
            if interrupt and header:
                time.sleep(delay)
                process.send_signal(getattr(signal, interrupt))
            out, err = process.stdout.read(), process.stderr.read()  # not communicate(): it skips what
            process.wait(timeout=600)                              # readline has buffered
        finally:
            process.kill()
        results[k] = (process.returncode, header + out, err)

    threads = [threading.Thread(target=drive, args=(k,)) for k in range(RUNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for k, (code, out, err) in results.items():
        argv, interrupt, _ = plans[k]
        assert out.startswith("moonxp "), (k, err)
        if code == 0:                                              # finished before the signal came, or none sent
            assert err == "" and "Done:" in out, (k, err)
        else:
            assert interrupt and (code, err) == SIGNALS[interrupt], (k, code, err)
    for d in range(DIRECTORIES):
        directory = tmp_path / f"out{d}"
        names = sorted(os.listdir(directory))
        assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
        metrics = strict_json(directory / "metrics.json")            # whole JSON ...
        k = metrics["config"]["seed"]
        argv = plans[k][0]
        assert argv[argv.index("--out") + 1] == str(directory)      # ... of one run that wrote here
        assert metrics["config"]["iters"] == int(argv[argv.index("--iters") + 1])
        assert metrics["status"] in ("ok", "interrupted")
        assert (metrics["status"] == "ok") == (results[k][0] == 0)
        assert names == sorted(["metrics.json"] + metrics["figures"])  # exactly that run's figures
        for png in metrics["figures"]:
            assert (directory / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
