"""python -m sim.run FILE: load and validate an experiment, run it (its sweep and comparisons), write the results.

Exit status: 0 ok, 2 bad input (one message naming the file, the field and what was expected; no
traceback), 1 internal error or, in a sweep, any run that failed (each is recorded in runs.csv and the
other runs finish), 130 interrupted (finished runs are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TYPE_CHECKING = False  # (not typing's: this module imports little, so that `--help` does not wait for the simulator)
if TYPE_CHECKING:
    from typing import Any

BAD_INPUT, INTERNAL = 2, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sim.run", description=__doc__.splitlines()[0])
    ap.add_argument("file", help="experiment YAML file")
    ap.add_argument("--out", default="results", help="output directory (default: results/)")
    ap.add_argument("--set", action="append", default=[], metavar="dotted.key=value", help="override a config value (repeatable)")
    ap.add_argument(
        "--catalog", action="append", default=[], metavar="FILE",
        help="a user catalog YAML (gpus:/models:/datasets:/platforms:) adding or overriding entries (repeatable; docs/catalog.md)",
    )  # fmt: skip
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    ap.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute: a local process pool or Ray")
    ap.add_argument("--workers", type=int, default=None, help="parallel runs (default: min(CPU count, runs to do); 1 runs in this process)")
    ap.add_argument("--ray-address", default=None, help="join an existing Ray cluster (implies --backend ray)")
    ap.add_argument("--png", action="store_true", help="also export every figure as PNG under DIR/<name>/png/ (needs the plots extra)")
    return ap.parse_args(argv)


class Outcome:
    """What `execute` did: the complete runs' summaries (in plan order) and the sweep's outcome."""

    def __init__(self, summaries: list[dict[str, Any]], sweep: Any, is_sweep: bool, sweep_keys: list[str]):
        self.summaries, self.sweep, self.is_sweep, self.sweep_keys = summaries, sweep, is_sweep, sweep_keys


def execute(args: argparse.Namespace) -> Outcome:
    """Expand the experiment (sweep grid x schedulers), run what is not complete yet, write the results."""
    from sim.errors import ConfigError
    from sim.config.loading import add_catalogs, apply_overrides, read_yaml_file, resolve_catalog, validate
    from sim.sweep.driver import run_plan
    from sim.sweep.plan import expand, format_value

    path = Path(args.file)
    file = str(path)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected a positive number of parallel runs")
    raw = apply_overrides(read_yaml_file(path), args.set, file=file)
    raw = add_catalogs(raw, args.catalog, file=file)
    catalog = resolve_catalog(raw, file, path.resolve().parent)
    cfg = validate(raw, file, catalog)
    check_schedulers(cfg, {}, file)  # the compare names; each run's scheduler and params below
    plan = expand(raw, cfg, file, catalog)
    checked = set()
    for run in plan.runs:  # each distinct scheduler and params once (a sweep repeats them)
        key = (run.cfg.scheduler.name, format_value(run.cfg.scheduler.params))
        if key not in checked:
            checked.add(key)
            where = file if not plan.is_sweep else f"{file}: sweep point " + ", ".join(f"{k}={format_value(v)}" for k, v in run.point.items())
            check_schedulers(run.cfg, {run.run_id: run.cfg}, where)
    backend = "ray" if args.ray_address else args.backend
    outcome = run_plan(
        plan, Path(args.out), base_dir=path.resolve().parent, file=file, backend=backend, workers=args.workers,
        ray_address=args.ray_address, quiet=args.quiet, strict=not plan.is_sweep, catalog=catalog,
    )  # fmt: skip
    if args.png and outcome.summaries:
        from sim.output.experiment_report import export_png

        export_png(outcome.exp_dir, [r.run_id for r in plan.runs if r.run_id in outcome.summaries], outcome.rows, list(plan.sweep_keys))
    summaries = [outcome.summaries[r.run_id] for r in plan.runs if r.run_id in outcome.summaries]
    return Outcome(summaries, outcome, plan.is_sweep, list(plan.sweep_keys))


def check_schedulers(cfg: Any, variants: dict[str, Any], file: str) -> None:
    """Refuse unknown scheduler names (scheduler.name and compare) and bad scheduler.params before any run."""
    import numpy as np

    from pydantic import ValidationError

    from sim.build import make_scheduler
    from sim.config.messages import format_validation_error
    from sim.errors import ConfigError
    from sim.schedulers.registry import resolve

    for i, name in enumerate(cfg.compare):
        resolve(name, f"{file}: compare[{i}]")  # unknown names and broken plug-ins: ConfigError
    for variant in variants.values():
        cls = resolve(variant.scheduler.name, f"{file}: scheduler.name")
        try:
            cls.Params.model_validate(variant.scheduler.params)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, file, root=cls.Params, prefix="scheduler.params.")) from None
        make_scheduler(variant, np.random.default_rng(0), file=file)


def with_file(message: str, file: str) -> str:
    """Bad-input messages always start with the experiment file (runner/memory/workload errors may not)."""
    return message if message.startswith(file) else f"{file}: {message}"


def print_summary(summaries: list[dict[str, Any]], out: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{summaries[0]['name']}  ({summaries[0]['iterations']} iterations, results in {out}/{summaries[0]['name']}/)")
    table.add_column("metric")
    for s in summaries:
        table.add_column(f"{s['run_id']} ({s['deployment']})", justify="right")
    rows = [
        ("mean iteration (s)", "mean_iteration_s", "{:.1f}"),
        ("  generation (s)", "phases.generation", "{:.1f}"),
        ("  inference (s)", "phases.inference", "{:.1f}"),
        ("  training (s)", "phases.training", "{:.1f}"),
        ("  weight sync (s)", "phases.weight_sync", "{:.1f}"),
        ("start-up (s)", "startup_s", "{:.1f}"),
        ("steady step (s)", "steady_mean_iteration_s", "{:.1f}"),
        ("total time (s)", "total_time_s", "{:.1f}"),
        ("total cost (USD)", "total_cost_usd", "{:.2f}"),
        ("billed GPU-s", "billed_gpu_s", "{:,.0f}"),
        ("busy GPU-s", "busy_gpu_s", "{:,.0f}"),
        ("utilization", "utilization", "{:.1%}"),
        ("tokens generated", "tokens_generated", "{:,}"),
        ("USD per 1M tokens", "cost_per_million_tokens_usd", "{:.2f}"),
        ("preemptions", "preemptions", "{:,}"),
    ]
    for label, key, fmt in rows:
        vals = []
        for s in summaries:
            v: Any = s
            for part in key.split("."):
                v = v[part]
            vals.append(fmt.format(v))
        table.add_row(label, *vals)
    ee_rows = [
        ("early exit: operating point", early_exit_point),
        ("  token mismatch", lambda s: f"{s['early_exit_mismatch_fraction']:.2%}"),
        ("  depth per decode step", lambda s: f"{s['early_exit_depth_fraction_per_step']:.3f}" if s["early_exit_depth_fraction_per_step"] is not None else "-"),
        ("  generation time saved", lambda s: f"{s['early_exit_generation_time_saved_fraction']:.1%}" if s["early_exit_generation_time_saved_fraction"] is not None else "-"),
    ]  # fmt: skip
    if any("early_exit_mismatch_fraction" in s for s in summaries):
        for label, show in ee_rows:
            table.add_row(label, *(show(s) if "early_exit_mismatch_fraction" in s else "off" for s in summaries))
    console.print(table)
    main = summaries[0]
    for base, r in main.get("compare", {}).items():
        console.print(
            f"vs {base}: speedup {r['speedup']:.2f}x, cost reduction {r['cost_reduction']:.1%}, GPU-s reduction {r['gpu_s_reduction']:.1%}"
            " (every step, start-up included)"
        )
        if "steady_speedup" in r:
            console.print(
                f"vs {base}: speedup {r['steady_speedup']:.2f}x, cost reduction {r.get('steady_cost_reduction', float('nan')):.1%}, "
                f"GPU-s reduction {r.get('steady_gpu_s_reduction', float('nan')):.1%} (per step after start-up)"
            )


def early_exit_point(summary: dict[str, Any]) -> str:
    """'max_prob >= 0.99 (budget)': the early-exit operating point of a run and how it was chosen."""
    point = "stable" if summary["early_exit_threshold"] is None else f"{summary['early_exit_policy']} >= {summary['early_exit_threshold']:g}"
    return f"{point} ({summary['early_exit_chosen_by']})"


def print_warnings(summaries: list[dict[str, Any]]) -> None:
    """Each distinct warning the runs recorded (early_exit_warnings), once, on stderr."""
    seen: dict[str, None] = {}
    for s in summaries:
        for w in s.get("early_exit_warnings") or ():
            seen.setdefault(w, None)
    for w in seen:
        print(f"warning: {w}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.png:
            check_png()
        outcome = execute(args)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        from sim.errors import BadInput

        if isinstance(exc, BadInput):
            print(f"error: {with_file(str(exc), str(Path(args.file)))}", file=sys.stderr)
            return BAD_INPUT
        import traceback

        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return INTERNAL
    if not args.quiet and outcome.summaries:
        if outcome.is_sweep:
            from sim.sweep.progress import print_sweep_table

            print_sweep_table(outcome.sweep, outcome.sweep_keys)
        else:
            print_summary(outcome.summaries, args.out)
        print_warnings(outcome.summaries)
    failures = outcome.sweep.failures
    for res in failures:
        if res.kind == "internal":
            print(f"internal error: {res.error} (run {res.run_id})", file=sys.stderr)
            if res.detail:
                print(res.detail, file=sys.stderr, end="")
        else:
            print(f"error: run {res.run_id}: {res.error}", file=sys.stderr)
    if failures:
        total = len(outcome.sweep.rows)
        print(f"{len(failures)} of {total} runs failed (status and error in {outcome.sweep.exp_dir}/runs.csv)", file=sys.stderr)
        return INTERNAL
    return 0


def check_png() -> None:
    """--png needs kaleido (the plots extra); refuse before running anything."""
    from sim.errors import ConfigError

    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise ConfigError("--png: needs kaleido: pip install 'rlhf-sim[plots]' (and Chromium: apt-get install chromium)") from None


if __name__ == "__main__":
    sys.exit(main())
