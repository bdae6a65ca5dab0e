"""Tests for sim/config/models.py: the experiment file contract (design.md section 6), as users meet it through validation.

Most tests check that a bad file is refused with one message that names the file, the dotted field path and
what was expected (with a did-you-mean where a name is misspelt), and that good files give the values written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import ConfigError, dump_config, load_config, validate

from config_helpers import QUICKSTART, raw, write, error_of


# ------------------------------------------------------------------------------------- good files


def test_quickstart_loads_with_the_values_written() -> None:
    cfg = load_config(QUICKSTART)
    written = yaml.safe_load(QUICKSTART.read_text())
    assert cfg.name == written["name"]
    assert cfg.model == written["model"]
    assert cfg.iterations == written["iterations"]
    assert cfg.workload.prompts_per_iteration == written["workload"]["prompts_per_iteration"]
    assert cfg.workload.group_size == written["workload"]["samples_per_prompt"]
    assert cfg.cluster.gpu == written["cluster"]["gpu"]
    assert cfg.scheduler.name == written["scheduler"]["name"]


def test_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, raw(seed=..., iterations=...)))
    assert cfg.seed == 0
    assert cfg.iterations == 3
    assert cfg.platform.billing.granularity_s == 1.0
    assert cfg.platform.billing.minimum_s == 0.0
    assert cfg.platform.keep_alive_s == 60.0
    assert cfg.perf.model == "roofline"
    assert cfg.early_exit is None and cfg.compare == [] and cfg.sweep == {}
    assert cfg.critic == cfg.model  # critic_model defaults to model


@pytest.mark.parametrize(
    "algorithm, samples, expected",
    [("ppo", None, 1), ("grpo", None, 8), ("ppo", 4, 4), ("grpo", 2, 2), ("dapo", None, 16), ("rloo", None, 5), ("reinforce_pp", None, 8)],
)
def test_group_size_defaults_by_algorithm(tmp_path: Path, algorithm: str, samples: int | None, expected: int) -> None:
    data = raw(workload__algorithm=algorithm, workload__samples_per_prompt=samples if samples else ...)
    cfg = load_config(write(tmp_path, data))
    assert cfg.workload.samples_per_prompt == expected  # the recipe's default, resolved into the config
    assert cfg.workload.group_size == expected


def test_trace_instead_of_dataset_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, raw(workload__dataset=..., workload__trace="traces/x.csv")))
    assert cfg.workload.trace == "traces/x.csv" and cfg.workload.dataset is None


def test_inline_model_and_dataset_mappings_are_accepted(tmp_path: Path) -> None:
    # catalog checks apply to names only; a mapping is checked when the run builds it
    cfg = load_config(write(tmp_path, raw(model={"params": 1.0e9}, workload__dataset={"num_prompts": 10})))
    assert cfg.model == {"params": 1.0e9}
    assert cfg.workload.dataset == {"num_prompts": 10}


def test_config_is_frozen() -> None:
    cfg = load_config(QUICKSTART)
    with pytest.raises(Exception):
        cfg.iterations = 9  # type: ignore[misc]


# ---------------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(iteration=5))
    assert msg.startswith(f"{path}: iteration: unknown key 'iteration'")
    assert "did you mean 'iterations'?" in msg
    assert "expected one of: name, seed, iterations, model" in msg


def test_unknown_nested_key_names_path_suggests_and_lists_allowed(tmp_path: Path) -> None:
    data = raw(workload__sample_per_prompt=8, workload__samples_per_prompt=...)
    msg, path = error_of(tmp_path, data)
    assert str(path) in msg
    assert "workload.sample_per_prompt" in msg
    assert "unknown key 'sample_per_prompt'" in msg
    assert "did you mean 'samples_per_prompt'?" in msg
    allowed = msg.split("expected one of:")[1]
    for key in ("dataset", "trace", "algorithm", "prompts_per_iteration", "samples_per_prompt", "max_response_tokens"):
        assert key in allowed
    assert "iterations" not in allowed  # the allowed keys are the workload's, not the top level's


def test_unknown_key_two_levels_down(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(platform__billing={"granularity": 60}))
    assert "platform.billing.granularity: unknown key 'granularity' in platform.billing" in msg
    assert "did you mean 'granularity_s'?" in msg
    assert "expected one of: granularity_s, minimum_s, bill_cold_start" in msg


def test_unknown_key_without_close_match_has_no_suggestion(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(cluster__zzzzzz=1))
    assert "cluster.zzzzzz: unknown key 'zzzzzz'" in msg
    assert "did you mean" not in msg


# ------------------------------------------------------------------------- types, ranges, required


def test_wrong_type(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(iterations="abc"))
    assert msg.startswith(f"{path}: iterations:")
    assert "integer" in msg and "'abc'" in msg


@pytest.mark.parametrize(
    "dotted, value",
    [
        ("workload.prompts_per_iteration", -1),
        ("workload.samples_per_prompt", 0),
        ("cluster.nodes", 0),
        ("iterations", 0),
        ("workload.max_response_tokens", -5),
    ],
)
def test_counts_must_be_positive(tmp_path: Path, dotted: str, value: int) -> None:
    msg, path = error_of(tmp_path, raw(**{dotted.replace(".", "__"): value}))
    assert msg.startswith(f"{path}: {dotted}:")
    assert "greater than or equal to 1" in msg
    assert f"(got {value})" in msg


def test_negative_seconds_refused(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(platform__billing={"minimum_s": -1}))
    assert "platform.billing.minimum_s" in msg and "greater than or equal to 0" in msg


def test_literal_choices_listed(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(workload__algorithm="dpo"))
    assert "workload.algorithm" in msg and "'grpo'" in msg and "'ppo'" in msg and "'dpo'" in msg


@pytest.mark.parametrize("missing", ["name", "model", "cluster", "scheduler"])
def test_required_fields(tmp_path: Path, missing: str) -> None:
    msg, path = error_of(tmp_path, raw(**{missing: ...}))
    assert f"{path}: {missing}: required field is missing" in msg


def test_required_nested_field(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(scheduler={"params": {}}))
    assert "scheduler.name: required field is missing" in msg


def test_every_error_is_reported_once_per_line(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(iterations="x", cluster__nodes=0))
    lines = msg.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert any("iterations" in line for line in lines) and any("cluster.nodes" in line for line in lines)


def test_messages_carry_no_pydantic_boilerplate(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(iterations="abc", cluster__foo=1))
    assert "errors.pydantic.dev" not in msg
    assert "validation error" not in msg.lower()
    assert "Value error," not in msg


def test_name_must_be_a_folder_name(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(name="a/b"))
    assert "name:" in msg and "folder name" in msg


# ------------------------------------------------------------------------------ catalog names


def test_unknown_model_with_did_you_mean(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(model="qwen2.5-7"))
    assert msg.startswith(f"{path}: model:")
    assert "unknown model 'qwen2.5-7'" in msg
    assert "did you mean 'qwen2.5-7b'?" in msg
    assert "models.yaml" in msg


def test_unknown_critic_and_reward_model_name_their_field(tmp_path: Path) -> None:
    msg, _ = error_of(tmp_path, raw(critic_model="nope-model", reward_model="qwen2.5-0.6b"))
    assert "critic_model: unknown model 'nope-model'" in msg
    assert "reward_model: unknown model 'qwen2.5-0.6b'" in msg


def test_unknown_gpu(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(cluster__gpu="L40"))
    assert msg.startswith(f"{path}: cluster.gpu:")
    assert "unknown name 'L40'" in msg and "did you mean 'L40S'?" in msg and "gpus.yaml" in msg


def test_unknown_dataset(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(workload__dataset="gsm9k"))
    assert msg.startswith(f"{path}: workload.dataset:")
    assert "unknown name 'gsm9k'" in msg and "did you mean 'gsm8k'?" in msg and "datasets.yaml" in msg


def test_unknown_platform_preset(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(platform__preset="no-such-preset"))
    assert msg.startswith(f"{path}: platform.preset:")
    assert "'no-such-preset'" in msg and "platforms.yaml" in msg


@pytest.mark.parametrize(
    "workload_change",
    [
        {"workload__trace": "traces/x.csv"},  # both
        {"workload__dataset": ...},  # neither
    ],
    ids=["both", "neither"],
)
def test_exactly_one_of_dataset_and_trace(tmp_path: Path, workload_change: dict[str, Any]) -> None:
    msg, path = error_of(tmp_path, raw(**workload_change))
    assert msg.startswith(f"{path}: workload:")
    assert "exactly one of `dataset`" in msg and "`trace`" in msg


@pytest.mark.parametrize("seed, expected", [(-1, "greater than or equal to 0"), (1.5, "valid integer"), ("3", "valid integer"), (True, "valid integer")])
def test_seed_must_be_a_non_negative_integer(seed: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(raw(seed=seed), "x.yaml")
    assert str(info.value).startswith("x.yaml: seed: ") and expected in str(info.value)
    assert validate(raw(seed=2**70), "x.yaml").seed == 2**70  # numpy seeds from any non-negative integer


# ------------------------------------------------------------------------------- recipes


def test_recipe_defaults_fill_only_what_the_file_leaves_out(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, raw(workload__algorithm="dapo", workload__samples_per_prompt=...)))
    w = cfg.workload
    assert (w.samples_per_prompt, w.mini_batches, w.kl, w.old_logprob, w.dynamic_sampling.enabled) == (16, 16, "none", "auto", True)
    cfg = load_config(write(tmp_path, raw(workload__algorithm="dapo", workload__kl="loss", workload__dynamic_sampling={"enabled": False})))
    assert cfg.workload.kl == "loss" and cfg.workload.dynamic_sampling.enabled is False
    # the resolved values are what config.yaml shows
    dumped = yaml.safe_load(dump_config(cfg))["workload"]
    assert dumped["kl"] == "loss" and dumped["mini_batches"] == 16 and dumped["dynamic_sampling"]["enabled"] is False


def test_dynamic_sampling_on_a_trace_is_refused_naming_the_field(tmp_path: Path) -> None:
    msg, path = error_of(tmp_path, raw(workload__dataset=..., workload__trace="traces/x.csv", workload__algorithm="dapo"))
    assert f"{path}: workload.dynamic_sampling.enabled: dynamic sampling needs a dataset" in msg
    assert "enabled: false" in msg  # says how to run dapo on the trace
    cfg = load_config(write(tmp_path, raw(workload__dataset=..., workload__trace="traces/x.csv", workload__algorithm="dapo",
                                          workload__dynamic_sampling={"enabled": False})))  # fmt: skip
    assert cfg.workload.kl == "none"
