"""Sweeps and comparisons (design.md section 8): expand an experiment into runs, run them, resume, collect.

`sweep:` is a grid over dotted config paths: the cartesian product of the value lists, in the order given
(the last key varies fastest). Each grid point runs under `scheduler.name` and then under each `compare`
scheduler; a comparison run ignores the swept `scheduler.*` keys (its params are its defaults), so it is
run once and shared by the points that differ only there. Every point is validated like the file.

A run is one task, `run_task`: simulate, then build the run report. Tasks are mapped over a backend
(in-process, a local process pool, or Ray) and the driver writes each run directory atomically as its
result arrives, so an interrupted sweep resumes: a run whose directory is complete and whose config.yaml
equals the newly resolved config is skipped. Failed runs are recorded in runs.csv, never retried within
one invocation (running the command again retries them).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.config import ConfigError, ExperimentConfig, dump_config, set_path, validate

if TYPE_CHECKING:  # pragma: no cover
    from concurrent.futures import ProcessPoolExecutor

    from sim.catalog import Catalog

MAX_RUN_ID_CHARS = 120
FORBIDDEN_SWEEP_KEYS = ("name", "sweep", "compare", "catalogs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


# ------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its id (folder name), resolved config, swept values, and its baselines."""

    run_id: str
    cfg: ExperimentConfig
    config_text: str  # dump_config(cfg): what config.yaml holds (compared on resume)
    point: dict[str, Any] = field(default_factory=dict)  # swept key -> value, for the keys that apply to this run
    baselines: tuple[str, ...] = ()  # run ids this run is compared against (the point's compare runs)


@dataclass(frozen=True)
class Plan:
    name: str
    sweep_keys: tuple[str, ...]
    runs: tuple[PlannedRun, ...]

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep_keys)


def format_value(value: Any) -> str:
    """A swept value as written in a run id: YAML-like scalars, compact JSON for lists and mappings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def slug(scheduler: str, items: Iterable[tuple[str, Any]]) -> str:
    """A readable, filesystem-safe run id: `verl__cluster.nodes=2__scheduler.params.lambda=0.5`.

    Characters outside [A-Za-z0-9._=+,-] become '-'; an id longer than MAX_RUN_ID_CHARS is cut and given a
    hash of the full text, so shortening stays deterministic and distinct points stay distinct.
    """
    full = "__".join([scheduler, *(f"{k}={_slug_value(v)}" for k, v in items)])
    text = _UNSAFE.sub("-", full).lstrip(".-") or "run"
    if len(text) > MAX_RUN_ID_CHARS:
        digest = hashlib.sha1(full.encode()).hexdigest()[:10]
        text = text[: MAX_RUN_ID_CHARS - 12].rstrip("._=+,-") + "__" + digest
    return text


def _slug_value(value: Any) -> str:
    """A swept inline mapping with a `name` (an inline GPU or model) is written by its name in run ids."""
    if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
        return value["name"]
    return format_value(value)


def check_sweep(sweep: dict[str, list[Any]], file: str) -> None:
    """Refuse sweep keys that cannot be swept and value lists that are empty or repeat a value."""
    for key, values in sweep.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{file}: sweep.{key}: empty part in the dotted path {key!r}")
        if parts[0] in FORBIDDEN_SWEEP_KEYS:
            raise ConfigError(f"{file}: sweep.{key}: {parts[0]!r} cannot be swept (sweepable: any other dotted config path)")
        if not values:
            raise ConfigError(f"{file}: sweep.{key}: expected a non-empty list of values")
        shown = [format_value(v) for v in values]
        repeated = sorted({s for s in shown if shown.count(s) > 1})
        if repeated:
            raise ConfigError(f"{file}: sweep.{key}: value {repeated[0]} appears more than once")


def expand(raw: dict[str, Any], cfg: ExperimentConfig, file: str, catalog: "Catalog | None" = None) -> Plan:
    """The runs of an experiment: each grid point (validated like the file) under each scheduler, in grid order.

    `raw` is the file's mapping after `--set` overrides and `cfg` its validated form; `catalog` is the one
    the file was validated with (packaged + user catalogs), so a swept name from a user catalog resolves.
    """
    check_sweep(cfg.sweep, file)
    if catalog is None and cfg.sweep:
        from sim.config import resolve_catalog

        catalog = resolve_catalog(raw, file)  # the file's `catalogs:`, relative to the file
    keys = list(cfg.sweep)
    runs: list[PlannedRun] = []
    by_config: dict[str, str] = {}  # config text -> run id: identical runs (a shared comparison run) run once
    used: set[str] = set()

    def claim(run_id: str, text: str) -> str:
        """Distinct configs whose slugs coincide: the later one gets a suffix from its config's hash."""
        if run_id in used:
            run_id = f"{run_id}__{hashlib.sha1(text.encode()).hexdigest()[:8]}"
        used.add(run_id)
        by_config[text] = run_id
        return run_id

    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        point_cfg = cfg
        if keys:
            data = copy.deepcopy(raw)
            data.pop("sweep", None)
            where = f"{file}: sweep point " + ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
            for k, v in point.items():
                set_path(data, k.split("."), copy.deepcopy(v), origin=f"{where}: {k}")
            point_cfg = validate(data, where, catalog)
        names = list(dict.fromkeys([point_cfg.scheduler.name, *point_cfg.compare]))
        applies = {k: v for k, v in point.items() if not k.startswith("scheduler.")}
        main_text = dump_config(point_cfg)
        main_id = claim(slug(names[0], point.items()) if keys else names[0], main_text)
        new: list[PlannedRun] = []
        baselines: list[str] = []
        for name in names[1:]:
            variant = point_cfg.model_copy(update={"scheduler": point_cfg.scheduler.model_copy(update={"name": name, "params": {}})})
            text = dump_config(variant)
            if text not in by_config:
                new.append(PlannedRun(claim(slug(name, applies.items()) if keys else name, text), variant, text, applies))
            baselines.append(by_config[text])
        runs.append(PlannedRun(main_id, point_cfg, main_text, point, tuple(baselines)))
        runs.extend(new)
    return Plan(cfg.name, tuple(keys), tuple(runs))


