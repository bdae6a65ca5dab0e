"""A sweep's plan (design.md section 8): the grid over dotted config paths expanded into runs with ids.

The cartesian product of the value lists, in the order given (the last key varies fastest). Each grid
point runs under `scheduler.name` and then under each `compare` scheduler; a comparison run ignores the
swept `scheduler.*` keys (its params are its defaults), so it is run once and shared by the points that
differ only there. Every point is validated like the file. Running the plan lives in driver.py.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sim.config.loading import dump_config, set_path, validate
from sim.config.models import ExperimentConfig
from sim.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from sim.catalog import Catalog


MAX_RUN_ID_CHARS = 120
FORBIDDEN_SWEEP_KEYS = ("name", "sweep", "compare", "catalogs")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


# ------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its id (folder name), resolved config, swept values, and its baselines."""

    run_id: str
    cfg: ExperimentConfig
    config_text: str  # dump_config(cfg): what config.yaml holds (compared on resume)
    point: dict[str, Any] = field(default_factory=dict)  # swept key -> value, for the keys that apply to this run
    baselines: tuple[str, ...] = ()  # run ids this run is compared against (the point's compare runs)


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
    full = "__".join([scheduler, *(f"{k}={_slug_value(v)}" for k, v in items)])
    text = _UNSAFE.sub("-", full).lstrip(".-") or "run"
    if len(text) > MAX_RUN_ID_CHARS:
        digest = hashlib.sha1(full.encode()).hexdigest()[:10]
        text = text[: MAX_RUN_ID_CHARS - 12].rstrip("._=+,-") + "__" + digest
    return text


def _slug_value(value: Any) -> str:
    """A swept inline mapping with a `name` (an inline GPU or model) is written by its name in run ids."""
    if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
        return value["name"]
    return format_value(value)


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


def expand(raw: dict[str, Any], cfg: ExperimentConfig, file: str, catalog: "Catalog | None" = None) -> Plan:
    """The runs of an experiment: each grid point (validated like the file) under each scheduler, in grid order.

    `raw` is the file's mapping after `--set` overrides and `cfg` its validated form; `catalog` is the one
    the file was validated with (packaged + user catalogs), so a swept name from a user catalog resolves.
    """
    check_sweep(cfg.sweep, file)
    if catalog is None and cfg.sweep:
        from sim.config.loading import resolve_catalog

        catalog = resolve_catalog(raw, file)  # the file's `catalogs:`, relative to the file
    keys = list(cfg.sweep)
    runs: list[PlannedRun] = []
    by_config: dict[str, str] = {}  # config text -> run id: identical runs (a shared comparison run) run once
    used: set[str] = set()

    def claim(run_id: str, text: str) -> str:
        """Distinct configs whose slugs coincide: the later one gets a suffix from its config's hash."""
        if run_id in used:
            run_id = f"{run_id}__{hashlib.sha1(text.encode()).hexdigest()[:8]}"
        used.add(run_id)
        by_config[text] = run_id
        return run_id

    for values in itertools.product(*(cfg.sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        point_cfg = cfg
        if keys:
            data = copy.deepcopy(raw)
            data.pop("sweep", None)
            where = f"{file}: sweep point " + ", ".join(f"{k}={format_value(v)}" for k, v in point.items())
            for k, v in point.items():
                set_path(data, k.split("."), copy.deepcopy(v), origin=f"{where}: {k}")
            point_cfg = validate(data, where, catalog)
        names = list(dict.fromkeys([point_cfg.scheduler.name, *point_cfg.compare]))
        applies = {k: v for k, v in point.items() if not k.startswith("scheduler.")}
        main_text = dump_config(point_cfg)
        main_id = claim(slug(names[0], point.items()) if keys else names[0], main_text)
        new: list[PlannedRun] = []
        baselines: list[str] = []
        for name in names[1:]:
            variant = point_cfg.model_copy(update={"scheduler": point_cfg.scheduler.model_copy(update={"name": name, "params": {}})})
            text = dump_config(variant)
            if text not in by_config:
                new.append(PlannedRun(claim(slug(name, applies.items()) if keys else name, text), variant, text, applies))
            baselines.append(by_config[text])
        runs.append(PlannedRun(main_id, point_cfg, main_text, point, tuple(baselines)))
        runs.extend(new)
    return Plan(cfg.name, tuple(keys), tuple(runs))
