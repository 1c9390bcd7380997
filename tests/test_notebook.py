"""examples/homework.ipynb runs from top to bottom without an error and prints the homework's lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_reproduction import HOMEWORK_LINES

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "homework.ipynb"


@pytest.mark.slow
def test_homework_notebook_runs_and_prints_the_homework_lines(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert [line for line in printed.splitlines() if line.startswith("It:")] == HOMEWORK_LINES
    images = [o for o in outputs if o.output_type in ("execute_result", "display_data") and "image/png" in o.data]
    assert len(images) == 3  # boundaries, curve, ensemble: shown inline
    assert "GPU" in printed  # the GPU cell ran, or said why not
