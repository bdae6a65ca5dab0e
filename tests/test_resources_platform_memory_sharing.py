"""Whole runs on a memory-sharing platform: keep-alive, pre-warming, start-up accounting and the defaults."""

from __future__ import annotations

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.config import load_config
from sim.phases.iteration import startup_s
from sim.simulation import simulate
from sim.schedulers.base import GenerationPlan, Prewarm, register
from sim.schedulers.serverless import Serverless

from helpers import experiment

CAT = load_catalog()
BASE = {
    "name": "mem",
    "seed": 3,
    "iterations": 3,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 4, "max_response_tokens": 512},
    "cluster": {"nodes": 1, "gpus_per_node": 2, "gpu": "L40S"},
    "platform": {"kind": "serverless", "gpu_sharing": "memory"},
    # a rollout engine that leaves room: every role of the small model fits on a GPU at once
    "scheduler": {"name": "serverless", "params": {"gpu_memory_utilization": 0.3}},
}


def cold_starts_after_the_first_iteration(result) -> int:
    return sum(r["cold_starts"] for r in result.iterations if r["iteration"] > 0)


def test_keep_alive_matters_when_every_role_fits_in_memory_at_once():
    short = simulate(experiment(BASE, platform__keep_alive_s=0.0))
    long = simulate(experiment(BASE, platform__keep_alive_s=600.0))
    assert long.summary["cold_starts"] < short.summary["cold_starts"]
    assert cold_starts_after_the_first_iteration(long) == 0
    assert cold_starts_after_the_first_iteration(short) > 0
    # nothing needed to sleep: every instance stayed resident beside the others
    assert long.summary["sleeps"] == 0 and long.summary["wakes"] == 0
    assert long.summary["steady_mean_iteration_s"] < short.summary["steady_mean_iteration_s"]


class _PrewarmInference(Serverless):
    """The naive serverless baseline, pre-warming every inference role on all GPUs when generation starts."""

    name = "test-prewarm-inference"

    def plan_generation(self, view, batch) -> GenerationPlan:
        plan = super().plan_generation(view, batch)
        slots = tuple(s for n in range(view.nodes) for s in view.slots_on(n)) or plan.replicas[0].slots
        every = tuple(sorted({s for spec in plan.replicas for s in spec.slots} | set(slots), key=lambda s: (s.node, s.gpu)))
        roles = ["actor_logprob", "reference"]
        return GenerationPlan(plan.replicas, plan.assignment, prewarm=tuple(Prewarm(r, every) for r in roles))


@pytest.fixture
def prewarm_scheduler():
    """Registers the test scheduler for one test only (the registry is shared by the whole session)."""
    from sim.schedulers import base

    register(_PrewarmInference)
    yield _PrewarmInference.name
    base._REGISTRY.pop(_PrewarmInference.name, None)


def test_a_prewarmed_function_loaded_during_the_phase_before_is_ready_when_its_phase_begins(prewarm_scheduler):
    cfg = experiment(
        BASE, iterations=1, scheduler={"name": "test-prewarm-inference", "params": {"gpu_memory_utilization": 0.3}},
        workload={"dataset": "livecodebench", "prompts_per_iteration": 16, "samples_per_prompt": 4, "max_response_tokens": 2048},
        platform={"kind": "serverless", "gpu_sharing": "memory", "cold_start": {"container_s": 1, "engine_init_s": 2, "weights_from": "ssd"}},
    )  # fmt: skip
    result = simulate(cfg)
    window = next(r for r in result.iterations if r["phase"] == "inference")
    gen = next(r for r in result.iterations if r["phase"] == "generation")
    inference = [r for r in result.instances if r["role"] in ("actor_logprob", "reference")]
    assert len(inference) == 2 and all(r["cold_start"] for r in inference)
    # their loads overlapped generation (they were placed beside the computing rollout engines) ...
    assert all(r["ready_s"] < gen["end_s"] for r in inference)
    # ... so the inference phase starts its work at once: no start-up on the critical path
    first = min(a["start_s"] for a in result.activities if a["phase"] == "inference")
    assert first == pytest.approx(window["start_s"])
    assert window["cold_starts"] == 0
    # without the pre-warms the same phase waits for its functions' cold starts
    plain = simulate(cfg.model_copy(update={"scheduler": cfg.scheduler.model_copy(update={"name": "serverless"})}))
    window = next(r for r in plain.iterations if r["phase"] == "inference")
    first = min(a["start_s"] for a in plain.activities if a["phase"] == "inference")
    assert window["cold_starts"] > 0 and first > window["start_s"] + 3


