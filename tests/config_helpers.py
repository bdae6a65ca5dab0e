"""Shared by the tests of test_config_loading.py, test_config_messages.py, test_config_models.py: the base experiments and small helpers they build on."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.config import ConfigError, load_config

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
