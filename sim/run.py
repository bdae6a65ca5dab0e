"""python -m sim.run FILE: load and validate an experiment, run it (and its comparisons), write the results.

Exit status: 0 ok, 2 bad input (one message naming the file, the field and what was expected; no
traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

BAD_INPUT, INTERNAL = 2, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sim.run", description=__doc__.splitlines()[0])
    ap.add_argument("file", help="experiment YAML file")
    ap.add_argument("--out", default="results", help="output directory (default: results/)")
    ap.add_argument("--set", action="append", default=[], metavar="dotted.key=value", help="override a config value (repeatable)")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    ap.add_argument("--backend", choices=["local", "ray"], default="local", help="where sweep runs execute")
    ap.add_argument("--workers", type=int, default=None, help="parallel runs for sweeps (local backend)")
    ap.add_argument("--ray-address", default=None, help="join an existing Ray cluster")
    return ap.parse_args(argv)


def bad_input_types() -> tuple[type[BaseException], ...]:
    from sim.catalog import CatalogError
    from sim.config import ConfigError
    from sim.memory import InfeasibleError
    from sim.perf.table import TableError
    from sim.runner import NotImplementedYet
    from sim.workload import WorkloadError

    return (ConfigError, CatalogError, WorkloadError, InfeasibleError, NotImplementedYet, TableError)


def execute(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sim.config import load_config
    from sim.metrics import compare_ratios
    from sim.results import scalar_fields, write_run, write_runs_csv
    from sim.runner import NotImplementedYet, simulate
    from sim.workload import WorkloadError

    path = Path(args.file)
    cfg = load_config(path, args.set)
    if cfg.sweep:
        raise NotImplementedYet(f"{path}: sweep: sweeps are not implemented yet; remove the section or use --set")
    if args.backend != "local" or args.ray_address:
        raise NotImplementedYet("--backend ray / --ray-address: distributed sweeps are not implemented yet")
    base_dir = path.resolve().parent
    out = Path(args.out)
    names = list(dict.fromkeys([cfg.scheduler.name, *cfg.compare]))
    variants = {
        name: cfg if name == cfg.scheduler.name else cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"name": name, "params": {}})})
        for name in names
    }  # fmt: skip
    check_schedulers(cfg, variants, str(path))
    results = {}
    for name, variant in variants.items():
        try:
            results[name] = (variant, simulate(variant, base_dir, run_id=name))
        except WorkloadError as exc:
            field = "workload.trace" if cfg.workload.trace else "workload.dataset"
            raise WorkloadError(f"{path}: {field}: {exc}") from None
    main_summary = results[cfg.scheduler.name][1].summary
    if len(names) > 1:
        main_summary["compare"] = {n: compare_ratios(main_summary, results[n][1].summary) for n in names[1:]}
    records = []
    for name in names:
        variant, result = results[name]
        write_run(out, variant, result)
        records.append({"run_id": name, "status": "ok", "error": "", **scalar_fields(result.summary)})
    write_runs_csv(out / cfg.name, records)
    return [results[n][1].summary for n in names]


def check_schedulers(cfg: Any, variants: dict[str, Any], file: str) -> None:
    """Refuse unknown scheduler names (scheduler.name and compare) and bad scheduler.params before any run."""
    import numpy as np

    from pydantic import ValidationError

    from sim.catalog import suggest
    from sim.config import ConfigError, format_validation_error
    from sim.runner import make_scheduler
    from sim.schedulers.base import available

    found = available()
    for i, name in enumerate(cfg.compare):
        if name not in found:
            raise ConfigError(f"{file}: compare[{i}]: unknown scheduler {name!r}{suggest(name, list(found))}; available: {', '.join(sorted(found))}")
    for variant in variants.values():
        cls = found.get(variant.scheduler.name)
        if cls is not None and not hasattr(cls, "error"):
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
    console.print(table)
    main = summaries[0]
    for base, r in main.get("compare", {}).items():
        console.print(
            f"vs {base}: speedup {r['speedup']:.2f}x, cost reduction {r['cost_reduction']:.1%}, GPU-s reduction {r['gpu_s_reduction']:.1%}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bad = bad_input_types()
    except Exception:  # pragma: no cover - an import failure is an internal error
        traceback.print_exc()
        return INTERNAL
    try:
        summaries = execute(args)
    except bad as exc:
        print(f"error: {with_file(str(exc), str(Path(args.file)))}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return INTERNAL
    if not args.quiet:
        print_summary(summaries, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