def test_a_serverful_start_up_is_the_cold_start_of_its_models_from_the_configured_tier():
    cfg = experiment(
        BASE, iterations=2, scheduler={"name": "verl"},
        platform={"kind": "serverful", "cold_start": {"container_s": 3, "engine_init_s": 7, "weights_from": "ssd"}},
    )  # fmt: skip
    result = simulate(cfg)
    model = CAT.model("qwen2.5-0.5b")
    gpus = 2
    # the node reads the checkpoint once (the actor and the reference start from it), each GPU copies its
    # FSDP shard of the actor and of the reference, then the engines start
    expected = 3 + model.weight_bytes / 2.25e9 + 2 * (model.weight_bytes / gpus) / CAT.gpu("L40S").host_to_gpu_bandwidth_bytes_per_s + 7
    row = result.iterations[0]
    assert (row["iteration"], row["phase"]) == (0, "startup")
    assert row["duration_s"] == pytest.approx(expected)
    assert row["busy_gpu_s"] == 0 and row["billed_gpu_s"] == pytest.approx(gpus * expected)
    s = result.summary
    assert s["startup_s"] == pytest.approx(expected)
    # the steady keys are per step after start-up; the all-steps mean includes it
    per_step = [sum(r["duration_s"] for r in result.iterations if r["iteration"] == i and r["phase"] != "startup") for i in range(2)]
    assert s["steady_mean_iteration_s"] == pytest.approx(per_step[1])
    assert s["mean_iteration_s"] == pytest.approx((expected + sum(per_step)) / 2)
    one = simulate(experiment(BASE, iterations=1, scheduler={"name": "verl"}, platform=cfg.platform.model_dump()))
    assert one.summary["steady_mean_iteration_s"] == pytest.approx(one.summary["mean_iteration_s"] - one.summary["startup_s"])


@pytest.mark.parametrize("tier, slower", [("remote", True), ("dram", False)])
def test_start_up_follows_the_storage_tier(tier, slower):
    ssd = experiment(BASE, scheduler={"name": "verl"}, platform={"kind": "serverful", "cold_start": {"weights_from": "ssd"}})
    other = experiment(BASE, scheduler={"name": "verl"}, platform={"kind": "serverful", "cold_start": {"weights_from": tier}})
    from sim.simulation import simulate as run

    a, b = run(ssd).summary["startup_s"], run(other).summary["startup_s"]
    assert (b > a) if slower else (b < a)


def test_startup_s_of_a_serverful_run_matches_the_formula_for_ppo_with_a_reward_model():
    cfg = experiment(BASE, iterations=1, scheduler={"name": "verl"}, reward_model="qwen2.5-1.5b",
                     workload={"dataset": "gsm8k", "algorithm": "ppo", "prompts_per_iteration": 8, "max_response_tokens": 256},
                     platform={"kind": "serverful", "cold_start": {"container_s": 0, "engine_init_s": 0, "weights_from": "remote"}})  # fmt: skip
    result = simulate(cfg)
    actor, reward = CAT.model("qwen2.5-0.5b"), CAT.model("qwen2.5-1.5b")
    read = (actor.weight_bytes + reward.weight_bytes) / 0.19e9  # the critic starts from the actor's checkpoint
    copy = (3 * actor.weight_bytes + reward.weight_bytes) / 2 / CAT.gpu("L40S").host_to_gpu_bandwidth_bytes_per_s
    assert result.summary["startup_s"] == pytest.approx(read + copy)
    assert startup_s  # the formula lives in sim.phases.iteration.startup_s


def test_a_serverless_experiment_without_a_preset_shares_gpu_memory_and_hosted_presets_do_not(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "name: x\nmodel: qwen2.5-0.5b\nworkload: {dataset: gsm8k}\ncluster: {nodes: 1, gpu: L40S}\n"
        "platform: {kind: serverless}\nscheduler: {name: rlhfless}\n"
    )
    assert load_config(path).platform.gpu_sharing == "memory"
    for preset, sharing in [("self-hosted", "memory"), ("runpod", "exclusive"), ("modal", "exclusive")]:
        assert load_config(path, [f"platform.preset={preset}"]).platform.gpu_sharing == sharing


def test_startup_s_of_a_serverless_run_is_the_first_iterations_wait_for_its_functions():
    result = simulate(experiment(BASE, iterations=2, platform__cold_start={"container_s": 4, "engine_init_s": 6, "weights_from": "dram"}))
    s = result.summary
    first = {}
    for a in result.activities:
        if a["iteration"] == 0:
            first[a["phase"]] = min(first.get(a["phase"], np.inf), a["start_s"])
    waits = [first[r["phase"]] - r["start_s"] for r in result.iterations if r["iteration"] == 0 and r["phase"] in first]
    assert s["startup_s"] == pytest.approx(sum(waits))
    assert s["startup_s"] >= 3 * 10  # generation, inference and training each cold-started (10 s + copies)
