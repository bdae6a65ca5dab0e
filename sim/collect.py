"""After a run: its records turned into result tables and a summary (`RunResult`), priced and billed.

Billing intervals come from the platform (serverless) or the GPUs' lifetime (serverful,
sim/resources/billing.py); the tables and summary figures are sim/metrics.py's. This module only puts
them together with the run's metadata and the serverless and early-exit extras. Nothing here writes files
(sim/output/run_files.py does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.catalog import GpuSpec
from sim.config import ExperimentConfig
from sim.metrics import build_tables, summarize
from sim.recording import Recorder
from sim.resources.billing import lifetime_intervals, serverful_instances
from sim.schedulers.views import Slot

if TYPE_CHECKING:
    from sim.build import Run
    from sim.resources.platform import ServerlessPlatform


@dataclass
class RunResult:
    summary: dict[str, Any]
    iterations: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    completion_s: list[np.ndarray] = field(default_factory=list)
    generated: list[np.ndarray] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)  # busy intervals: for Gantt charts
    #: serverless: (instance, GPUs, bytes per GPU, start, end) of every period an instance held GPU memory
    residency: list[tuple[str, tuple[Slot, ...], float, float, float]] = field(default_factory=list)


def collect(run: Run, run_id: str | None = None) -> RunResult:
    """The finished run's tables, summary, per-sample arrays, busy intervals and memory residency."""
    ctx = run.ctx
    cfg, rec, platform, gpu = ctx.cfg, ctx.recorder, ctx.platform, ctx.gpu
    if platform is not None:
        instances, billed = platform.records(cfg.platform.billing)
    else:
        instances = serverful_instances(list(run.slots), ctx.env.now)
        billed = lifetime_intervals(instances)
    price = price_per_gpu_hour(cfg, gpu)
    rows, inst_rows = build_tables(rec, instances, cfg.platform.billing, price / 3600.0, billed, by_owner=platform is not None)
    meta = {
        "name": cfg.name, "run_id": run_id or cfg.scheduler.name, "scheduler": cfg.scheduler.name, "deployment": ctx.deployment,
        "seed": cfg.seed, "iterations": cfg.iterations, "model": ctx.actor.name, "gpu": gpu.name, "gpus": len(run.slots),
        "price_usd_per_gpu_hour": price,
    }  # fmt: skip
    summary = summarize(rows, inst_rows, meta, rec)
    summary["recipe"] = ctx.recipe.describe()
    summary.update(platform_summary(platform, rec))
    if ctx.perf.early_exit is not None:
        from sim.output.early_exit_report import early_exit_summary

        summary.update(early_exit_summary(cfg, ctx.perf.early_exit, ctx.actor, rec, summary, run.base_dir, run.catalog))
    residency = platform.residency() if platform is not None else []
    return RunResult(summary, rows, inst_rows, rec.completion_s, rec.generated, activity_rows(rec), residency)


def price_per_gpu_hour(cfg: ExperimentConfig, gpu: GpuSpec) -> float:
    """Explicit price, else the platform's (preset's) price for this GPU, else the catalog's on-demand price."""
    if cfg.platform.price_usd_per_gpu_hour is not None:
        return cfg.platform.price_usd_per_gpu_hour
    return cfg.platform.prices_usd_per_gpu_hour.get(gpu.name, gpu.price_usd_per_gpu_hour)


def platform_summary(platform: ServerlessPlatform | None, rec: Recorder) -> dict[str, Any]:
    """Serverless extras: start-up seconds, wakes and sleeps, queueing delay, failures and wasted GPU-seconds."""
    gen = [c for (_, phase), c in rec.counters.items() if phase == "generation"]
    lost_tokens = sum(c.get("lost_tokens", 0.0) for c in gen)
    retries = sum(c.get("retries", 0.0) for c in rec.counters.values())
    if platform is None:
        return {"cold_start_s": 0.0, "wakes": 0, "wake_s": 0.0, "sleeps": 0, "prewarms": 0, "queueing_s": 0.0, "failures": 0,
                "wasted_gpu_s": 0.0, "lost_tokens": 0, "retries": 0}  # fmt: skip
    return {
        "cold_start_s": platform.cold_start_time_s,
        "wakes": platform.wakes,
        "wake_s": platform.wake_time_s,
        "sleeps": platform.sleeps,
        "prewarms": platform.prewarms,
        "queueing_s": platform.queue_wait_s,
        "failures": platform.failures,
        "wasted_gpu_s": platform.wasted_gpu_s,
        "lost_tokens": int(lost_tokens),
        "retries": int(retries),
    }


def activity_rows(rec: Recorder) -> list[dict[str, Any]]:
    """Busy intervals as rows: iteration, phase, role, slots ("n0g1;n0g2"), start_s, end_s."""
    return [
        {
            "iteration": a.iteration,
            "phase": a.phase,
            "role": a.role,
            "slots": ";".join(f"n{s.node}g{s.gpu}" for s in a.slots),
            "start_s": float(a.start_s),
            "end_s": float(a.end_s),
            "instance_id": a.owner,
        }
        for a in rec.activities
    ]
