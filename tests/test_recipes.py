"""Recipes end to end (sim/recipes.py, sim/rollout/dynamic_sampling.py): per recipe the phases that run, the roles
instantiated and the GPU-seconds billed; the reference and the old-log-prob pass switched off; DAPO's
dynamic sampling rounds; schedulers reading the roles from the view."""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from sim.catalog import load_catalog
from sim.hardware.cluster import Cluster
from sim.config import validate
from sim.rollout.dynamic_sampling import DynamicSampler
from sim.recipes import RECIPES, Recipe
from sim.resources.roles import RoleBook
from sim.simulation import simulate
from sim.schedulers import base as sched_base
from sim.schedulers.base import Prewarm
from sim.schedulers.rlhfless import RLHFless
from sim.schedulers.verl import Verl
from sim.workload import make_workload

CAT = load_catalog()
SCHEDULERS = ["verl", "rlhfuse", "serverless", "rlhfless", "oracle"]

BASE = {
    "name": "recipes",
    "seed": 0,
    "iterations": 2,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 8, "samples_per_prompt": 4, "max_response_tokens": 256},
    "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "L40S"},
    # billing to the microsecond: GPU-second comparisons are exact, not rounded up to whole seconds
    "platform": {"kind": "serverless", "keep_alive_s": 0.0, "gpu_sharing": "exclusive", "billing": {"granularity_s": 1e-6}},
    "scheduler": {"name": "serverless"},
}

# per recipe (defaults, rule-based reward): the inference phase's roles in order, and the trained models
EXPECTED = {
    "grpo": (("actor_logprob", "reference"), ("actor",)),
    "ppo": (("actor_logprob", "reference", "critic"), ("actor", "critic")),
    "dapo": (("actor_logprob",), ("actor",)),  # no KL: no reference; 16 mini-batches: old log-probs recomputed
    "rloo": (("actor_logprob", "reference"), ("actor",)),
    "reinforce_pp": (("reference",), ("actor",)),  # one mini-batch, KL in the loss: on-policy, no old log-probs
}


def config(scheduler: str = "serverless", workload: dict | None = None, **top):
    raw = copy.deepcopy(BASE)
    raw["scheduler"] = {"name": scheduler}
    raw["workload"].update(workload or {})
    for key, value in top.items():
        raw[key] = value
    if scheduler in ("verl", "rlhfuse"):
        raw["platform"] = {"kind": "serverful", "billing": {"granularity_s": 1e-6}}
    return validate(raw, "test")


def activity_gpu_s(result, role: str, phase: str | None = None) -> float:
    return sum(
        (a["end_s"] - a["start_s"]) * len(a["slots"].split(";"))
        for a in result.activities
        if a["role"] == role and (phase is None or a["phase"] == phase)
    )


def window(result, iteration: int, phase: str) -> dict:
    return next(r for r in result.iterations if r["iteration"] == iteration and r["phase"] == phase)


# ------------------------------------------------------------------------------------------- per recipe
@pytest.mark.parametrize("algorithm", list(EXPECTED))
def test_each_recipe_runs_its_phases_and_instantiates_and_bills_only_its_roles(algorithm):
    roles, models = EXPECTED[algorithm]
    result = simulate(config("serverless", {"algorithm": algorithm}))
    assert result.summary["recipe"]["inference_roles"] == list(roles)
    assert result.summary["recipe"]["trained_models"] == list(models)
    for i in range(2):  # the four phases tile each iteration
        assert [r["phase"] for r in result.iterations if r["iteration"] == i] == ["generation", "inference", "training", "weight_sync"]
    # instances: rollout functions, one kind per inference role, one trainer per trained model, and nothing else
    billed: dict[str, float] = defaultdict(float)
    for row in result.instances:
        billed[row["role"]] += row["billed_gpu_s"]
    assert set(billed) == {"rollout", *roles, *(f"{m}_trainer" for m in models)}
    assert all(gpu_s > 0 for gpu_s in billed.values())
    # exclusive functions: the run bills exactly its instances' GPU-seconds, each role its own
    assert result.summary["billed_gpu_s"] == pytest.approx(sum(billed.values()), rel=1e-9)
    inference = {a["role"] for a in result.activities if a["phase"] == "inference"}
    training = {a["role"] for a in result.activities if a["phase"] == "training"}
    assert inference == set(roles) and training == set(models)


