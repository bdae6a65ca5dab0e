"""`load_or_run` for notebooks: an experiment's runs.csv as a DataFrame, running the experiment first if needed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_or_run(experiment: str | Path, results: str | Path | None = None) -> Any:
    """runs.csv of an experiment as a pandas DataFrame, running the experiment first when it has no results yet.

    For notebooks: `results` defaults to $RLHF_SIM_RESULTS, else results/ beside the package.
    """
    import pandas

    from sim import yaml_io
    from sim.cli import main as sim_run

    experiment = Path(experiment)
    root = Path(results or os.environ.get("RLHF_SIM_RESULTS", Path(__file__).resolve().parents[2] / "results"))
    name = yaml_io.load(experiment.read_text())["name"]
    runs_csv = root / name / "runs.csv"
    if not runs_csv.exists():
        status = sim_run([str(experiment), "--out", str(root), "--workers", "1", "--quiet"])
        if status != 0:
            raise RuntimeError(f"{experiment}: the experiment exited with status {status}; see {runs_csv}")
    return pandas.read_csv(runs_csv)
