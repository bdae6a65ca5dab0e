"""Every notebook in notebooks/ (jupytext py:percent) executes with nbclient without a cell raising.

Each notebook runs the sweep it needs when its results are missing; here they write into a temporary
folder (RLHF_SIM_RESULTS), so the test runs the sweeps too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_there_are_notebooks() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"nodes_sweep.py", "rlhfless_params.py", "early_exit.py"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import jupytext
        from nbclient import NotebookClient
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the notebooks extra (nbclient, ipykernel, jupytext) is not installed in CI")
        pytest.skip("the notebooks extra is not installed: pip install -e '.[notebooks]'")
    monkeypatch.setenv("RLHF_SIM_RESULTS", str(tmp_path / "results"))  # the kernel inherits the environment
    nb = jupytext.read(path)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.name == "nodes_sweep.py":
        assert (tmp_path / "results" / "nodes" / "runs.csv").is_file()
        plots = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
        assert len(plots) >= 2 and all("text/html" in o["data"] for o in plots)  # rendered in exported HTML too
