"""Writing one run's files (design.md section 7) and the experiment's runs.csv, deterministically.

Files are written into a temporary folder and renamed into place, so a run directory is either complete
or absent (a sweep skips complete runs when it resumes). Floats are written with `repr` (shortest
round-trip form), so the same run gives the same bytes. Run reports load plotly.js from one shared
`plotly.min.js` in the experiment folder (`../plotly.min.js`), written once per experiment.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sim.config.models import ExperimentConfig
from sim.config.loading import dump_config
from sim.metrics import INSTANCE_COLUMNS, ITERATION_COLUMNS
from sim.simulation import RunResult

RUN_FILES = ("config.yaml", "iterations.csv", "instances.csv", "activities.csv", "summary.json", "report.html")
ACTIVITY_COLUMNS = ["iteration", "phase", "role", "slots", "start_s", "end_s", "instance_id"]
PLOTLY_JS = "plotly.min.js"
TEMP_PREFIX = "."  # temporary run folders are `.<run_id>.<random>` beside the run folders


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return repr(float(v))  # float() so numpy floats print as numbers too
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v))  # e.g. early_exit_warnings: one JSON cell
    return v


def write_run(
    out_dir: Path, cfg: ExperimentConfig, result: RunResult, report_html: str | None = None, config_text: str | None = None
) -> Path:
    """Write DIR/<name>/<run_id>/ atomically; returns the run directory.

    `report_html` defaults to a report built from the result (sim.output.report.run_report_html), `config_text`
    to dump_config(cfg) (a caller that has it already saves the YAML dump).
    """
    if report_html is None:
        from sim.output.report import run_report_html

        report_html = run_report_html(result.summary, result.iterations, result.instances, result.activities)
    exp_dir = out_dir / cfg.name
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_plotly_js(exp_dir)
    final = exp_dir / str(result.summary["run_id"])
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{final.name}.", dir=exp_dir))
        tmp.chmod(0o755)
        (tmp / "config.yaml").write_text(config_text if config_text is not None else dump_config(cfg))
        _write_csv(tmp / "iterations.csv", ITERATION_COLUMNS, result.iterations)
        _write_csv(tmp / "instances.csv", INSTANCE_COLUMNS, result.instances)
        _write_csv(tmp / "activities.csv", ACTIVITY_COLUMNS, result.activities)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=False) + "\n")
        (tmp / "report.html").write_text(report_html)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_complete(run_dir: Path, config_text: str) -> bool:
    """A finished run of this very config: every run file present and config.yaml equal to `config_text`."""
    if not all((run_dir / name).is_file() for name in RUN_FILES):
        return False
    try:
        return (run_dir / "config.yaml").read_text() == config_text
    except (OSError, UnicodeDecodeError):
        return False


def remove_temp_dirs(exp_dir: Path, run_ids: list[str]) -> None:
    """Remove temporary folders of these runs left by an interrupted write (one writer per experiment folder)."""
    if not exp_dir.is_dir():
        return
    for run_id in run_ids:
        for tmp in exp_dir.glob(f"{TEMP_PREFIX}{run_id}.*"):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)


def write_plotly_js(exp_dir: Path) -> Path:
    """The plotly.js bundle shared by the experiment's run reports (written once; 4.8 MB)."""
    from sim.output.report_page import plotly_js_bytes

    path = exp_dir / PLOTLY_JS
    data = plotly_js_bytes()
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


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


def write_runs_csv(exp_dir: Path, records: list[dict[str, Any]], first: list[str] | None = None) -> Path:
    """runs.csv: one row per run (run_id, status, error, the `first` columns, then the summary's scalar fields)."""
    columns: list[str] = list(dict.fromkeys(["run_id", "status", "error", *(first or [])]))
    for rec in records:
        for key in rec:
            if key not in columns:
                columns.append(key)
    path = exp_dir / "runs.csv"
    tmp = path.with_name(f"{TEMP_PREFIX}runs.csv.tmp")
    _write_csv(tmp, columns, records)
    os.replace(tmp, path)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a file through a temporary name and rename it into place."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
