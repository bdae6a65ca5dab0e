"""Latency models: `roofline` (analytic, the default) and `table` (measured decode steps from a CSV)."""

from __future__ import annotations

from pathlib import Path

from sim.catalog import GpuSpec
from sim.config.models import PerfConfig
from sim.perf.base import PerfModel, ReplicaPerf, StepCoeffs, steps_sum_s, steps_within
from sim.perf.roofline import RooflineModel, RooflineParams

__all__ = ["PerfModel", "ReplicaPerf", "StepCoeffs", "RooflineModel", "RooflineParams", "build_perf", "steps_sum_s", "steps_within"]

ROOFLINE_OVERRIDES = (
    "hbm_efficiency", "mfu_prefill", "mfu_decode", "mfu_train", "layer_overhead_s", "step_overhead_s",
    "allreduce_latency_s", "network_efficiency",
)  # fmt: skip


def roofline_params(cfg: PerfConfig) -> RooflineParams:
    return RooflineParams().with_overrides({k: getattr(cfg, k) for k in ROOFLINE_OVERRIDES})


def build_perf(cfg: PerfConfig, gpu: GpuSpec, base_dir: Path) -> PerfModel:
    """The performance model an experiment's `perf` section asks for."""
    params = roofline_params(cfg)
    if cfg.model == "table":
        from sim.perf.table import TableModel

        path = Path(cfg.table)  # type: ignore[arg-type]
        return TableModel(path if path.is_absolute() else base_dir / path, gpu, params)
    return RooflineModel(gpu, params)
