"""Sweeps and comparisons (design.md section 8): expand an experiment into runs, run them, resume, collect.

plan.py expands the `sweep:` grid and `compare` schedulers into runs with ids; tasks.py is one run
(simulate, then its report; errors as data); backends.py runs tasks in-process, on a process pool or on
Ray; driver.py writes run directories as results arrive, resumes and writes runs.csv; progress.py shows
bars and lines; notebook.py has `load_or_run`. The names below are re-exported for users and notebooks;
code inside sim/ imports from the defining module.
"""

from sim.sweep.backends import LOOPBACK_ENV, InProcess, LocalPool, RayBackend, make_backend
from sim.sweep.driver import SweepOutcome, csv_value, default_workers, run_plan, write_tables
from sim.sweep.notebook import load_or_run
from sim.sweep.plan import FORBIDDEN_SWEEP_KEYS, MAX_RUN_ID_CHARS, Plan, PlannedRun, check_sweep, expand, format_value, slug
from sim.sweep.progress import IterationBar, Log, print_sweep_table
from sim.sweep.tasks import Task, TaskResult, run_task

__all__ = [
    "FORBIDDEN_SWEEP_KEYS",
    "LOOPBACK_ENV",
    "MAX_RUN_ID_CHARS",
    "InProcess",
    "IterationBar",
    "LocalPool",
    "Log",
    "Plan",
    "PlannedRun",
    "RayBackend",
    "SweepOutcome",
    "Task",
    "TaskResult",
    "check_sweep",
    "csv_value",
    "default_workers",
    "expand",
    "format_value",
    "load_or_run",
    "make_backend",
    "print_sweep_table",
    "run_plan",
    "run_task",
    "slug",
    "write_tables",
]
