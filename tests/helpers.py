"""Shared test helpers: experiment configs built from a base mapping plus `a__b=value` overrides."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sim.config import ExperimentConfig, validate


def experiment(base: dict[str, Any], **over: Any) -> ExperimentConfig:
    """Validate `base` with overrides; a double underscore in a key walks into sections (cluster__nodes=2)."""
    raw = copy.deepcopy(base)
    for key, value in over.items():
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return validate(raw, "test")


ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m sim.run ARGS` from the repository root, as CI runs it."""
    env = {**os.environ, "CI": "true"}
    return subprocess.run(
        [sys.executable, "-m", "sim.run", *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
