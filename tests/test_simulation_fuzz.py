"""Random configurations across every scheduler and recipe, with crashes, small KV caches, early exit and both
engine modes: a run either refuses its input (bad-input error) or finishes with every sample generated once,
at full length. Internal errors are bugs.

Two generators: `runnable` draws configurations a user could run (a model only on GPUs it fits), so the
checks on finished runs get exercised: at least 90% of them must run, and the test reports the count.
`configs` draws every combination, infeasible ones included, to explore refusals.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import ConfigError, validate
from sim.errors import BadInput
from sim.simulation import simulate

ROOT = Path(__file__).resolve().parent.parent
PROFILE = str(ROOT / "traces" / "exit_profiles" / "smollm2-135m-instruct.json")

configs = st.fixed_dictionaries(
    {
        "scheduler": st.sampled_from(["verl", "serverless", "rlhfless", "rlhfuse", "oracle"]),
        "seed": st.integers(0, 50),
        "iterations": st.integers(1, 2),
        "model": st.sampled_from(["qwen2.5-0.5b", "qwen2.5-3b", "mixtral-8x7b"]),
        "reward": st.sampled_from([None, "qwen2.5-0.5b"]),
        "dataset": st.sampled_from(["gsm8k", "livecodebench"]),
        "algorithm": st.sampled_from(["grpo", "ppo", "dapo", "rloo", "reinforce_pp"]),
        "kl": st.sampled_from([None, "none", "reward"]),
        "old_logprob": st.sampled_from(["auto", True, False]),
        "dynamic": st.sampled_from([None, {"filtered_fraction": 0.5, "oversample": 1.0, "refill": "shortfall", "max_rounds": 4},
                                    {"filtered_fraction": 0.8, "max_rounds": 2}]),  # fmt: skip
        "prompts": st.sampled_from([1, 4, 16]),
        "group": st.sampled_from([1, 4]),
        "max_response": st.sampled_from([128, 1024, 4096]),
        "nodes": st.integers(1, 2),
        "gpus": st.sampled_from([1, 2, 4]),
        "gpu": st.sampled_from(["L40S", "H100-SXM"]),
        "preset": st.sampled_from(["self-hosted", "runpod"]),
        "sleep": st.booleans(),
        "mtbf": st.sampled_from([None, 20.0, 200.0]),
        "memory": st.sampled_from([None, 0.3]),
        "max_num_seqs": st.sampled_from([2, 64]),
        "mode": st.sampled_from(["analytic", "step"]),
        "early_exit": st.booleans(),
        "tau": st.sampled_from([0.2, 0.7]),
        "stream": st.booleans(),
    }
)


def dynamic_sampling(p: dict) -> dict:
    """On with the drawn settings, else the recipe's default (dapo: on); off for groups of one (nothing to filter)."""
    section = dict(p["dynamic"] or {})
    if p["group"] < 2:
        section["enabled"] = False
    elif p["dynamic"]:
        section["enabled"] = True
    return section


def raw_config(p: dict) -> dict:
    raw = {
        "name": "fuzz", "seed": p["seed"], "iterations": p["iterations"], "model": p["model"], "reward_model": p["reward"],
        "workload": {"dataset": p["dataset"], "algorithm": p["algorithm"], "prompts_per_iteration": p["prompts"],
                     "samples_per_prompt": p["group"], "max_response_tokens": p["max_response"], "kl": p["kl"],
                     "old_logprob": p["old_logprob"], "dynamic_sampling": dynamic_sampling(p)},
        "cluster": {"nodes": p["nodes"], "gpus_per_node": p["gpus"], "gpu": p["gpu"]},
        "platform": {"preset": p["preset"], "sleep_idle": p["sleep"], "failures": {"mtbf_s": p["mtbf"]}},
        "engine": {"gpu_memory_utilization": p["memory"], "max_num_seqs": p["max_num_seqs"], "mode": p["mode"]},
        "training": {"offload": True},
        "scheduler": {"name": p["scheduler"], "params": {"tau": p["tau"], "stream_inference": p["stream"]} if p["scheduler"] in ("rlhfless", "oracle") else {}},
    }  # fmt: skip
    if p["early_exit"]:
        raw["early_exit"] = {"profile": PROFILE, "policy": "stable", "exit_every": 5, "check": "classifier"}
    return raw


def make_runnable(p: dict) -> dict:
    """The drawn configuration with a model it can run: Mixtral-8x7B (93 GB of bf16 weights) only on 2 x 4
    H100s at the default memory share; on fewer GPUs it does not fit, which `configs` explores."""
    if p["model"] == "mixtral-8x7b":
        return dict(p, gpu="H100-SXM", nodes=2, gpus=4, memory=None)
    return p


runnable = configs.map(make_runnable)
MIN_RAN_FRACTION = 0.9


def check_run(p: dict) -> str:
    """Run one drawn configuration: 'ran' (and checked), 'refused' (config) or 'infeasible' (bad input at run time)."""
    try:
        cfg = validate(raw_config(p), "fuzz")
    except ConfigError:
        return "refused"
    try:
        result = simulate(cfg)
    except BadInput:
        return "infeasible"  # e.g. a model that does not fit the GPUs given: refused with exit 2 by the CLI
    baseline = dict(p, scheduler="verl", mtbf=None, mode="analytic", early_exit=False)
    try:
        reference = simulate(validate(raw_config(baseline), "fuzz"))
    except BadInput:
        reference = None
    for i, (gen, fin) in enumerate(zip(result.generated, result.completion_s)):
        assert np.all(gen > 0) and np.all(np.isfinite(fin))
        if reference is not None:  # the workload does not depend on the scheduler, crashes or the engine mode
            np.testing.assert_array_equal(gen, reference.generated[i])
    assert result.summary["billed_gpu_s"] >= result.summary["busy_gpu_s"] - 1e-6
    return "ran"


def report(outcomes: Counter[str], record_property: pytest.RecordProperty) -> str:
    total = sum(outcomes.values())
    line = f"{outcomes['ran']} of {total} generated configs ran ({outcomes['ran'] / max(total, 1):.0%}); refused: {outcomes['refused']}, infeasible: {outcomes['infeasible']}"
    record_property("fuzz_outcomes", dict(outcomes))
    print(line)
    return line


def test_random_runnable_configs_finish_every_sample(record_property: pytest.RecordProperty) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(p=runnable)
    def run(p: dict) -> None:
        outcomes[check_run(p)] += 1

    run()
    line = report(outcomes, record_property)
    assert outcomes["ran"] >= MIN_RAN_FRACTION * sum(outcomes.values()), line


def test_random_configs_finish_every_sample_or_refuse_the_input(record_property: pytest.RecordProperty) -> None:
    """Every combination, infeasible ones included: each either runs (checked as above) or is refused as bad input."""
    outcomes: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(p=configs)
    def run(p: dict) -> None:
        outcomes[check_run(p)] += 1

    run()
    report(outcomes, record_property)
    assert outcomes["infeasible"] + outcomes["refused"] > 0, "the wide generator no longer reaches any refusal"