@pytest.mark.parametrize("algorithm", list(EXPECTED))
def test_verl_runs_a_recipes_inference_roles_one_after_another_in_order_and_bills_every_gpu(algorithm):
    roles, models = EXPECTED[algorithm]
    result = simulate(config("verl", {"algorithm": algorithm}))
    for i in range(2):
        first = {}
        for a in result.activities:
            if a["iteration"] == i and a["phase"] == "inference":
                first.setdefault(a["role"], a["start_s"])
        assert tuple(sorted(first, key=first.get)) == roles
    assert {a["role"] for a in result.activities if a["phase"] == "training"} == set(models)
    # serverful: every GPU billed for the whole run, start-up included
    assert result.summary["billed_gpu_s"] == pytest.approx(4 * result.summary["total_time_s"], rel=1e-6)


def test_recipe_defaults_are_resolved_into_the_config_and_the_dapo_recipe_matches_its_sources():
    cfg = config("verl", {"algorithm": "dapo", "samples_per_prompt": None})
    w = cfg.workload
    assert (w.samples_per_prompt, w.mini_batches, w.kl, w.dynamic_sampling.enabled) == (16, 16, "none", True)
    assert (w.dynamic_sampling.oversample, w.dynamic_sampling.max_rounds) == (3.0, 10)  # recipe/dapo scripts
    explicit = config("verl", {"algorithm": "dapo", "kl": "loss", "mini_batches": 2, "dynamic_sampling": {"enabled": False}})
    assert (explicit.workload.kl, explicit.workload.mini_batches, explicit.workload.dynamic_sampling.enabled) == ("loss", 2, False)
    for name, recipe in RECIPES.items():
        assert set(recipe.sources) >= {"samples_per_prompt", "mini_batches", "kl"}, name  # every default cites a source


# ------------------------------------------------------------------------------------------- no reference
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_dapo_without_a_reference_spends_nothing_on_one_and_the_same_run_with_it_costs_more(scheduler):
    off = simulate(config(scheduler, {"algorithm": "dapo"}))
    on = simulate(config(scheduler, {"algorithm": "dapo", "kl": "loss"}))
    assert off.summary["recipe"]["reference"] is False and on.summary["recipe"]["reference"] is True
    assert not [r for r in off.instances if r["role"] == "reference"]
    assert activity_gpu_s(off, "reference") == 0.0
    assert activity_gpu_s(on, "reference") > 0
    assert on.summary["total_cost_usd"] > off.summary["total_cost_usd"]
    assert on.summary["billed_gpu_s"] > off.summary["billed_gpu_s"]
    np.testing.assert_array_equal(np.concatenate(off.generated), np.concatenate(on.generated))  # same rollouts


def test_the_reference_costs_exactly_its_passes_and_its_start_up_copy_on_verl():
    """verl runs every phase in turn on all GPUs: the reference adds its pass to each inference phase and
    its weights' copy to the start-up, and every GPU is billed for that time."""
    off = simulate(config("verl", {"algorithm": "dapo"}))
    on = simulate(config("verl", {"algorithm": "dapo", "kl": "loss"}))
    ref_s = sum(a["end_s"] - a["start_s"] for a in on.activities if a["role"] == "reference")  # one group of all GPUs
    gpu = CAT.gpu("L40S")
    model = CAT.model("qwen2.5-0.5b")
    book = RoleBook(gpu, model, model, None, None, 8192, True, False)
    copy_s = book.spec("reference", 1, 4).first_load_bytes / Cluster(gpu, 1, 4).host_bw
    assert on.summary["startup_s"] - off.summary["startup_s"] == pytest.approx(copy_s, rel=1e-9)
    assert on.summary["total_time_s"] - off.summary["total_time_s"] == pytest.approx(ref_s + copy_s, rel=1e-9)
    # each GPU's lifetime is rounded up to the microsecond in both runs: 4 GPUs x 2 x 1e-6 at most
    assert on.summary["billed_gpu_s"] - off.summary["billed_gpu_s"] == pytest.approx(4 * (ref_s + copy_s), abs=1e-5)


