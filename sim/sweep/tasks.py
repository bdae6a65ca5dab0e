"""One run of a sweep as a picklable task: simulate, then build the run report; errors come back as data.

A bad-input error is recorded as `bad_input` (runs.csv's error column), anything else as `internal` with its
traceback, so one failing run never stops a sweep. Where tasks run lives in backends.py.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sim.config.models import ExperimentConfig
from sim.sweep.progress import IterationBar

if TYPE_CHECKING:  # pragma: no cover
    from sim.catalog import Catalog


@dataclass(frozen=True)
class Task:
    """What a worker needs for one run (picklable: sent to pool processes and Ray workers)."""

    run_id: str
    cfg: ExperimentConfig
    base_dir: str
    file: str
    show_progress: bool = False  # a bar over iterations (a lone run in this process, on a terminal)
    catalog: "Catalog | None" = None  # packaged + user catalogs, sent along: workers need not read the files


@dataclass
class TaskResult:
    run_id: str
    result: Any = None  # sim.simulation.RunResult when the run succeeded
    report_html: str | None = None
    error: str = ""  # one line: what went wrong (runs.csv's error column)
    kind: str = "ok"  # ok | bad_input | internal
    detail: str = ""  # the traceback of an internal error
    elapsed_s: float = 0.0


def run_task(task: Task) -> TaskResult:
    """Simulate one run and build its report; any error is returned as data (a sweep goes on)."""
    from sim import simulation
    from sim.output.report import run_report_html
    from sim.errors import BadInput
    from sim.errors import WorkloadError

    started = time.perf_counter()
    try:
        with IterationBar(task.cfg.iterations, task.run_id, task.show_progress) as bar:
            result = simulation.simulate(task.cfg, task.base_dir, catalog=task.catalog, run_id=task.run_id, on_iteration=bar.advance)
        html = run_report_html(result.summary, result.iterations, result.instances, result.activities)
        return TaskResult(task.run_id, result, html, elapsed_s=time.perf_counter() - started)
    except BadInput as exc:
        message = str(exc)
        if isinstance(exc, WorkloadError):
            message = f"{'workload.trace' if task.cfg.workload.trace else 'workload.dataset'}: {message}"
        if message.startswith(f"{task.file}: "):
            message = message[len(task.file) + 2 :]
        return TaskResult(task.run_id, error=message, kind="bad_input", elapsed_s=time.perf_counter() - started)
    except Exception as exc:
        return TaskResult(
            task.run_id, error=f"{type(exc).__name__}: {exc}", kind="internal", detail=traceback.format_exc(),
            elapsed_s=time.perf_counter() - started,
        )  # fmt: skip
