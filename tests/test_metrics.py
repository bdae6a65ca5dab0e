"""Tests for sim/metrics.py: the tables and summary add up (docs/metrics.md gives the definitions).

Two kinds of check: conservation laws on a real small run (billed GPU-seconds are neither lost nor
double-counted, busy + idle = billed, the phase windows tile time, tokens generated = tokens asked for),
and hand-computed numbers on a tiny synthetic record that pins down each definition.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.config import BillingConfig, ExperimentConfig, validate
from sim.metrics import INSTANCE_COLUMNS, ITERATION_COLUMNS, PHASE_ORDER, build_tables, compare_ratios
from sim.resources.billing import InstanceRecord
from sim.simulation import RunResult, simulate
from sim.recording import Recorder
from sim.schedulers.base import Slot
from sim.workload import make_workload

PHASES = [p for p in PHASE_ORDER if p != "startup"]  # every iteration's phases
GPUS = 8
SMALL: dict[str, Any] = {
    "name": "metrics",
    "seed": 0,
    "iterations": 2,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "algorithm": "grpo", "prompts_per_iteration": 16, "samples_per_prompt": 4},
    "cluster": {"nodes": 1, "gpus_per_node": GPUS, "gpu": "L40S"},
    "platform": {"kind": "serverful"},
    "scheduler": {"name": "verl"},
}


def config(scheduler: str = "verl", **platform: Any) -> ExperimentConfig:
    raw = copy.deepcopy(SMALL)
    raw["scheduler"]["name"] = scheduler
    raw["platform"]["kind"] = "serverful" if scheduler == "verl" else "serverless"
    raw["platform"].update(platform)
    return validate(raw, "test_metrics")


def run(scheduler: str = "verl", **platform: Any) -> tuple[ExperimentConfig, RunResult]:
    cfg = config(scheduler, **platform)
    return cfg, simulate(cfg)


@pytest.fixture(scope="module")
def serverful() -> tuple[ExperimentConfig, RunResult]:
    return run("verl")


@pytest.fixture(scope="module", params=["verl", "serverless"])
def small(request: pytest.FixtureRequest, serverful) -> tuple[ExperimentConfig, RunResult]:
    """The same small workload on each deployment: the conservation laws hold for both."""
    return serverful if request.param == "verl" else run(request.param)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# ------------------------------------------------------------------------------- conservation


def test_rows_have_the_documented_columns(small) -> None:
    _, res = small
    assert all(list(r) == ITERATION_COLUMNS for r in res.iterations)
    assert all(list(r) == INSTANCE_COLUMNS for r in res.instances)


def test_billed_gpu_seconds_are_neither_lost_nor_double_counted(small) -> None:
    _, res = small
    s = res.summary
    assert s["total_time_s"] > 0
    assert sum(r["billed_gpu_s"] for r in res.iterations) == s["billed_gpu_s"]
    assert close(sum(i["billed_gpu_s"] for i in res.instances), s["billed_gpu_s"])
    assert s["gpus"] == GPUS


def test_serverful_bills_every_gpu_for_the_rounded_wall_time(serverful) -> None:
    _, res = serverful
    s = res.summary
    # 1 s granularity: every GPU billed for the wall time rounded up to a whole second
    assert close(s["billed_gpu_s"], GPUS * math.ceil(s["total_time_s"]))
    assert len(res.instances) == GPUS
    assert all(i["cold_start"] is False for i in res.instances)  # held from the start
    assert s["deployment"] == "serverful" and s["cold_starts"] == 0


def test_each_row_busy_plus_idle_is_billed(small) -> None:
    _, res = small
    for r in res.iterations:
        assert r["busy_gpu_s"] >= 0 and r["idle_gpu_s"] >= 0
        assert r["busy_gpu_s"] <= r["billed_gpu_s"] + 1e-9, r
        assert close(r["busy_gpu_s"] + r["idle_gpu_s"], r["billed_gpu_s"]), r
        assert r["idle_within_phase_gpu_s"] >= 0 and r["idle_between_phases_gpu_s"] >= 0
        assert close(r["idle_within_phase_gpu_s"] + r["idle_between_phases_gpu_s"], r["idle_gpu_s"]), r
        # a window's busy GPU-seconds cannot exceed every GPU busy for the whole window
        assert r["busy_gpu_s"] <= GPUS * r["duration_s"] + 1e-9


def test_phases_tile_time(small) -> None:
    cfg, res = small
    rows = res.iterations
    startup = [(0, "startup")] if res.summary["deployment"] == "serverful" else []  # a serverful job starts up first
    assert [(r["iteration"], r["phase"]) for r in rows] == startup + [(i, p) for i in range(cfg.iterations) for p in PHASES]
    assert rows[0]["start_s"] == 0.0
    for prev, row in zip(rows, rows[1:]):
        assert row["start_s"] == prev["end_s"]
    for r in rows:
        assert r["end_s"] >= r["start_s"]
        assert close(r["duration_s"], r["end_s"] - r["start_s"])
    assert rows[-1]["end_s"] == res.summary["total_time_s"]


def test_instances_billed_at_least_busy(small) -> None:
    _, res = small
    for inst in res.instances:
        assert 0 <= inst["busy_s"] <= inst["billed_s"]
        assert inst["busy_s"] <= inst["released_s"] - inst["requested_s"] + 1e-9
        assert inst["billed_gpu_s"] == inst["billed_s"] * inst["gpus"]
        assert inst["requested_s"] <= inst["ready_s"] <= inst["released_s"]


def test_instance_busy_matches_the_busy_gpu_seconds(serverful) -> None:
    _, res = serverful
    # serverful, one instance per GPU: per-GPU busy seconds add up to the rows' busy GPU-seconds
    assert close(sum(i["busy_s"] for i in res.instances), res.summary["busy_gpu_s"])


def test_summary_totals_and_ratios(small) -> None:
    _, res = small
    s, rows = res.summary, res.iterations
    assert close(s["busy_gpu_s"], sum(r["busy_gpu_s"] for r in rows))
    assert close(s["idle_gpu_s"], s["billed_gpu_s"] - s["busy_gpu_s"])
    assert close(s["idle_within_phase_gpu_s"] + s["idle_between_phases_gpu_s"], s["idle_gpu_s"])
    assert close(s["utilization"], s["busy_gpu_s"] / s["billed_gpu_s"])
    assert 0 < s["utilization"] <= 1
    assert s["cold_starts"] == sum(r["cold_starts"] for r in rows) == sum(i["cold_start"] for i in res.instances)
    price = load_catalog().gpu("L40S").price_usd_per_gpu_hour
    assert s["price_usd_per_gpu_hour"] == price
    assert close(s["total_cost_usd"], s["billed_gpu_s"] * price / 3600)
    assert close(s["total_cost_usd"], sum(r["cost_usd"] for r in rows))
    assert close(s["tokens_per_s"], s["tokens_generated"] / s["total_time_s"])
    assert close(s["cost_per_million_tokens_usd"], s["total_cost_usd"] / s["tokens_generated"] * 1e6)


def test_iteration_and_phase_times(small) -> None:
    cfg, res = small
    s = res.summary
    # iterations run back to back from t = 0
    assert close(s["mean_iteration_s"] * cfg.iterations, s["total_time_s"])
    for p in PHASES:
        durations = [r["duration_s"] for r in res.iterations if r["phase"] == p]
        assert len(durations) == cfg.iterations
        assert close(s["phases"][p], sum(durations) / cfg.iterations)
    assert close(s["phases"]["startup"] * cfg.iterations, sum(r["duration_s"] for r in res.iterations if r["phase"] == "startup"))
    assert close(sum(s["phases"].values()), s["mean_iteration_s"])


def test_steady_state_is_the_second_half_of_the_iterations(small) -> None:
    cfg, res = small
    s = res.summary
    steady = range(max(1, cfg.iterations // 2), cfg.iterations)
    per_iter = {i: [r for r in res.iterations if r["iteration"] == i and r["phase"] != "startup"] for i in steady}
    assert close(s["steady_mean_iteration_s"], np.mean([rows[-1]["end_s"] - rows[0]["start_s"] for rows in per_iter.values()]))
    assert close(s["steady_cost_per_iteration_usd"], np.mean([sum(r["cost_usd"] for r in rows) for rows in per_iter.values()]))
    assert close(s["steady_billed_gpu_s_per_iteration"], np.mean([sum(r["billed_gpu_s"] for r in rows) for rows in per_iter.values()]))


def test_tokens_generated_are_the_workload_response_tokens(small) -> None:
    cfg, res = small
    # the runner's recipe: one generator from the seed, spawned into (workload, scheduler, platform)
    workload_rng, _, _ = np.random.default_rng(cfg.seed).spawn(3)
    dataset = load_catalog().dataset("gsm8k")
    workload = make_workload(cfg.workload, dataset, None, workload_rng, ".", model=cfg.model)  # the actor picks by_model
    expected = [workload.iteration(i).response_tokens for i in range(cfg.iterations)]
    assert len(res.generated) == cfg.iterations
    for i, want in enumerate(expected):
        assert len(want) == cfg.workload.prompts_per_iteration * cfg.workload.group_size
        # every sample finished with its full length (nothing cut, nothing lost)
        assert np.array_equal(res.generated[i], want)
        gen_row = next(r for r in res.iterations if r["iteration"] == i and r["phase"] == "generation")
        assert gen_row["tokens"] == int(want.sum())
        # every sample finishes inside the generation window
        assert np.all(res.completion_s[i] > gen_row["start_s"])
        assert np.all(res.completion_s[i] <= gen_row["end_s"] + 1e-9)
        assert np.isclose(res.completion_s[i].max(), gen_row["end_s"], rtol=1e-12)
    assert res.summary["tokens_generated"] == int(sum(w.sum() for w in expected))
    assert all(r["tokens"] == 0 for r in res.iterations if r["phase"] != "generation")


def test_simulate_is_deterministic(small) -> None:
    cfg, res = small
    again = simulate(cfg)
    assert again.summary == res.summary
    assert again.iterations == res.iterations
    assert again.instances == res.instances


# ------------------------------------------------------------------------------------- billing


def test_billing_granularity(serverful) -> None:
    _, base = serverful
    _, res = run(billing={"granularity_s": 60})
    total = res.summary["total_time_s"]
    assert total == base.summary["total_time_s"]  # billing does not change the timeline
    for inst in res.instances:
        assert inst["billed_s"] % 60 == 0
        assert inst["billed_s"] == 60 * math.ceil(total / 60)
    assert close(sum(r["billed_gpu_s"] for r in res.iterations), GPUS * 60 * math.ceil(total / 60))
    assert res.summary["busy_gpu_s"] == base.summary["busy_gpu_s"]
    for r in res.iterations:
        assert close(r["busy_gpu_s"] + r["idle_gpu_s"], r["billed_gpu_s"])
    # the rounding surplus is charged where the GPUs are released: the last window, as between-phase idle
    last, last_base = res.iterations[-1], base.iterations[-1]
    assert close(last["billed_gpu_s"] - last_base["billed_gpu_s"], res.summary["billed_gpu_s"] - base.summary["billed_gpu_s"])
    assert [r["billed_gpu_s"] for r in res.iterations[:-1]] == [r["billed_gpu_s"] for r in base.iterations[:-1]]


def test_billing_minimum_longer_than_the_run() -> None:
    _, res = run(billing={"minimum_s": 1000})
    assert res.summary["total_time_s"] < 1000
    assert res.summary["billed_gpu_s"] == pytest.approx(1000 * GPUS, rel=1e-12)
    assert all(inst["billed_s"] == 1000 for inst in res.instances)


def test_price_override_scales_cost_linearly() -> None:
    _, one = run(price_usd_per_gpu_hour=1.0)
    _, three = run(price_usd_per_gpu_hour=3.0)
    assert one.summary["price_usd_per_gpu_hour"] == 1.0
    assert close(one.summary["total_cost_usd"], one.summary["billed_gpu_s"] / 3600)
    assert close(three.summary["total_cost_usd"], 3 * one.summary["total_cost_usd"])
    assert close(three.summary["cost_per_million_tokens_usd"], 3 * one.summary["cost_per_million_tokens_usd"])
    for a, b in zip(one.iterations, three.iterations):
        assert close(b["cost_usd"], 3 * a["cost_usd"])
    assert three.summary["billed_gpu_s"] == one.summary["billed_gpu_s"]


def test_zero_price_gives_zero_cost() -> None:
    _, res = run(price_usd_per_gpu_hour=0.0)
    assert res.summary["total_cost_usd"] == 0.0
    assert res.summary["cost_per_million_tokens_usd"] == 0.0
    assert res.summary["billed_gpu_s"] > 0


# --------------------------------------------------------------------- definitions, by hand


A, B, C = Slot(0, 0), Slot(0, 1), Slot(0, 2)


def synthetic() -> tuple[Recorder, list[InstanceRecord]]:
    """Two windows: generation [0, 10], inference [10, 15]; three one-GPU instances.

    A and B are held over [0, 15]. A works [0, 10] and [10, 12]; B works [0, 4]. C is requested at 3, cold
    starts until 8 (billed from 3), does no work and is released at 20, after the last window.
    """
    rec = Recorder()
    rec.windows += [(0, "generation", 0.0, 10.0), (0, "inference", 10.0, 15.0)]
    rec.busy(0, "generation", "rollout", (A,), 0.0, 10.0)
    rec.busy(0, "generation", "rollout", (B,), 0.0, 4.0)
    rec.busy(0, "inference", "reference", (A,), 10.0, 12.0)
    rec.count(0, "generation", tokens=123.0, migrations=2.0)
    instances = [
        InstanceRecord("a", "colocated", (A,), 0.0, 0.0, 15.0, 0.0),
        InstanceRecord("b", "colocated", (B,), 0.0, 0.0, 15.0, 0.0),
        InstanceRecord("c", "rollout", (C,), 3.0, 8.0, 20.0, 3.0, cold_start=True),
    ]
    return rec, instances


def test_hand_computed_rows() -> None:
    rec, instances = synthetic()
    # granularity 4 s: A and B 15 s -> 16 s (1 s surplus each), C 17 s -> 20 s (3 s surplus)
    rows, inst = build_tables(rec, instances, BillingConfig(granularity_s=4.0), 1.0 / 3600)
    gen, inf = rows
    # generation: busy 10 (A) + 4 (B); billed 10 + 10 + 7 (C from 3); A and B worked, so within = 2*10 - 14
    assert gen["busy_gpu_s"] == 14.0
    assert gen["billed_gpu_s"] == 27.0
    assert gen["idle_gpu_s"] == 13.0
    assert gen["idle_within_phase_gpu_s"] == 6.0
    assert gen["idle_between_phases_gpu_s"] == 7.0  # C: billed, never worked in the window
    assert gen["cold_starts"] == 1 and gen["tokens"] == 123 and gen["migrations"] == 2
    assert gen["cost_usd"] == pytest.approx(27.0 / 3600)
    # inference: busy 2 (A); billed 5+5+5 overlap + surpluses A 1, B 1, C 3 + C's 5 s after the last window
    assert inf["busy_gpu_s"] == 2.0
    assert inf["billed_gpu_s"] == 25.0
    assert inf["idle_within_phase_gpu_s"] == 3.0  # only A worked: 1 GPU x 5 s - 2
    assert inf["idle_between_phases_gpu_s"] == 20.0
    assert inf["cold_starts"] == 0 and inf["tokens"] == 0
    assert gen["billed_gpu_s"] + inf["billed_gpu_s"] == sum(i["billed_gpu_s"] for i in inst) == 16 + 16 + 20
    assert [(i["instance_id"], i["busy_s"], i["billed_s"]) for i in inst] == [("a", 12.0, 16.0), ("b", 4.0, 16.0), ("c", 0.0, 20.0)]


def test_instance_busy_counts_only_its_own_lifetime() -> None:
    """One GPU hosting two instances in turn: each is credited with the work done while it held the GPU."""
    rec = Recorder()
    rec.windows.append((0, "generation", 0.0, 10.0))
    rec.busy(0, "generation", "rollout", (A,), 1.0, 3.0)
    rec.busy(0, "generation", "rollout", (A,), 6.0, 10.0)
    instances = [
        InstanceRecord("first", "rollout", (A,), 0.0, 0.0, 5.0, 0.0),
        InstanceRecord("second", "rollout", (A,), 5.0, 5.0, 10.0, 5.0),
    ]
    rows, inst = build_tables(rec, instances, BillingConfig(), 0.0)
    assert [i["busy_s"] for i in inst] == [2.0, 4.0]
    assert rows[0]["billed_gpu_s"] == 10.0 and rows[0]["busy_gpu_s"] == 6.0


def test_billing_minimum_per_instance_in_rows() -> None:
    rec, instances = synthetic()
    rows, inst = build_tables(rec, instances, BillingConfig(granularity_s=1.0, minimum_s=100.0), 0.0)
    assert [i["billed_s"] for i in inst] == [100.0, 100.0, 100.0]
    assert sum(r["billed_gpu_s"] for r in rows) == 300.0


# --------------------------------------------------------------------------------- comparisons


def summary(mean_s: float, cost: float, gpu_s: float) -> dict[str, float]:
    return {"mean_iteration_s": mean_s, "total_cost_usd": cost, "billed_gpu_s": gpu_s}


def test_compare_ratios() -> None:
    this, baseline = summary(10.0, 3.0, 600.0), summary(25.0, 4.0, 800.0)
    r = compare_ratios(this, baseline)
    assert r == {"speedup": pytest.approx(2.5), "cost_reduction": pytest.approx(0.25), "gpu_s_reduction": pytest.approx(0.25)}
    # a slower, dearer run has speedup < 1 and negative reductions
    r = compare_ratios(baseline, this)
    assert r["speedup"] == pytest.approx(0.4)
    assert r["cost_reduction"] == pytest.approx(1 - 4 / 3)
    assert r["gpu_s_reduction"] == pytest.approx(1 - 800 / 600)
    assert compare_ratios(this, this) == {"speedup": 1.0, "cost_reduction": 0.0, "gpu_s_reduction": 0.0}


def test_compare_ratios_steady_state() -> None:
    def steady(mean_s: float, cost: float, gpu_s: float) -> dict[str, float]:
        d = summary(100.0, 10.0, 1000.0)
        d.update(steady_mean_iteration_s=mean_s, steady_cost_per_iteration_usd=cost, steady_billed_gpu_s_per_iteration=gpu_s)
        return d

    r = compare_ratios(steady(5.0, 1.0, 30.0), steady(10.0, 4.0, 40.0))
    assert r["speedup"] == 1.0 and r["cost_reduction"] == 0.0  # whole-run ratios unchanged
    assert r["steady_speedup"] == pytest.approx(2.0)
    assert r["steady_cost_reduction"] == pytest.approx(0.75)
    assert r["steady_gpu_s_reduction"] == pytest.approx(0.25)
    # no steady state on one side: no steady ratios
    assert "steady_speedup" not in compare_ratios(steady(5.0, 1.0, 30.0), summary(10.0, 4.0, 40.0))


def test_compare_ratios_undefined_cases_are_nan() -> None:
    r = compare_ratios(summary(0.0, 1.0, 1.0), summary(0.0, 0.0, 0.0))
    assert all(math.isnan(v) for v in r.values())


# ------------------------------------------------------------------------------------- glossary


def test_every_reported_quantity_is_in_the_glossary(small) -> None:
    """docs/metrics.md defines every summary key and every column, so a new one must be documented."""
    from pathlib import Path

    from sim.output.run_files import ACTIVITY_COLUMNS

    glossary = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    _, res = small
    names = [*res.summary, *res.summary["phases"], *ITERATION_COLUMNS, *INSTANCE_COLUMNS, *ACTIVITY_COLUMNS]
    names += ["compare", "run_id", "status", "error"]
    names += list(compare_ratios(res.summary, res.summary))
    undocumented = sorted({n for n in names if f"`{n}`" not in glossary})
    assert undocumented == []