def test_serverful_start_up_loads_only_the_recipes_models():
    startup = {a: simulate(config("verl", {"algorithm": a}, iterations=1)).summary["startup_s"] for a in ("grpo", "ppo", "dapo")}
    assert startup["dapo"] < startup["grpo"] < startup["ppo"]  # no reference < reference < reference + critic
    assert Recipe.from_config(config("verl", {"algorithm": "dapo"})).startup_roles == ("actor_trainer",)
    assert Recipe.from_config(config("verl", {"algorithm": "ppo"}, reward_model="qwen2.5-0.5b")).startup_roles == (
        "actor_trainer", "reference", "critic_trainer", "reward",
    )  # fmt: skip


def test_rlhfless_pre_warms_only_the_recipes_roles(recorders):
    """RLHFless pre-warms the next phases' functions from ClusterView.inference_roles / trained_models."""
    base = {"algorithm": "dapo", "dynamic_sampling": {"enabled": False}}
    memory = {"kind": "serverless", "gpu_sharing": "memory", "sleep_idle": True}  # pre-warms need not wait for free GPUs
    off = simulate(config("rlhfless", base, iterations=3, platform=memory))
    on = simulate(config("rlhfless", {**base, "kl": "loss"}, iterations=3, platform=memory))
    assert off.summary["prewarms"] > 0
    assert {r["role"] for r in off.instances} == {"rollout", "prefill", "actor_logprob", "actor_trainer"}
    assert "reference" in {r["role"] for r in on.instances}


# ------------------------------------------------------------------------------------------- old log-probs
@pytest.mark.parametrize(
    "workload, runs",
    [
        ({"algorithm": "grpo", "mini_batches": 1}, False),  # one optimizer step per step: on-policy, skipped
        ({"algorithm": "grpo", "mini_batches": 4}, True),
        ({"algorithm": "grpo", "mini_batches": 1, "ppo_epochs": 2}, True),  # two passes: the second is off-policy
        ({"algorithm": "rloo", "mini_batches": 1}, True),  # KL in the reward needs the log-probs before training
        ({"algorithm": "grpo", "mini_batches": 4, "old_logprob": False}, False),  # rollout log-probs instead
        ({"algorithm": "grpo", "mini_batches": 1, "old_logprob": True}, True),  # verl's default trainer
    ],
)
def test_old_logprob_auto_skips_the_pass_with_one_mini_batch_and_runs_it_with_several(workload, runs):
    result = simulate(config("verl", workload))
    assert result.summary["recipe"]["old_logprob"] is runs
    assert (activity_gpu_s(result, "actor_logprob") > 0) is runs
    serverless = simulate(config("serverless", workload))
    assert any(r["role"] == "actor_logprob" for r in serverless.instances) is runs


def test_skipping_the_old_logprob_pass_saves_exactly_that_pass():
    skip = simulate(config("verl", {"algorithm": "grpo", "mini_batches": 1}))
    keep = simulate(config("verl", {"algorithm": "grpo", "mini_batches": 1, "old_logprob": True}))
    pass_s = sum(a["end_s"] - a["start_s"] for a in keep.activities if a["role"] == "actor_logprob")
    assert keep.summary["total_time_s"] - skip.summary["total_time_s"] == pytest.approx(pass_s, rel=1e-9)
    assert keep.summary["startup_s"] == skip.summary["startup_s"]  # the pass runs on the actor's module: nothing to load


