"""Sweeps and comparisons (design.md section 8): expand an experiment into runs, run them, resume, collect.

`sweep:` is a grid over dotted config paths: the cartesian product of the value lists, in the order given
(the last key varies fastest). Each grid point runs under `scheduler.name` and then under each `compare`
scheduler; a comparison run ignores the swept `scheduler.*` keys (its params are its defaults), so it is
run once and shared by the points that differ only there. Every point is validated like the file.

A run is one task, `run_task`: simulate, then build the run report. Tasks are mapped over a backend
(in-process, a local process pool, or Ray) and the driver writes each run directory atomically as its
result arrives, so an interrupted sweep resumes: a run whose directory is complete and whose config.yaml
equals the newly resolved config is skipped. Failed runs are recorded in runs.csv, never retried within
one invocation (running the command again retries them).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.config import ConfigError, ExperimentConfig, dump_config, set_path, validate

MAX_RUN_ID_CHARS = 120
FORBIDDEN_SWEEP_KEYS = ("name", "sweep", "compare")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


# ------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its id (folder name), resolved config, swept values, and its baselines."""

    run_id: str
    cfg: ExperimentConfig
    point: dict[str, Any] = field(default_factory=dict)  # swept key -> value, for the keys that apply to this run
    baselines: tuple[str, ...] = ()  # run ids this run is compared against (the point's compare runs)

    @property
    def config_text(self) -> str:
        return dump_config(self.cfg)


@dataclass(frozen=True)
class Plan:
    name: str
    sweep_keys: tuple[str, ...]
    runs: tuple[PlannedRun, ...]

    @property
    def is_sweep(self) -> bool:
        return bool(self.sweep_keys)


def format_value(value: Any) -> str:
    """A swept value as written in a run id: YAML-like scalars, compact JSON for lists and mappings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def slug(scheduler: str, items: Iterable[tuple[str, Any]]) -> str:
    """A readable, filesystem-safe run id: `verl__cluster.nodes=2__scheduler.params.lambda=0.5`.

    Characters outside [A-Za-z0-9._=+,-] become '-'; an id longer than MAX_RUN_ID_CHARS is cut and given a
    hash of the full text, so shortening stays deterministic and distinct points stay distinct.
    """
    full = "__".join([scheduler, *(f"{k}={format_value(v)}" for k, v in items)])
    text = _UNSAFE.sub("-", full).lstrip(".-") or "run"
    if len(text) > MAX_RUN_ID_CHARS:
        digest = hashlib.sha1(full.encode()).hexdigest()[:10]
        text = text[: MAX_RUN_ID_CHARS - 12].rstrip("._=+,-") + "__" + digest
    return text


def check_sweep(sweep: dict[str, list[Any]], file: str) -> None:
    """Refuse sweep keys that cannot be swept and value lists that are empty or repeat a value."""
    for key, values in sweep.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{file}: sweep.{key}: empty part in the dotted path {key!r}")
        if parts[0] in FORBIDDEN_SWEEP_KEYS:
            raise ConfigError(f"{file}: sweep.{key}: {parts[0]!r} cannot be swept (sweepable: any other dotted config path)")
        if not values:
            raise ConfigError(f"{file}: sweep.{key}: expected a non-empty list of values")
        shown = [format_value(v) for v in values]
        repeated = sorted({s for s in shown if shown.count(s) > 1})
        if repeated:
            raise ConfigError(f"{file}: sweep.{key}: value {repeated[0]} appears more than once")


def expand(raw: dict[str, Any], cfg: ExperimentConfig, file: str) -> Plan:
    """The runs of an experiment: each grid point (validated like the file) under each scheduler, in grid order.

    `raw` is the file's mapping after `--set` overrides and `cfg` its validated form.
    """
    check_sweep(cfg.sweep, file)
    keys = list(cfg.sweep)
    runs: list[PlannedRun] = []
    by_config: dict[str, str] = {}  # config text -> run id: a comparison run shared by several points
    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        point_cfg = cfg
        if keys:
            data = copy.deepcopy(raw)
            data.pop("sweep", None)
            label = ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
            where = f"{file}: sweep point {label}"
            for k, v in point.items():
                set_path(data, k.split("."), copy.deepcopy(v), origin=f"{where}: {k}")
            point_cfg = validate(data, where)
        names = list(dict.fromkeys([point_cfg.scheduler.name, *point_cfg.compare]))
        baselines = []
        for name in names[1:]:
            variant = point_cfg.model_copy(update={"scheduler": point_cfg.scheduler.model_copy(update={"name": name, "params": {}})})
            applies = {k: v for k, v in point.items() if not k.startswith("scheduler.")}
            run = PlannedRun(slug(name, applies.items()) if keys else name, variant, applies)
            text = run.config_text
            if text not in by_config:
                by_config[text] = run.run_id
                runs.append(run)
            baselines.append(by_config[text])
        main_id = slug(names[0], point.items()) if keys else names[0]
        # the main run comes first in its point: insert it before the point's new comparison runs
        first_new = len(runs) - sum(1 for r in runs if r.run_id in baselines and r.point == {k: v for k, v in point.items() if not k.startswith("scheduler.")} and r is not None and r.run_id in by_config.values() and _is_new(r, runs, baselines))
        runs.insert(first_new, PlannedRun(main_id, point_cfg, point, tuple(baselines)))
    return Plan(cfg.name, tuple(keys), tuple(_unique_ids(runs)))


def _is_new(run: PlannedRun, runs: list[PlannedRun], baselines: list[str]) -> bool:
    return True


def _unique_ids(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Give runs whose ids collide (distinct configs whose slugs coincide) a suffix from their config's hash."""
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.run_id] = counts.get(r.run_id, 0) + 1
    if all(n == 1 for n in counts.values()):
        return runs
    renamed = {
        r.run_id + "__" + hashlib.sha1(r.config_text.encode()).hexdigest()[:8] if counts[r.run_id] > 1 else r.run_id: r for r in runs
    }
    old_to_new = {id(r): new for new, r in renamed.items()}
    new_runs = []
    for r in runs:
        base_map = {b.run_id: old_to_new[id(b)] for b in runs}
        new_runs.append(
            PlannedRun(old_to_new[id(r)], r.cfg, r.point, tuple(base_map.get(b, b) for b in r.baselines))
        )
    return new_runs
