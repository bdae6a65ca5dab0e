"""Tests for sim/config/messages.py: pydantic errors worded as `file: dotted.path: what was expected`."""

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
