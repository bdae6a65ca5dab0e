"""Whole iterations: phase order, physical sanity, verl's choices, memory feasibility, conservation."""

from __future__ import annotations

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.hardware.memory import InfeasibleError
from sim.perf.base import steps_sum_s
from sim.perf.roofline import RooflineModel
from sim.simulation import simulate

from helpers import experiment


BASE = {
    "name": "t",
    "seed": 3,
    "iterations": 2,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 4, "max_response_tokens": 1024},
    "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "L40S"},
    "platform": {"kind": "serverful"},
    "scheduler": {"name": "verl"},
}


def config(**over):
    return experiment(BASE, **over)


def test_every_sample_finishes_once_with_its_full_length():
    result = simulate(config())
    assert len(result.generated) == 2
    for gen, fin in zip(result.generated, result.completion_s):
        assert len(gen) == 64
        assert np.all(np.isfinite(fin))
    assert result.summary["tokens_generated"] == int(sum(g.sum() for g in result.generated))


def test_generation_is_never_faster_than_the_longest_response_at_batch_one():
    cfg = config()
    result = simulate(cfg)
    cat = load_catalog()
    rep = RooflineModel(cat.gpu("L40S")).replica(cat.model("qwen2.5-0.5b"), 1)
    gen_rows = [r for r in result.iterations if r["phase"] == "generation"]
    for row, gen in zip(gen_rows, result.generated):
        longest = int(gen.max())
        lower_bound = steps_sum_s(rep.decode_coeffs(1), 1, 0, longest)
        assert row["duration_s"] >= lower_bound


def test_phases_run_in_order_and_tile_each_iteration():
    result = simulate(config())
    rows = result.iterations
    assert [r["phase"] for r in rows[:5]] == ["startup", "generation", "inference", "training", "weight_sync"]
    for a, b in zip(rows, rows[1:]):
        assert b["start_s"] == pytest.approx(a["end_s"])
    assert all(r["duration_s"] > 0 for r in rows)


def test_ppo_adds_critic_inference_and_training():
    grpo = simulate(config())
    ppo = simulate(config(workload__algorithm="ppo", workload__samples_per_prompt=4))
    assert ppo.summary["phases"]["training"] > 1.5 * grpo.summary["phases"]["training"]
    assert ppo.summary["phases"]["inference"] > grpo.summary["phases"]["inference"]


def test_learned_reward_model_costs_inference_time():
    rule = simulate(config())
    learned = simulate(config(reward_model="qwen2.5-0.5b"))
    assert learned.summary["phases"]["inference"] > rule.summary["phases"]["inference"]


def test_more_gpus_shorten_a_compute_heavy_iteration():
    heavy = dict(model="qwen2.5-3b", workload__prompts_per_iteration=64, workload__samples_per_prompt=8, iterations=1)
    small = simulate(config(**heavy))
    big = simulate(config(cluster__gpus_per_node=8, **heavy))
    assert big.summary["phases"]["training"] < 0.7 * small.summary["phases"]["training"]
    assert big.summary["mean_iteration_s"] < small.summary["mean_iteration_s"]


def test_tiny_model_training_is_bound_by_fsdp_collectives_not_gpu_count():
    """0.5B on PCIe L40S: the weight all-gathers dominate, so doubling GPUs barely helps (a real effect)."""
    small = simulate(config(iterations=1))
    big = simulate(config(cluster__gpus_per_node=8, iterations=1))
    assert big.summary["phases"]["training"] > 0.8 * small.summary["phases"]["training"]


def test_verl_picks_the_smallest_tensor_parallel_degree_that_fits():
    # 72B does not fit one 80 GB H100 at 0.6 memory; it needs tp >= 4 for weights + a useful KV cache
    cfg = config(model="qwen2.5-72b", cluster__gpu="H100-SXM", cluster__gpus_per_node=8, cluster__nodes=2,
                 workload__prompts_per_iteration=8, iterations=1, training__offload=True)
    result = simulate(cfg)
    assert result.summary["rollout_tp"] == 4
    assert result.summary["rollout_replicas"] == 4
    small = simulate(config(iterations=1))
    assert small.summary["rollout_tp"] == 1 and small.summary["rollout_replicas"] == 4


def test_a_model_that_cannot_fit_is_refused_with_the_phase_named():
    cfg = config(model="llama-3-70b", scheduler={"name": "verl", "params": {"tp": 1}}, iterations=1)
    with pytest.raises(InfeasibleError, match="generation"):
        simulate(cfg)


