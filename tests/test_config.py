"""Tests for sim/config.py: the experiment file contract (design.md section 6) and its error messages.

Users meet this module through its errors, so most tests check that a bad file is refused with one
message that names the file, the dotted field path and what was expected (with a did-you-mean where a
name is misspelt), and that good files and `--set` overrides give the values written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_config,
    format_validation_error,
    load_config,
    read_yaml_file,
    validate,
)

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"

BASE: dict[str, Any] = {
    "name": "t",
    "seed": 0,
    "iterations": 2,
    "model": "qwen2.5-0.5b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 16, "samples_per_prompt": 4},
    "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "L40S"},
    "platform": {"kind": "serverful"},
    "scheduler": {"name": "verl"},
}


def raw(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes; a value of `...` deletes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def write(tmp_path: Path, data: Any, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(tmp_path: Path, data: Any, overrides: list[str] | None = None) -> tuple[str, Path]:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value), path


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


# ----------------------------------------------------------------------------- --set overrides


def test_overrides_create_nested_mappings_and_leave_input_alone() -> None:
    base = {"cluster": {"nodes": 1}}
    out = apply_overrides(base, ["platform.billing.granularity_s=60", "cluster.gpu=L40S"])
    assert out == {"cluster": {"nodes": 1, "gpu": "L40S"}, "platform": {"billing": {"granularity_s": 60}}}
    assert base == {"cluster": {"nodes": 1}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4", 4),
        ("1.5", 1.5),
        ("1.0e+9", 1.0e9),
        ("true", True),
        ("null", None),
        ("", None),
        ("[verl, x]", ["verl", "x"]),
        ("{tp: 2}", {"tp": 2}),
        ("qwen2.5-7b", "qwen2.5-7b"),
        ("'4'", "4"),
        ("a=b", "a=b"),  # only the first '=' splits key from value
    ],
)
def test_override_values_are_typed_as_yaml(text: str, expected: Any) -> None:
    out = apply_overrides({}, [f"key={text}"])
    assert out["key"] == expected
    assert type(out["key"]) is type(expected)


def test_later_override_wins() -> None:
    assert apply_overrides({}, ["seed=1", "seed=2"]) == {"seed": 2}


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match=r"--set 'cluster\.nodes': expected dotted\.key=value"):
        apply_overrides({}, ["cluster.nodes"])


@pytest.mark.parametrize("item", ["a..b=1", ".a=1", "=1"])
def test_override_with_empty_key_part(item: str) -> None:
    with pytest.raises(ConfigError, match="empty part"):
        apply_overrides({}, [item])


@pytest.mark.parametrize(
    "data, item, parent",
    [
        ({"cluster": {"nodes": 1}}, "cluster.nodes.x=1", "cluster.nodes"),
        ({"name": "x"}, "name.a.b=1", "name"),
        ({"compare": ["verl"]}, "compare.0=x", "compare"),
    ],
)
def test_override_into_a_non_mapping(data: dict[str, Any], item: str, parent: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(data, [item])
    assert f"{parent} is not a mapping" in str(info.value)
    assert item in str(info.value)


def test_override_value_that_is_not_yaml() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        apply_overrides({}, ["compare=[verl,"])


def test_load_config_applies_overrides_before_validation(tmp_path: Path) -> None:
    path = write(tmp_path, raw())
    cfg = load_config(path, ["cluster.nodes=4", "workload.algorithm=ppo", "workload.samples_per_prompt=null"])
    assert cfg.cluster.nodes == 4 and isinstance(cfg.cluster.nodes, int)
    assert cfg.workload.group_size == 1
    msg, _ = error_of(tmp_path, raw(), ["cluster.nodes=four"])
    assert "cluster.nodes" in msg and "'four'" in msg
    msg, _ = error_of(tmp_path, raw(), ["workload.sample_per_prompt=2"])
    assert "did you mean 'samples_per_prompt'?" in msg


# ------------------------------------------------------------------------------- reading files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: no such file"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "text, line, column",
    [
        ("name: a\nseed: 0\niterations: 3\n  bad: 1\n", 4, 6),
        ("name: a\nseed: [1, 2\niterations: 3\n", 3, 11),
        ("name: a\n\tseed: 0\n", 2, 1),
    ],
)
def test_malformed_yaml_gives_line_and_column(tmp_path: Path, text: str, line: int, column: int) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: malformed YAML at line {line}, column {column}:")
    assert "Traceback" not in msg


@pytest.mark.parametrize("text, kind", [("- a\n- b\n", "list"), ("", "NoneType"), ("just a string\n", "str")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_yaml_file(path)
    assert str(info.value) == f"{path}: expected a mapping of experiment keys at the top level, got {kind}"


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError, match="not a text file|malformed YAML"):
        load_config(path)


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "data",
    [
        yaml.safe_load(QUICKSTART.read_text()),
        raw(
            workload__algorithm="ppo",
            workload__samples_per_prompt=...,
            workload__dataset={"num_prompts": 10, "response_tokens": {"median": 100}},
            critic_model="qwen2.5-1.5b",
            platform={"kind": "serverless", "billing": {"granularity_s": 60, "minimum_s": 120}, "price_usd_per_gpu_hour": 2.5},
            scheduler={"name": "verl", "params": {"tp": 2}},
            early_exit={"profile": "traces/exit_profiles/x.json", "policy": "margin", "threshold": 0.8},
            compare=["verl"],
            sweep={"cluster.nodes": [1, 2]},
        ),
    ],
    ids=["quickstart", "everything-set"],
)
def test_dump_config_round_trips(tmp_path: Path, data: dict[str, Any]) -> None:
    cfg = load_config(write(tmp_path, data))
    text = dump_config(cfg)
    again = load_config(write(tmp_path, yaml.safe_load(text), name="dumped.yaml"))
    assert again == cfg
    assert dump_config(again) == text  # stable bytes, so results are reproducible


def test_dump_config_writes_every_field_resolved() -> None:
    dumped = yaml.safe_load(dump_config(load_config(QUICKSTART)))
    assert list(dumped) == list(ExperimentConfig.model_fields)
    assert dumped["platform"]["billing"] == {"granularity_s": 1.0, "minimum_s": 0.0, "bill_cold_start": True}


# --------------------------------------------------------------------------- error formatting


def test_format_validation_error_for_another_model_prefixes_paths() -> None:
    """Scheduler Params are validated with the same formatter; paths get the `scheduler.params.` prefix."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tp: int = Field(1, ge=1)

    with pytest.raises(ValidationError) as info:
        Params.model_validate({"t": 1, "tp": 0})
    msg = format_validation_error(info.value, "f.yaml", root=Params, prefix="scheduler.params.")
    assert "f.yaml: scheduler.params.t: unknown key 't' in scheduler.params (did you mean 'tp'?); expected one of: tp" in msg
    assert "f.yaml: scheduler.params.tp: Input should be greater than or equal to 1 (got 0)" in msg
    # without `root` the formatter must not list the experiment's top-level keys as if they applied
    bare = format_validation_error(info.value, "f.yaml")
    assert "f.yaml: t: unknown key 't'" in bare
    assert "iterations" not in bare


def test_validate_accepts_a_mapping_directly() -> None:
    cfg = validate(raw(), "inline")
    assert isinstance(cfg, ExperimentConfig) and cfg.model == "qwen2.5-0.5b"
    with pytest.raises(ConfigError, match=r"^inline: iterations:"):
        validate(raw(iterations=-3), "inline")


def test_an_experiment_file_that_repeats_a_key_is_refused(tmp_path: Path) -> None:
    """PyYAML would keep the last value: the user's first setting would be lost without a word."""
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(raw(), sort_keys=False) + "iterations: 7\n")
    first = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("iterations:"))
    last = len(path.read_text().splitlines())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: malformed YAML at line {last}, column 1:")
    assert f"key 'iterations' repeats the key at line {first}, column 1" in msg


def test_a_set_value_that_repeats_a_key_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(raw(), ["workload={dataset: gsm8k, prompts_per_iteration: 8, dataset: gpqa}"])
    msg = str(info.value)
    assert msg.startswith("--set 'workload={dataset: gsm8k")
    assert "not valid YAML at line 1, column 44" in msg and "key 'dataset' repeats the key at line 1, column 2" in msg


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
