"""The early-exit keys of summary.json: operating point, mismatch, executed depth, generation time saved.

The time saved is measured against a paired run: the same config and seed with early exit off, so the
same prompts and response lengths (the workload stream is drawn before anything else). Simulating the
pair keeps all the work out of the engine's hot path and is exact under every scheduler, including
those whose decisions depend on timing (docs/early_exit.md, "What a run reports").
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from sim.catalog import Catalog, ModelSpec
from sim.config.models import ExperimentConfig
from sim.perf.early_exit import EarlyExit
from sim.recording import Recorder

#: the keys a run with early exit adds to summary.json (docs/metrics.md)
KEYS = (
    "early_exit_policy", "early_exit_threshold", "early_exit_chosen_by", "early_exit_max_mismatch",
    "early_exit_mismatch_fraction", "early_exit_mean_exit_fraction", "early_exit_exit_layers", "early_exit_check",
    "early_exit_depth_fraction_per_step", "early_exit_depth_fraction_per_token", "early_exit_full_depth_generation_s",
    "early_exit_generation_s_saved", "early_exit_generation_time_saved_fraction", "early_exit_profile_model",
    "early_exit_profile_layers", "early_exit_layer_mapping", "early_exit_warnings",
)  # fmt: skip


# Full-depth generation times already simulated in this process (a sweep over early-exit settings repeats
# the same baseline): a cache of a pure function of (config without early exit, base dir, catalog).
_BASELINES: dict[tuple[str, str, int], tuple[Any, float]] = {}
_BASELINES_MAX = 64


def full_depth_generation_s(cfg: ExperimentConfig, base_dir: Path, catalog: Catalog) -> float:
    """Mean generation window per iteration of the same run at full depth (simulated once per process)."""
    key_cfg = cfg.model_copy(update={"name": "-", "early_exit": None, "compare": [], "sweep": {}})
    key = (key_cfg.model_dump_json(), str(Path(base_dir).resolve()), id(catalog))
    hit = _BASELINES.get(key)
    if hit is not None and hit[0]() is catalog:
        return hit[1]
    from sim.simulation import simulate

    value = simulate(full_depth_config(cfg), base_dir, catalog).summary["phases"]["generation"]
    if len(_BASELINES) >= _BASELINES_MAX:
        _BASELINES.pop(next(iter(_BASELINES)))
    _BASELINES[key] = (weakref.ref(catalog), value)
    return value


def full_depth_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The same experiment with early exit switched off (everything else, the seed included, unchanged)."""
    assert cfg.early_exit is not None
    return cfg.model_copy(update={"early_exit": cfg.early_exit.model_copy(update={"enabled": False})})


def early_exit_summary(
    cfg: ExperimentConfig,
    ee: EarlyExit,
    actor: ModelSpec,
    rec: Recorder,
    summary: dict[str, Any],
    base_dir: Path,
    catalog: Catalog,
    baseline_generation_s: float | None = None,
) -> dict[str, Any]:
    """summary.json's early_exit_* keys for a finished run with early exit on.

    `baseline_generation_s` (mean generation window per iteration at full depth) is simulated here when
    not given and `early_exit.full_depth_baseline` is on.
    """
    assert cfg.early_exit is not None
    out = ee.describe(actor)
    out["early_exit_max_mismatch"] = cfg.early_exit.max_mismatch
    gen = [c for (_, phase), c in rec.counters.items() if phase == "generation"]
    steps = sum(c.get("decode_steps", 0.0) for c in gen)
    step_tokens = sum(c.get("early_exit_step_tokens", 0.0) for c in gen)
    depth_steps = sum(c.get("early_exit_depth_steps", 0.0) for c in gen)
    depth_tokens = sum(c.get("early_exit_depth_tokens", 0.0) for c in gen)
    out["early_exit_depth_fraction_per_step"] = depth_steps / steps if steps else None
    out["early_exit_depth_fraction_per_token"] = depth_tokens / step_tokens if step_tokens else None
    if baseline_generation_s is None and cfg.early_exit.full_depth_baseline:
        baseline_generation_s = full_depth_generation_s(cfg, base_dir, catalog)
    this = summary["phases"]["generation"]
    if baseline_generation_s is None:
        out["early_exit_full_depth_generation_s"] = out["early_exit_generation_s_saved"] = None
        out["early_exit_generation_time_saved_fraction"] = None
    else:
        out["early_exit_full_depth_generation_s"] = baseline_generation_s
        out["early_exit_generation_s_saved"] = baseline_generation_s - this
        out["early_exit_generation_time_saved_fraction"] = (baseline_generation_s - this) / baseline_generation_s if baseline_generation_s > 0 else None
    out["early_exit_warnings"] = list(ee.choice.warnings)
    return {k: out[k] for k in KEYS}