def test_training_that_cannot_fit_is_refused_unless_offloaded():
    # 14B on 2 L40S: 16 bytes/param x 14.7e9 / 2 GPUs = 118 GB per GPU of FSDP state
    base = dict(model="qwen2.5-14b", cluster__gpus_per_node=2, workload__prompts_per_iteration=4, iterations=1,
                scheduler={"name": "verl", "params": {"tp": 2, "gpu_memory_utilization": 0.8}})
    with pytest.raises(InfeasibleError, match="training"):
        simulate(config(**base))
    offloaded = simulate(config(training__offload=True, **base))
    assert offloaded.summary["phases"]["training"] > 0


def test_offloading_costs_time():
    plain = simulate(config())
    off = simulate(config(training__offload=True))
    assert off.summary["phases"]["training"] > plain.summary["phases"]["training"]


def test_same_seed_same_result_and_workload_independent_of_scheduler_stream():
    a = simulate(config())
    b = simulate(config())
    assert a.summary == b.summary
    c = simulate(config(seed=4))
    assert c.summary["tokens_generated"] != a.summary["tokens_generated"]


def test_step_mode_gives_the_same_run():
    a = simulate(config())
    s = simulate(config(engine__mode="step"))
    for fa, fs in zip(a.completion_s, s.completion_s):
        np.testing.assert_allclose(fa, fs, rtol=1e-9)
    assert s.summary["engine_events"] > a.summary["engine_events"]


def test_reserving_the_maximum_length_cuts_the_batch_and_lengthens_the_rollout():
    """vLLM admits on current tokens; static reservation of max_response_tokens (for comparison) admits far fewer."""
    heavy = dict(model="qwen2.5-7b", cluster__gpus_per_node=8, iterations=1, workload={
        "dataset": "livecodebench", "prompts_per_iteration": 128, "samples_per_prompt": 8, "max_response_tokens": 4096})
    current = simulate(config(**heavy))
    reserved = simulate(config(engine__admission="reserve_max", **heavy))
    assert current.summary["peak_decode_batch"] >= 2 * reserved.summary["peak_decode_batch"]
    assert reserved.summary["phases"]["generation"] > 1.15 * current.summary["phases"]["generation"]
    assert reserved.summary["tokens_generated"] == current.summary["tokens_generated"]
    assert reserved.summary["preemptions"] == 0


def test_reserve_admission_agrees_between_analytic_and_step_modes():
    small = dict(iterations=1, engine__admission="reserve_max", engine__max_num_seqs=8)
    a = simulate(config(**small))
    s = simulate(config(engine__mode="step", **small))
    for fa, fs in zip(a.completion_s, s.completion_s):
        np.testing.assert_allclose(fa, fs, rtol=1e-9)


@pytest.mark.parametrize(
    "over",
    [
        {},  # verl: nothing watches the replicas, they run unwatched
        {"platform": {"kind": "serverless"}, "scheduler": {"name": "serverless"}},
        {"workload__prompts_per_iteration": 64, "cluster__gpus_per_node": 1, "engine__gpu_memory_utilization": 0.06},  # preempts
    ],
)
def test_unwatched_replicas_change_no_result(monkeypatch, over):
    """A phase nobody watches lets its replicas run their batches without yielding; every number stays the same."""
    from sim.rollout.phase import GenerationPhase

    fast = simulate(config(**over))
    if "engine__gpu_memory_utilization" in over:
        assert fast.summary["preemptions"] > 0
    monkeypatch.setattr(GenerationPhase, "watching", property(lambda self: True))
    slow = simulate(config(**over))
    assert fast.summary == slow.summary
    assert fast.iterations == slow.iterations and fast.instances == slow.instances and fast.activities == slow.activities
    for a, b in zip(fast.completion_s, slow.completion_s):
        assert np.array_equal(a, b)


def test_replicas_are_watched_when_a_scheduler_observes_or_instances_can_crash():
    from sim.rollout.phase import GenerationPhase

    seen = []
    original = GenerationPhase.on_idle

    def spy(self, replica):
        seen.append(self.watching)
        original(self, replica)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GenerationPhase, "on_idle", spy)
        simulate(config(iterations=1))
        assert set(seen) == {False}  # verl
        seen.clear()
        simulate(config(iterations=1, platform={"kind": "serverless"}, scheduler={"name": "rlhfless"}))
        assert set(seen) == {True}  # observes generation (cut and migrate)
        seen.clear()
        simulate(config(iterations=1, platform={"kind": "serverless", "failures": {"mtbf_s": 1e6}}, scheduler={"name": "serverless"}))
        assert set(seen) == {True}