# --------------------------------------------------------------------------------------------- tasks


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
    from sim.workload import WorkloadError

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


# ------------------------------------------------------------------------------------------ backends


class InProcess:
    """Runs tasks one after another in this process (one worker; also what tests can monkeypatch)."""

    def __enter__(self) -> "InProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        for i, task in enumerate(tasks):
            yield i, fn(task)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the driver, which cancels the sweep and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalPool:
    """A `concurrent.futures.ProcessPoolExecutor` of `workers` processes on this machine."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "LocalPool":
        from concurrent.futures import ProcessPoolExecutor  # only sweeps need it (and its multiprocessing imports)

        self.pool = ProcessPoolExecutor(self.workers, initializer=_ignore_sigint)
        self.pool.submit(int).result()  # start the workers now, before the progress bar starts its thread
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        assert self.pool is not None
        if exc_type is None:
            self.pool.shutdown(wait=True)
            return
        # interrupted or failed: drop queued tasks and stop the workers now, not after their current run
        processes = list(getattr(self.pool, "_processes", {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            proc.terminate()
        for proc in processes:
            proc.join(timeout=5)

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        """(index, result) in completion order; a task whose process died yields its exception instead."""
        from concurrent.futures import FIRST_COMPLETED, wait

        assert self.pool is not None
        futures = {self.pool.submit(fn, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=futures.__getitem__):
                exc = fut.exception()
                yield futures[fut], exc if exc is not None else fut.result()


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


class RayBackend:
    """Ray tasks: joins the cluster at `address`, or starts a local one bound to loopback with `workers` CPUs."""

    def __init__(self, workers: int, address: str | None):
        self.workers = workers
        self.address = address
        self.started = False
        self.refs: list[Any] = []

    def __enter__(self) -> "RayBackend":
        if self.address is None:
            for key, value in LOOPBACK_ENV.items():
                os.environ.setdefault(key, value)
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'rlhf-sim[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
            if self.address is None:
                options["num_cpus"] = self.workers
            else:
                options["address"] = self.address
            try:
                ray.init(**options)
            except (ConnectionError, ValueError) as exc:
                raise ConfigError(f"--ray-address {self.address}: cannot connect to a Ray cluster: {exc}") from None
            self.started = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            for ref in self.refs:
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:
                    pass
        if self.started:
            self.ray.shutdown()

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[tuple[int, Any]]:
        remote = self.ray.remote(num_cpus=1, max_retries=0)(fn)
        self.refs = [remote.remote(task) for task in tasks]
        index = {ref: i for i, ref in enumerate(self.refs)}
        pending = list(self.refs)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield index[ref], self.ray.get(ref)
                except Exception as exc:  # the worker died (a task's own errors are data)
                    yield index[ref], exc


def make_backend(kind: str, workers: int, address: str | None) -> InProcess | LocalPool | RayBackend:
    if kind == "ray" or address is not None:
        return RayBackend(workers, address)
    return InProcess() if workers <= 1 else LocalPool(workers)


# -------------------------------------------------------------------------------------------- driver


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
        from sim.output.report import experiment_report_html
        from sim.output.run_files import write_text_atomic

        write_text_atomic(exp_dir / "report.html", experiment_report_html(plan.name, rows, list(plan.sweep_keys)))
    return rows


class IterationBar:
    """A rich progress bar over the iterations of one run (when asked for: a lone run on a terminal)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled
        self.progress: Any = None

    def __enter__(self) -> "IterationBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn(f"{self.label}: iterations"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=Console(stderr=True), transient=True,
            )  # fmt: skip
            self.progress.start()
            self.bar = self.progress.add_task("iterations", total=self.total)
        return self

    def advance(self, iteration: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.bar)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class Log:
    """A rich progress bar over runs when stderr is a terminal, and one line per finished run (unless quiet)."""

    def __init__(self, quiet: bool, total: int):
        self.quiet = quiet
        self.total = total
        self.count = 0
        self.progress: Any = None
        self._console: Any = None

    @property
    def console(self) -> Any:
        """rich's console on stderr, made when first needed (a quiet run prints nothing: no rich import)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def __enter__(self) -> "Log":
        if not self.quiet and self.console.is_terminal and self.total > 1:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console, transient=True,
            )  # fmt: skip
            self.progress.start()
            self.bar = self.progress.add_task("runs", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def finished(self, res: TaskResult) -> None:
        self.count += 1
        if self.progress is not None:
            self.progress.advance(self.bar)
        width = len(str(self.total))
        head = f"[{self.count:>{width}}/{self.total}]"
        if res.kind == "ok":
            s = res.result.summary
            self.line(f"{head} ok     {res.run_id}: {s['mean_iteration_s']:.1f} s/iteration, {s['total_cost_usd']:.2f} USD ({res.elapsed_s:.1f} s)")
        else:
            self.line(f"{head} failed {res.run_id}: {' | '.join(res.error.splitlines())}")


def print_sweep_table(outcome: SweepOutcome, sweep_keys: list[str]) -> None:
    """One row per run (a sweep may have hundreds: the per-metric table of a single run would not fit)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(outcome.rows)} runs (results in {outcome.exp_dir}/)")
    table.add_column("run_id", overflow="fold")
    table.add_column("status")
    for col in ["s/iteration", "cost (USD)", "util.", "speedup"]:
        table.add_column(col, justify="right")
    for row in outcome.rows:
        if row["status"] != "ok":
            table.add_row(row["run_id"], "failed", "", "", "", "")
            continue
        speedups = [f"{row[k]:.2f}x vs {k.split('.')[1]}" for k in row if k.startswith("compare.") and k.endswith(".speedup")]
        table.add_row(
            row["run_id"], "ok", f"{row['mean_iteration_s']:.1f}", f"{row['total_cost_usd']:.2f}", f"{row['utilization']:.1%}",
            ", ".join(speedups),
        )  # fmt: skip
    Console().print(table)


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