def test_an_inference_phase_with_no_roles_is_empty_and_unbilled_by_functions():
    """dapo with the old log-probs skipped and a rule-based reward scored in the rounds: nothing is left to
    infer, so the inference window is empty and no inference function starts."""
    result = simulate(config("serverless", {"algorithm": "dapo", "old_logprob": False}))
    assert result.summary["recipe"]["inference_roles"] == []
    for i in range(2):
        assert window(result, i, "inference")["duration_s"] == 0.0
    assert {r["role"] for r in result.instances} == {"rollout", "actor_trainer"}


# ------------------------------------------------------------------------------------------- dynamic sampling
def expected_rounds(cfg):
    """The rounds a run draws, rebuilt as sim/simulation.py builds them (workload stream 0, filter stream 3)."""
    streams = np.random.default_rng(cfg.seed).spawn(4)
    workload = make_workload(cfg.workload, CAT.dataset(cfg.workload.dataset), None, streams[0], Path("."), model=cfg.model)
    sampler = DynamicSampler(workload, cfg.workload.dynamic_sampling, cfg.workload.prompts_per_iteration, streams[3])
    return [sampler.step(i) for i in range(cfg.iterations)]


DS_SHORTFALL = {"oversample": 1.0, "refill": "shortfall", "max_rounds": 0}


@pytest.mark.parametrize("f", [0.25, 0.5])
def test_dynamic_sampling_generates_about_one_over_one_minus_f_times_the_rollouts(f):
    """To keep K groups when each is filtered with probability f, about K / (1 - f) must be drawn.

    Tolerance 0.90..1.12 x 1/(1-f): the number drawn is negative-binomial, relative sd sqrt(f / K) (1.8 % at
    f = 0.25, 2.6 % at 0.5 with K = 12 x 64 = 768 kept groups), and the last round's surplus is dropped
    (verl's batch[:traj_bsz]), a bias of a few percent upward; over 12 seeds the ratio stayed within
    0.93..1.09. Tokens follow the samples: the extra prompts have the same length distribution (their mean
    over ~10^3 prompts differs by about 2 %, so 6 % between the two ratios).
    """
    over = {"algorithm": "dapo", "prompts_per_iteration": 64, "mini_batches": 4, "dynamic_sampling": {**DS_SHORTFALL, "filtered_fraction": f}}
    ds = simulate(config("verl", over, iterations=12)).summary
    plain = simulate(config("verl", {**over, "dynamic_sampling": {"enabled": False}}, iterations=12)).summary
    samples = ds["samples_generated"] / plain["samples_generated"]
    tokens = ds["tokens_generated"] / plain["tokens_generated"]
    assert 0.90 <= samples * (1 - f) <= 1.12, samples
    assert 0.90 <= tokens * (1 - f) <= 1.12, tokens
    assert tokens / samples == pytest.approx(1.0, abs=0.06)
    assert ds["generation_rounds"] > 1
    assert ds["samples_trained"] == plain["samples_trained"] == 12 * 64 * 4  # every batch filled
    assert ds["groups_filtered"] == pytest.approx(f * ds["samples_generated"] / 4, rel=0.15)


def test_dynamic_sampling_with_verls_three_fold_batches_needs_one_round_and_triples_the_rollouts():
    """verl's recipe draws 3 x the batch per round: at f = 0.3 a round keeps 0.7 x 3 = 2.1 batches on average
    (the chance that 48 groups keep fewer than 16 is below 1e-9), so each step is one round of 3x."""
    over = {"algorithm": "dapo", "prompts_per_iteration": 16, "dynamic_sampling": {"filtered_fraction": 0.3}}
    ds = simulate(config("verl", over, iterations=3)).summary
    plain = simulate(config("verl", {**over, "dynamic_sampling": {"enabled": False}}, iterations=3)).summary
    assert ds["generation_rounds"] == 1.0
    assert ds["samples_generated"] == 3 * plain["samples_generated"] == 3 * 3 * 16 * 4
    assert ds["samples_trained"] == plain["samples_trained"]
    assert ds["tokens_generated"] == pytest.approx(3 * plain["tokens_generated"], rel=0.1)


