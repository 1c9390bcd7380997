"""The notebooks of examples/ run from top to bottom without an error and show what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import HOMEWORK_LINES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "homework.ipynb"


def executed(path: Path, tmp_path: Path) -> tuple[list, str, list]:
    """Run the notebook at `path` in `tmp_path`: (its outputs, the text it printed, its inline PNG images)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if o.output_type in ("execute_result", "display_data") and "image/png" in o.data]
    return outputs, printed, images


def test_homework_notebook_runs_and_prints_the_homework_lines(tmp_path):
    _, printed, images = executed(NOTEBOOK, tmp_path)
    assert [line for line in printed.splitlines() if line.startswith("It:")] == HOMEWORK_LINES
    assert len(images) == 3  # boundaries, curve, ensemble: shown inline
    assert "GPU" in printed  # the GPU cell ran, or said why not


def test_estimator_notebook_compares_moonxp_and_mlp_on_three_data_sets(tmp_path):
    pytest.importorskip("sklearn")
    _, printed, images = executed(EXAMPLES / "estimator.ipynb", tmp_path)
    assert len(images) == 1  # the boundaries of both models on the three data sets
    rows = [line.split() for line in printed.splitlines() if "Classifier(" in line]
    accuracy = {(row[0], row[-3]): float(row[-2]) for row in rows}  # (data, model) -> test accuracy
    assert len(rows) == 6 and all(row[-1].endswith("s") for row in rows)  # each with its fit time
    for data in {d for d, _ in accuracy}:
        assert accuracy[data, "MoonxpClassifier()"] >= accuracy[data, "MLPClassifier(max_iter=1000)"] - 0.03
