"""A sweep's output directory under interruption and failure: one run, one directory state (issue 17).

Whatever stops a sweep (a signal during its final write, a file that cannot be
written, a failed run), the directory ends holding this run's finished rows
and its sweep.json with the status, and no file of an earlier sweep.
"""

from __future__ import annotations

import io
import json
import os

import pytest

from moonxp.app import sweep as sweep_app
from moonxp.app.cli import main
from helpers import posix, run_child, signal_when

pq = pytest.importorskip("pyarrow.parquet")
SMALL = ["--hidden", "3", "--samples", "20", "--iters", "3", "--seeds", "0:4", "--block", "2", "--format", "parquet"]


def sweep(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(["sweep", *SMALL, *argv], stdout=out, stderr=err), out.getvalue(), err.getvalue()


def state(directory) -> tuple[dict, str | None, list]:
    """(sweep.json, the table's status, the lr values of its rows)."""
    summary = json.loads((directory / "sweep.json").read_text())
    table = pq.read_table(directory / "results.parquet") if (directory / "results.parquet").exists() else None
    status = None if table is None else table.schema.metadata[b"moonxp.status"].decode()
    return summary, status, sorted(set(table.column("lr").to_pylist())) if table is not None else []


@pytest.fixture
def earlier(tmp_path):
    """A directory holding a finished earlier sweep (lr 0.01 and 0.1, with figures)."""
    assert sweep("--lr", "0.01,0.1", "--out", str(tmp_path))[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["distributions.png", "heatmaps.png", "results.parquet", "sweep.json"]
    return tmp_path


@pytest.mark.parametrize("phase", ["drawing", "heatmaps.png", "distributions.png", "sweep.json"])
def test_an_interruption_in_the_final_write_leaves_this_run_marked_interrupted(earlier, monkeypatch, phase):
    if phase == "drawing":
        monkeypatch.setattr(sweep_app, "heatmaps", lambda columns: (_ for _ in ()).throw(KeyboardInterrupt))
    elif phase.endswith(".png"):
        real = sweep_app.write_figure

        def interrupted(path, figure, *args, **kwargs):
            if path.name == phase:
                raise KeyboardInterrupt
            return real(path, figure, *args, **kwargs)
        monkeypatch.setattr(sweep_app, "write_figure", interrupted)
    else:
        real_json = sweep_app.write_json

        def interrupted_final(path, data, *args, **kwargs):
            if data["status"] == "ok":
                raise KeyboardInterrupt
            return real_json(path, data, *args, **kwargs)
        monkeypatch.setattr(sweep_app, "write_json", interrupted_final)
    code, out, err = sweep("--lr", "0.5", "--out", str(earlier))
    assert code == 130 and err == "moonxp: interrupted\n"
    summary, status, lrs = state(earlier)
    assert (summary["status"], status, lrs) == ("interrupted", "interrupted", [0.5])
    assert sorted(os.listdir(earlier)) == ["results.parquet", "sweep.json"] == sorted(summary["files"])


def test_a_directory_in_the_way_of_a_figure_fails_with_this_runs_rows(earlier):
    (earlier / "heatmaps.png").unlink()
    (earlier / "heatmaps.png").mkdir()
    code, out, err = sweep("--lr", "0.5", "--out", str(earlier))
    assert code == 2 and err.count("\n") == 1 and "heatmaps.png" in err
    summary, status, lrs = state(earlier)
    assert (summary["status"], status, lrs) == ("failed", "failed", [0.5]) and "heatmaps.png" in summary["message"]
    assert not (earlier / "distributions.png").exists()


def test_no_file_of_an_earlier_sweep_stays(earlier):
    assert sweep("--lr", "0.5", "--no-plot", "--out", str(earlier))[0] == 0
    summary, status, lrs = state(earlier)
    assert sorted(os.listdir(earlier)) == ["results.parquet", "sweep.json"] and lrs == [0.5]
    assert sweep("--lr", "0.2", "--format", "csv", "--out", str(earlier))[0] == 0  # a CSV table after a Parquet one
    assert sorted(os.listdir(earlier)) == ["distributions.png", "heatmaps.png", "results.csv", "sweep.json"]


def test_an_interrupted_sweep_with_no_finished_task_leaves_no_earlier_file(earlier, monkeypatch):
    from moonxp.engine import sweep as engine
    monkeypatch.setattr(engine, "train_block", lambda task, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt))
    code, out, err = sweep("--lr", "0.5", "--out", str(earlier))
    summary, status, lrs = state(earlier)
    assert code == 130 and (summary["status"], summary["tasks_done"], status, lrs) == ("interrupted", 0, "interrupted", [])
    assert sorted(os.listdir(earlier)) == ["results.parquet", "sweep.json"]


def test_a_failed_run_writes_its_finished_rows_marked_failed(tmp_path, monkeypatch):
    from moonxp.engine import sweep as engine
    real, calls = engine.train_block, []

    def broken_on_the_third(task, **kwargs):
        calls.append(task)
        return real(task, **kwargs) if len(calls) < 3 else {"final_error": []}
    monkeypatch.setattr(engine, "train_block", broken_on_the_third)
    code, out, err = sweep("--lr", "0.5,0.6", "--out", str(tmp_path))
    assert code == 2 and "malformed result" in err and err.count("\n") == 1
    summary, status, lrs = state(tmp_path)
    assert (summary["status"], summary["tasks_done"], status, lrs) == ("failed", 2, "failed", [0.5])


def test_stdout_closed_after_the_sweep_marks_it_interrupted(tmp_path):
    from moonxp.app.process import Interrupted

    class Closed(io.StringIO):
        def write(self, text):
            if text.startswith("Done"):
                raise Interrupted(None)
            return super().write(text)
    code = main(["sweep", *SMALL, "--out", str(tmp_path)], stdout=Closed(), stderr=io.StringIO())
    summary, status, _ = state(tmp_path)
    assert code == 141 and (summary["status"], status) == ("interrupted", "interrupted")


@posix
def test_real_sigterm_at_the_second_figure(earlier):
    hook = signal_when("moonxp.app.sweep.write_figure", "args[0].name == 'distributions.png'", "SIGTERM")
    code, out, err = run_child(hook, "sweep", *SMALL, "--lr", "0.5", "--out", str(earlier))
    assert code == 143 and err == "moonxp: interrupted (SIGTERM)\n"
    summary, status, lrs = state(earlier)
    assert (summary["status"], status, lrs) == ("interrupted", "interrupted", [0.5])
    assert sorted(os.listdir(earlier)) == ["results.parquet", "sweep.json"]


def test_sweep_out_of_host_memory_names_sweep_options(tmp_path, monkeypatch):
    from moonxp.engine import sweep as engine
    monkeypatch.setattr(engine, "train_block", lambda task, **kwargs: (_ for _ in ()).throw(MemoryError()))
    code, out, err = sweep("--out", str(tmp_path))
    assert code == 2 and err == "moonxp: error: out of host memory: use a smaller --block or --samples\n"
    assert state(tmp_path)[0]["status"] == "failed"


def test_sweep_out_that_is_not_a_name_is_refused(tmp_path):
    code, out, err = sweep("--out", str(tmp_path / "a\nb"))
    assert code == 2 and "is not a name" in err and os.listdir(tmp_path) == []
