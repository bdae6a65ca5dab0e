"""Writing one run's files (design.md section 7) and the experiment's runs.csv, deterministically.

Files are written into a temporary folder and renamed into place, so a run directory is either complete
or absent. Floats are written with `repr` (shortest round-trip form), so the same run gives the same bytes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sim.config import ExperimentConfig, dump_config
from sim.metrics import INSTANCE_COLUMNS, ITERATION_COLUMNS
from sim.runner import RunResult

RUN_FILES = ("config.yaml", "iterations.csv", "instances.csv", "summary.json")


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v)
    return v


def write_run(out_dir: Path, cfg: ExperimentConfig, result: RunResult) -> Path:
    """Write DIR/<name>/<run_id>/ atomically; returns the run directory."""
    exp_dir = out_dir / cfg.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    final = exp_dir / str(result.summary["run_id"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=exp_dir))
    try:
        (tmp / "config.yaml").write_text(dump_config(cfg))
        _write_csv(tmp / "iterations.csv", ITERATION_COLUMNS, result.iterations)
        _write_csv(tmp / "instances.csv", INSTANCE_COLUMNS, result.instances)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=False) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def scalar_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's scalars, with nested dicts flattened (phases.generation, compare.verl.speedup, ...)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", summary)
    return flat


def write_runs_csv(exp_dir: Path, records: list[dict[str, Any]]) -> Path:
    """runs.csv: one row per run (run_id, status, error and the summary's scalar fields)."""
    columns: list[str] = ["run_id", "status", "error"]
    for rec in records:
        for key in rec:
            if key not in columns:
                columns.append(key)
    path = exp_dir / "runs.csv"
    tmp = path.with_suffix(".csv.tmp")
    _write_csv(tmp, columns, records)
    os.replace(tmp, path)
    return path
