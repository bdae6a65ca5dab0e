"""Tests for sim/config/loading.py: reading experiment files, `--set` overrides, validating a mapping, and the resolved config written back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_config,
    load_config,
    read_yaml_file,
    validate,
)

from config_helpers import QUICKSTART, raw, write, error_of


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
