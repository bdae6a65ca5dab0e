"""Running a plan: map its tasks over a backend, write each run directory as it arrives, then runs.csv and the report.

Run directories are written atomically, so an interrupted sweep resumes: a run whose directory is complete
and whose config.yaml equals the newly resolved config is skipped. Failed runs are recorded in runs.csv,
never retried within one invocation (running the command again retries them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import ConfigError
from sim.sweep.backends import make_backend
from sim.sweep.plan import Plan, format_value
from sim.sweep.progress import Log
from sim.sweep.tasks import Task, TaskResult, run_task

if TYPE_CHECKING:  # pragma: no cover
    from sim.catalog import Catalog


@dataclass
class SweepOutcome:
    exp_dir: Path
    rows: list[dict[str, Any]]  # runs.csv, in plan order
    summaries: dict[str, dict[str, Any]]  # run id -> summary.json of every complete run
    failures: list[TaskResult]
    skipped: int  # runs found complete and not run again


def csv_value(value: Any) -> Any:
    """A swept value in runs.csv: numbers and strings as they are, anything else as in the run id."""
    return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else format_value(value)


def default_workers(n_tasks: int) -> int:
    return max(1, min(os.cpu_count() or 1, n_tasks))


def run_plan(
    plan: Plan,
    out: Path,
    *,
    base_dir: Path,
    file: str,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    quiet: bool = False,
    strict: bool = False,
    catalog: "Catalog | None" = None,
) -> SweepOutcome:
    """Run every run of the plan that is not complete yet, write each run directory, then runs.csv and reports.

    strict: a single experiment (no sweep): a bad-input error in any run aborts with that error before
    anything is written (the CLI exits 2); otherwise failed runs are recorded and the others go on.
    catalog: the merged catalog every run uses (default: the packaged one), sent to the workers with each task.
    """
    from sim.metrics import compare_ratios
    from sim.output.run_files import is_complete, remove_temp_dirs, write_run

    exp_dir = out / plan.name
    runs = {r.run_id: r for r in plan.runs}
    remove_temp_dirs(exp_dir, list(runs))
    done: dict[str, dict[str, Any]] = {}
    for r in plan.runs:
        if is_complete(exp_dir / r.run_id, r.config_text):
            done[r.run_id] = json.loads((exp_dir / r.run_id / "summary.json").read_text())
    skipped = len(done)
    todo = [r for r in plan.runs if r.run_id not in done]
    finished: dict[str, TaskResult] = {}
    log = Log(quiet=quiet or len(plan.runs) == 1, total=len(todo))
    if skipped and not quiet:
        log.line(f"{plan.name}: {skipped} of {len(plan.runs)} runs already complete in {exp_dir}, skipped")

    def waiting(run_id: str) -> bool:
        """Not written yet, but will be: still running, or finished and not written."""
        return run_id not in done and (run_id not in finished or finished[run_id].kind == "ok")

    def write_ready() -> None:
        for r in sorted(plan.runs, key=lambda r: bool(r.baselines)):  # comparison runs first: mains need them
            res = finished.get(r.run_id)
            if r.run_id in done or res is None or res.kind != "ok":
                continue
            if any(waiting(b) for b in r.baselines):
                continue  # a comparison run of this point is still running
            summary = res.result.summary
            ratios = {runs[b].cfg.scheduler.name: compare_ratios(summary, done[b]) for b in r.baselines if b in done}
            if ratios:
                summary["compare"] = ratios
            write_run(out, r.cfg, res.result, res.report_html, config_text=r.config_text)
            done[r.run_id] = json.loads(json.dumps(summary))
            res.result = None  # written: free the memory

    n = workers if workers is not None else default_workers(len(todo))
    try:
        if todo:
            lone = len(todo) == 1 and not quiet and log.console.is_terminal
            tasks = [Task(r.run_id, r.cfg, str(base_dir), file, show_progress=lone, catalog=catalog) for r in todo]
            with make_backend(backend, n, ray_address) as be, log:  # pool first: fork before the bar's thread
                for i, res in be.imap_unordered(run_task, tasks):
                    if isinstance(res, BaseException):  # the worker process itself died
                        res = TaskResult(tasks[i].run_id, error=f"{type(res).__name__}: {res}", kind="internal")
                    finished[res.run_id] = res
                    log.finished(res)
                    if not strict:
                        write_ready()
        if strict:
            bad = [finished[r.run_id] for r in todo if finished[r.run_id].kind == "bad_input"]
            if bad:
                raise ConfigError(bad[0].error)
            write_ready()
    except KeyboardInterrupt:
        remove_temp_dirs(exp_dir, list(runs))
        for r in plan.runs:  # the interrupt may land after a run's directory is in place, before `done` knows it
            if r.run_id not in done and is_complete(exp_dir / r.run_id, r.config_text):
                done[r.run_id] = json.loads((exp_dir / r.run_id / "summary.json").read_text())
        if exp_dir.is_dir():
            write_tables(plan, exp_dir, done, finished, report=False)
        raise
    rows = write_tables(plan, exp_dir, done, finished, report=len(plan.runs) > 1) if done or finished else []
    failures = [finished[r.run_id] for r in todo if finished[r.run_id].kind != "ok"]
    return SweepOutcome(exp_dir, rows, done, failures, skipped)


def write_tables(
    plan: Plan, exp_dir: Path, done: dict[str, dict[str, Any]], finished: dict[str, TaskResult], report: bool
) -> list[dict[str, Any]]:
    """runs.csv (every complete or failed run of the plan, in plan order) and the experiment report."""
    from sim.output.run_files import scalar_fields, write_runs_csv

    rows = []
    for r in plan.runs:
        point = {k: csv_value(v) for k, v in r.point.items()}
        if r.run_id in done:
            rows.append({"run_id": r.run_id, "status": "ok", "error": "", **point, **scalar_fields(done[r.run_id])})
        elif r.run_id in finished and finished[r.run_id].kind != "ok":  # (ok but unwritten: interrupted)
            error = " | ".join(finished[r.run_id].error.splitlines())
            rows.append({"run_id": r.run_id, "status": "failed", "error": error, **point, "name": plan.name, "scheduler": r.cfg.scheduler.name})
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_runs_csv(exp_dir, rows, first=list(plan.sweep_keys))
    if report:
        from sim.output.experiment_report import experiment_report_html
        from sim.output.run_files import write_text_atomic

        write_text_atomic(exp_dir / "report.html", experiment_report_html(plan.name, rows, list(plan.sweep_keys)))
    return rows
