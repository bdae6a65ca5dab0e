"""Shared by the tests of test_sweep_driver.py, test_sweep_plan.py: the base experiments and small helpers they build on."""

from __future__ import annotations

import copy
import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from sim.config import validate
from sim.sweep import expand

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$")


def quickstart(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.update(copy.deepcopy(changes))
    return raw


def plan_of(raw: dict[str, Any]):
    return expand(raw, validate(raw, "x.yaml"), "x.yaml")


def write_experiment(tmp_path: Path, name: str, **changes: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(quickstart(name=name, **changes), sort_keys=False))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CI": os.environ.get("CI", "true")}
    return subprocess.run([sys.executable, "-m", "sim.run", *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, **kwargs)