def test_dynamic_sampling_generates_every_drawn_sample_once_and_trains_on_the_kept_groups_only(recorders):
    cfg = config("rlhfless", {"algorithm": "dapo", "dynamic_sampling": {**DS_SHORTFALL, "filtered_fraction": 0.6}}, iterations=3)
    result = simulate(cfg)
    rec = recorders[-1]
    steps = expected_rounds(cfg)
    assert any(len(s.rounds) > 1 for s in steps)
    for i, step in enumerate(steps):
        np.testing.assert_array_equal(result.generated[i], np.concatenate([r.response_tokens for r in step.rounds]))
        assert np.all(np.isfinite(result.completion_s[i]))
        kept_tokens = sum(
            int((r.prompt_tokens[r.sample_prompt] + r.response_tokens)[u[r.sample_prompt]].sum()) for r, u in zip(step.rounds, step.used)
        )
        assert rec.counters[(i, "training")]["tokens"] == kept_tokens  # training sees the kept groups only
        assert rec.counters[(i, "generation")]["rounds"] == len(step.rounds)
        assert sum(int(u.sum()) for u in step.used) == 8  # the batch: prompts_per_iteration groups
        # the rule-based reward scored every generated sample, in the generation window
        assert rec.counters[(i, "generation")]["cpu_reward_s"] == pytest.approx(result.generated[i].size * 1e-3 / 32)
        assert "cpu_reward_s" not in rec.counters.get((i, "inference"), {})


def test_a_learned_reward_scores_every_round_inside_the_generation_window():
    cfg = config("verl", {"algorithm": "dapo", "dynamic_sampling": {**DS_SHORTFALL, "filtered_fraction": 0.6}}, iterations=3, reward_model="qwen2.5-0.5b")
    result = simulate(cfg)
    steps = expected_rounds(cfg)
    for i, step in enumerate(steps):
        gen = window(result, i, "generation")
        passes = [a for a in result.activities if a["iteration"] == i and a["role"] == "reward"]
        assert len(passes) == len(step.rounds)  # one scoring pass per round (one FSDP group of all GPUs)
        assert all(gen["start_s"] <= a["start_s"] and a["end_s"] <= gen["end_s"] for a in passes)
    assert not [a for a in result.activities if a["phase"] == "inference" and a["role"] == "reward"]


def test_a_step_that_reaches_max_rounds_trains_on_what_it_kept():
    over = {"algorithm": "dapo", "dynamic_sampling": {"oversample": 1.0, "filtered_fraction": 0.9, "max_rounds": 2}}
    result = simulate(config("verl", over, iterations=2))
    s = result.summary
    assert s["generation_rounds"] == 2.0 and s["short_steps"] == 2
    assert s["samples_generated"] == 2 * 2 * 8 * 4
    assert 0 < s["samples_trained"] < 2 * 8 * 4


def test_dynamic_sampling_is_deterministic_and_agrees_between_analytic_and_step_modes():
    over = {"algorithm": "dapo", "dynamic_sampling": {**DS_SHORTFALL, "filtered_fraction": 0.5}}
    a = simulate(config("serverless", over, iterations=3))
    b = simulate(config("serverless", over, iterations=3))
    assert a.summary == b.summary and a.iterations == b.iterations and a.instances == b.instances
    step = simulate(validate({**config("serverless", over, iterations=3).model_dump(mode="json"), "engine": {"mode": "step"}}, "t"))
    for x, y in zip(a.completion_s, step.completion_s):
        np.testing.assert_allclose(x, y, rtol=1e-9)


@pytest.mark.parametrize("stream", [False, True])
def test_rlhfless_runs_dapo_with_or_without_streaming_inference(recorders, stream):
    """Under dynamic sampling no sample is known to train before its round is scored: RLHFless plans no
    streaming inference, and the barrier runs every sample of the batch once per role."""
    cfg = config("rlhfless", {"algorithm": "dapo", "kl": "loss"}, iterations=2)
    cfg = validate({**cfg.model_dump(mode="json"), "scheduler": {"name": "rlhfless", "params": {"stream_inference": stream}}}, "t")
    result = simulate(cfg)
    counters = recorders[-1].counters
    assert not any(k.startswith("streamed_") for c in counters.values() for k in c)
    assert result.summary["samples_trained"] == 2 * 8 * 4


# ------------------------------------------------------------------------------------------- the scheduler's view
class Spy(Verl):
    """verl that records what the mechanism tells it about the recipe."""

    name = "test-spy"
    seen: list = []

    def plan_generation(self, view, batch):
        Spy.seen.append(("view", view.inference_roles, view.trained_models, view.dynamic_sampling, batch.round))
        return super().plan_generation(view, batch)

    def plan_inference(self, view, work):
        Spy.seen.append(("inference", work.roles))
        return super().plan_inference(view, work)

    def plan_training(self, view, work):
        Spy.seen.append(("training", work.models))
        return super().plan_training(view, work)


class PrewarmsReference(RLHFless):
    """RLHFless that also pre-warms a reference model whatever the recipe."""

    name = "test-prewarm-reference"

    def plan_training(self, view, work):
        plan = super().plan_training(view, work)
        return dataclasses.replace(plan, prewarm=plan.prewarm + (Prewarm("reference", plan.groups["actor"][:1]),))


@pytest.fixture
def test_schedulers(monkeypatch):
    for cls in (Spy, PrewarmsReference):
        monkeypatch.setitem(sched_base._REGISTRY, cls.name, cls)
    Spy.seen = []


@pytest.mark.parametrize("algorithm", list(EXPECTED))
def test_the_view_and_the_work_carry_the_recipes_roles(test_schedulers, algorithm):
    roles, models = EXPECTED[algorithm]
    cfg = validate({**config("verl", {"algorithm": algorithm}).model_dump(mode="json"), "scheduler": {"name": "test-spy"}}, "t")
    simulate(cfg)
    views = [s for s in Spy.seen if s[0] == "view"]
    assert views and all(v[1:4] == (roles, models, algorithm == "dapo") for v in views)
    assert [s for s in Spy.seen if s[0] == "inference"] == [("inference", roles)] * 2
    assert [s for s in Spy.seen if s[0] == "training"] == [("training", models)] * 2


def test_a_learned_reward_is_planned_per_round_under_dynamic_sampling(test_schedulers):
    over = {"algorithm": "dapo", "dynamic_sampling": {**DS_SHORTFALL, "filtered_fraction": 0.6}}
    cfg = validate({**config("verl", over, reward_model="qwen2.5-0.5b").model_dump(mode="json"), "scheduler": {"name": "test-spy"}}, "t")
    simulate(cfg)
    rounds = [s[4] for s in Spy.seen if s[0] == "view"]
    scoring = [s for s in Spy.seen if s == ("inference", ("reward",))]
    assert len(scoring) == len(rounds) and max(rounds) >= 1  # round numbers 0, 1, ... per step
    assert ("inference", ("actor_logprob",)) in Spy.seen  # the batch's inference has no reward left to run


def test_a_pre_warm_of_a_role_the_recipe_lacks_is_refused_with_the_role_named(test_schedulers):
    cfg = validate({**config("rlhfless", {"algorithm": "dapo"}).model_dump(mode="json"), "scheduler": {"name": "test-prewarm-reference"}}, "t")
    with pytest.raises(ValueError, match="pre-warm of role 'reference'.*dapo"):
        simulate(cfg)
